//! Wire formats of the OSRS Wiki prices API and their validation.
//!
//! One parser per endpoint, used by the live client, the replay server and the
//! recording readers alike. Parsers are exact about the API's semantics:
//! item ids are string keys; any of high/low/times may be null; an average is
//! null with volume 0 when that side did not trade; a record with both prices
//! null is skipped; prices outside `1..=2^31-1` and negative volumes are
//! rejected and counted. Unknown fields are ignored. A body that is not the
//! expected JSON shape is a typed [`WireError`], never a panic.

use crate::types::*;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// Highest price the game allows (max cash stack).
pub const MAX_PRICE: i64 = i32::MAX as i64;

/// Why a body could not be parsed at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body has the wrong shape: {0}")]
    Shape(String),
}

/// What a parse kept out of the result, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rejections {
    /// Records whose prices were both null (skipped, as the API intends).
    pub skipped_empty: u64,
    /// Records with a price outside `1..=2^31-1`.
    pub bad_price: u64,
    /// Records with a negative volume.
    pub bad_volume: u64,
    /// Records whose id is not an item id or whose fields have the wrong type.
    pub malformed: u64,
}

impl Rejections {
    /// Records rejected as invalid (skipped empty records are not invalid).
    pub fn rejected(&self) -> u64 {
        self.bad_price + self.bad_volume + self.malformed
    }
}

/// Rows parsed from one response, with what was kept out.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    pub rows: Vec<T>,
    pub rejections: Rejections,
}

#[derive(Deserialize)]
struct LatestRecord {
    #[serde(default)]
    high: Option<i64>,
    #[serde(default, rename = "highTime")]
    high_time: Option<i64>,
    #[serde(default)]
    low: Option<i64>,
    #[serde(default, rename = "lowTime")]
    low_time: Option<i64>,
}

#[derive(Deserialize)]
struct BucketRecord {
    #[serde(default, rename = "avgHighPrice")]
    avg_high_price: Option<i64>,
    #[serde(default, rename = "highPriceVolume")]
    high_price_volume: Option<i64>,
    #[serde(default, rename = "avgLowPrice")]
    avg_low_price: Option<i64>,
    #[serde(default, rename = "lowPriceVolume")]
    low_price_volume: Option<i64>,
}

/// The envelope `{ "data": {...}, "timestamp": n }` of every keyed response.
#[derive(Deserialize)]
struct Envelope<R> {
    data: HashMap<String, R>,
    #[serde(default)]
    timestamp: Option<i64>,
}

fn price_ok(p: Option<i64>) -> bool {
    p.is_none_or(|p| (1..=MAX_PRICE).contains(&p))
}

/// Parses an envelope fast and typed; when a record has a wrong type, falls
/// back to a per-record parse so one bad record does not lose the others.
fn parse_envelope<R: for<'de> Deserialize<'de>>(
    body: &[u8],
    mut keep: impl FnMut(ItemId, R, &mut Rejections),
) -> Result<(Option<i64>, Rejections), WireError> {
    let mut rej = Rejections::default();
    let mut ids = Vec::new();
    match serde_json::from_slice::<Envelope<R>>(body) {
        Ok(env) => {
            let mut records: Vec<(String, R)> = env.data.into_iter().collect();
            records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, rec) in records {
                match key.parse::<ItemId>() {
                    Ok(id) => ids.push((id, rec)),
                    Err(_) => rej.malformed += 1,
                }
            }
            ids.sort_unstable_by_key(|(id, _)| *id);
            for (id, rec) in ids {
                keep(id, rec, &mut rej);
            }
            Ok((env.timestamp, rej))
        }
        Err(first) => {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
            let obj = value
                .as_object()
                .ok_or_else(|| WireError::Shape("top level is not an object".into()))?;
            let data = obj
                .get("data")
                .and_then(Value::as_object)
                .ok_or_else(|| WireError::Shape(format!("no \"data\" object ({first})")))?;
            let timestamp =
                match obj.get("timestamp") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_i64().ok_or_else(|| {
                        WireError::Shape("\"timestamp\" is not an integer".into())
                    })?),
                };
            let mut ids = Vec::new();
            for (key, rec) in data {
                match (key.parse::<ItemId>(), R::deserialize(rec)) {
                    (Ok(id), Ok(rec)) => ids.push((id, rec)),
                    _ => rej.malformed += 1,
                }
            }
            ids.sort_unstable_by_key(|(id, _)| *id);
            for (id, rec) in ids {
                keep(id, rec, &mut rej);
            }
            Ok((timestamp, rej))
        }
    }
}

/// Parses a `/latest` body observed at `observed_at` (Unix seconds).
pub fn parse_latest(
    body: &[u8],
    observed_at: UnixSeconds,
) -> Result<Parsed<LatestPrice>, WireError> {
    let mut rows = Vec::new();
    let (_, rejections) = parse_envelope::<LatestRecord>(body, |item_id, r, rej| {
        if r.high.is_none() && r.low.is_none() {
            rej.skipped_empty += 1;
        } else if !price_ok(r.high) || !price_ok(r.low) {
            rej.bad_price += 1;
        } else {
            rows.push(LatestPrice {
                item_id,
                timestamp: observed_at,
                high: r.high,
                high_time: r.high_time,
                low: r.low,
                low_time: r.low_time,
            });
        }
    })?;
    Ok(Parsed { rows, rejections })
}

/// A parsed `/5m` or `/1h` response: the bucket start and its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedBucket {
    pub timestamp: UnixSeconds,
    pub rows: Vec<BucketPrice>,
    pub rejections: Rejections,
}

/// Parses a `/5m` or `/1h` body. The bucket start comes from its `timestamp`.
pub fn parse_bucket(body: &[u8]) -> Result<ParsedBucket, WireError> {
    let mut raw = Vec::new();
    let (timestamp, rejections) = parse_envelope::<BucketRecord>(body, |item_id, r, rej| {
        let hv = r.high_price_volume.unwrap_or(0);
        let lv = r.low_price_volume.unwrap_or(0);
        if r.avg_high_price.is_none() && r.avg_low_price.is_none() {
            rej.skipped_empty += 1;
        } else if !price_ok(r.avg_high_price) || !price_ok(r.avg_low_price) {
            rej.bad_price += 1;
        } else if hv < 0 || lv < 0 {
            rej.bad_volume += 1;
        } else {
            raw.push((item_id, r.avg_high_price, hv, r.avg_low_price, lv));
        }
    })?;
    let timestamp = timestamp.ok_or_else(|| WireError::Shape("no \"timestamp\"".into()))?;
    let rows = raw
        .into_iter()
        .map(|(item_id, ah, hv, al, lv)| BucketPrice {
            item_id,
            timestamp,
            avg_high_price: ah,
            high_price_volume: hv,
            avg_low_price: al,
            low_price_volume: lv,
        })
        .collect();
    Ok(ParsedBucket {
        timestamp,
        rows,
        rejections,
    })
}

#[derive(Deserialize)]
struct MappingRecord {
    id: Value,
    name: Option<String>,
    #[serde(default)]
    examine: Option<String>,
    #[serde(default)]
    members: Option<bool>,
    #[serde(default)]
    lowalch: Option<i64>,
    #[serde(default)]
    highalch: Option<i64>,
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    icon: Option<String>,
}

/// Parses a `/mapping` body (a JSON array of items).
pub fn parse_mapping(body: &[u8]) -> Result<Parsed<ItemMeta>, WireError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    let array = value
        .as_array()
        .ok_or_else(|| WireError::Shape("mapping is not an array".into()))?;
    let mut rejections = Rejections::default();
    let mut rows = Vec::with_capacity(array.len());
    for entry in array {
        let Ok(rec) = MappingRecord::deserialize(entry) else {
            rejections.malformed += 1;
            continue;
        };
        let id = match &rec.id {
            Value::Number(n) => n.as_u64().and_then(|n| ItemId::try_from(n).ok()),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let (Some(item_id), Some(name)) = (id, rec.name) else {
            rejections.malformed += 1;
            continue;
        };
        rows.push(ItemMeta {
            item_id,
            name,
            examine: rec.examine,
            members: rec.members.unwrap_or(false),
            lowalch: rec.lowalch,
            highalch: rec.highalch,
            value: rec.value,
            buy_limit: rec.limit,
            icon: rec.icon,
        });
    }
    rows.sort_by_key(|m| m.item_id);
    Ok(Parsed { rows, rejections })
}

#[derive(Deserialize)]
struct TimeseriesBody {
    data: Vec<Value>,
    #[serde(rename = "itemId")]
    item_id: Option<Value>,
}

#[derive(Deserialize)]
struct TimeseriesPoint {
    timestamp: i64,
    #[serde(default, rename = "avgHighPrice")]
    avg_high_price: Option<i64>,
    #[serde(default, rename = "avgLowPrice")]
    avg_low_price: Option<i64>,
    #[serde(default, rename = "highPriceVolume")]
    high_price_volume: Option<i64>,
    #[serde(default, rename = "lowPriceVolume")]
    low_price_volume: Option<i64>,
}

/// Parses a `/timeseries` body into bucket rows of `item_id`.
pub fn parse_timeseries(body: &[u8], item_id: ItemId) -> Result<Parsed<BucketPrice>, WireError> {
    let parsed: TimeseriesBody =
        serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
    if let Some(id) = &parsed.item_id {
        let id = id
            .as_u64()
            .or_else(|| id.as_str().and_then(|s| s.parse().ok()));
        if id != Some(item_id as u64) {
            return Err(WireError::Shape(format!(
                "itemId {id:?} is not the requested {item_id}"
            )));
        }
    }
    let mut rejections = Rejections::default();
    let mut rows = Vec::with_capacity(parsed.data.len());
    for point in parsed.data {
        let Ok(p) = TimeseriesPoint::deserialize(&point) else {
            rejections.malformed += 1;
            continue;
        };
        let hv = p.high_price_volume.unwrap_or(0);
        let lv = p.low_price_volume.unwrap_or(0);
        if p.avg_high_price.is_none() && p.avg_low_price.is_none() {
            rejections.skipped_empty += 1;
        } else if !price_ok(p.avg_high_price) || !price_ok(p.avg_low_price) {
            rejections.bad_price += 1;
        } else if hv < 0 || lv < 0 {
            rejections.bad_volume += 1;
        } else {
            rows.push(BucketPrice {
                item_id,
                timestamp: p.timestamp,
                avg_high_price: p.avg_high_price,
                high_price_volume: hv,
                avg_low_price: p.avg_low_price,
                low_price_volume: lv,
            });
        }
    }
    rows.sort_by_key(|r| r.timestamp);
    Ok(Parsed { rows, rejections })
}

/// Extracts the player count from the OSRS home page
/// ("There are currently 123,456 people playing!").
pub fn parse_player_count(html: &str) -> Result<i64, WireError> {
    let marker = "There are currently ";
    let start = html
        .find(marker)
        .ok_or_else(|| WireError::Shape("no player count sentence on the page".into()))?
        + marker.len();
    let digits: String = html[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits
        .parse()
        .map_err(|_| WireError::Shape("player count is not a number".into()))
}

/// Parses the OSRS news RSS feed (RSS 2.0 `<item>` elements).
pub fn parse_news(xml: &str) -> Result<Vec<NewsItem>, WireError> {
    if !xml.contains("<rss") && !xml.contains("<channel") {
        return Err(WireError::Shape("not an RSS document".into()));
    }
    let mut items = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<item>") {
        let after = &rest[start + 6..];
        let end = after
            .find("</item>")
            .ok_or_else(|| WireError::Shape("unterminated <item>".into()))?;
        let body = &after[..end];
        let title = xml_field(body, "title").unwrap_or_default();
        let link = xml_field(body, "link").unwrap_or_default();
        let guid = xml_field(body, "guid").unwrap_or_else(|| link.clone());
        if guid.is_empty() {
            return Err(WireError::Shape("news item without guid or link".into()));
        }
        let published_at = xml_field(body, "pubDate")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
            .map(|d| d.timestamp());
        items.push(NewsItem {
            guid,
            title,
            link,
            published_at,
            category: xml_field(body, "category"),
        });
        rest = &after[end + 7..];
    }
    Ok(items)
}

fn xml_field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let start = body.find(&open)?;
    let content_start = start + body[start..].find('>')? + 1;
    let close = format!("</{tag}>");
    let end = content_start + body[content_start..].find(&close)?;
    let raw = body[content_start..end].trim();
    let raw = raw
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
        .unwrap_or(raw);
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_keeps_nulls_and_skips_empty_records() {
        let body = br#"{"data":{"2":{"high":197,"highTime":10,"low":null,"lowTime":null},
            "6":{"high":null,"highTime":null,"low":null,"lowTime":null},
            "8":{"high":5,"highTime":1,"low":4,"lowTime":2,"extra":"ignored"}}}"#;
        let p = parse_latest(body, 1000).unwrap();
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].item_id, 2);
        assert_eq!(p.rows[0].low, None);
        assert_eq!(p.rows[0].timestamp, 1000);
        assert_eq!(p.rejections.skipped_empty, 1);
    }

    #[test]
    fn latest_rejects_out_of_range_prices_and_bad_records() {
        let body = br#"{"data":{"2":{"high":0,"low":1},"3":{"high":2147483648,"low":1},
            "4":{"high":"x","low":1},"abc":{"high":1,"low":1},"5":{"high":2147483647,"low":1}}}"#;
        let p = parse_latest(body, 1).unwrap();
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.rows[0].item_id, 5);
        assert_eq!(p.rejections.bad_price, 2);
        assert_eq!(p.rejections.malformed, 2);
    }

    #[test]
    fn broken_bodies_are_typed_errors() {
        assert!(matches!(
            parse_latest(b"{\"data\":{\"2\":{\"hi", 1),
            Err(WireError::Json(_))
        ));
        assert!(matches!(parse_latest(b"[]", 1), Err(WireError::Shape(_))));
        assert!(matches!(parse_latest(b"", 1), Err(WireError::Json(_))));
        assert!(matches!(
            parse_bucket(b"{\"data\":{}}"),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(
            parse_bucket(b"{\"data\":5,\"timestamp\":1}"),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(parse_mapping(b"{}"), Err(WireError::Shape(_))));
        assert!(matches!(
            parse_timeseries(b"{\"data\":3}", 1),
            Err(WireError::Json(_))
        ));
        assert!(parse_player_count("<html>nothing</html>").is_err());
        assert!(parse_news("not xml at all").is_err());
    }

    #[test]
    fn bucket_rejects_negative_volume_and_keeps_one_sided_rows() {
        let body = br#"{"data":{"2":{"avgHighPrice":196,"highPriceVolume":18,"avgLowPrice":null,"lowPriceVolume":0},
            "3":{"avgHighPrice":10,"highPriceVolume":-1,"avgLowPrice":9,"lowPriceVolume":0},
            "4":{"avgHighPrice":null,"highPriceVolume":0,"avgLowPrice":null,"lowPriceVolume":0}},"timestamp":3600}"#;
        let p = parse_bucket(body).unwrap();
        assert_eq!(p.timestamp, 3600);
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.rows[0].avg_low_price, None);
        assert_eq!(p.rejections.bad_volume, 1);
        assert_eq!(p.rejections.skipped_empty, 1);
    }

    #[test]
    fn player_count_and_news_parse() {
        assert_eq!(
            parse_player_count(
                "<p class='player-count'>There are currently 123,456 people playing!</p>"
            )
            .unwrap(),
            123_456
        );
        let rss = r#"<?xml version="1.0"?><rss><channel><item><title><![CDATA[Varlamore & more]]></title>
            <link>https://x/news/1</link><guid>g1</guid><pubDate>Wed, 21 May 2025 11:00:00 GMT</pubDate>
            <category>Game Updates</category></item></channel></rss>"#;
        let news = parse_news(rss).unwrap();
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].title, "Varlamore & more");
        assert_eq!(news[0].published_at, Some(1_747_825_200));
    }
}
