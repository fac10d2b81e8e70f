//! Parsers on every recorded body, and on broken ones: each broken input
//! gives a typed error or a clean partial parse, never a panic.

use crate::common;

use gept_core::recordings::{self, bucket_snapshots, latest_snapshots, read_all};
use gept_core::wire::{self, WireError};

#[test]
fn every_recorded_latest_snapshot_parses() {
    let dir = common::recordings();
    let mut snapshots = 0;
    let mut rows = 0;
    let mut one_sided = 0;
    for snap in latest_snapshots(&dir.join(recordings::LATEST_FILE)).unwrap() {
        let snap = snap.unwrap();
        let parsed = wire::parse_latest(snap.body.as_bytes(), snap.timestamp).unwrap();
        // Every item of the raw body is a row, or skipped as empty.
        let raw: serde_json::Value = serde_json::from_str(&snap.body).unwrap();
        let raw_items = raw["data"]
            .as_object()
            .map_or_else(|| raw.as_object().unwrap().len(), |d| d.len());
        assert_eq!(
            parsed.rows.len() + parsed.rejections.skipped_empty as usize,
            raw_items,
            "snapshot {}",
            snap.timestamp
        );
        assert_eq!(
            parsed.rejections.rejected(),
            0,
            "snapshot {} had rejected records",
            snap.timestamp
        );
        assert!(
            parsed.rows.windows(2).all(|w| w[0].item_id < w[1].item_id),
            "rows not sorted by id"
        );
        assert!(parsed.rows.iter().all(|r| r.timestamp == snap.timestamp));
        one_sided += parsed
            .rows
            .iter()
            .filter(|r| r.high.is_none() != r.low.is_none())
            .count();
        rows += parsed.rows.len();
        snapshots += 1;
    }
    assert!(
        snapshots > 40 && rows > snapshots * 30,
        "{snapshots} snapshots, {rows} rows"
    );
    assert!(
        one_sided > 0,
        "the recording has one-sided items; they must be kept"
    );
}

#[test]
fn every_recorded_bucket_and_the_mapping_parse() {
    let dir = common::recordings();
    for file in [recordings::HOURLY_FILE, recordings::FIVE_MINUTE_FILE] {
        let buckets = bucket_snapshots(&dir.join(file)).unwrap();
        assert!(!buckets.is_empty());
        for b in buckets {
            let p = wire::parse_bucket(b.body.as_bytes()).unwrap();
            assert_eq!(p.timestamp, b.timestamp);
            assert_eq!(p.rejections.rejected(), 0);
            // An average is null exactly when its side did not trade.
            for r in &p.rows {
                assert!(
                    r.avg_high_price.is_some() || r.high_price_volume == 0,
                    "{r:?}"
                );
                assert!(
                    r.avg_low_price.is_some() || r.low_price_volume == 0,
                    "{r:?}"
                );
            }
        }
    }
    let mapping =
        wire::parse_mapping(&read_all(&dir.join(recordings::MAPPING_FILE)).unwrap()).unwrap();
    assert_eq!(mapping.rejections.rejected(), 0);
    assert!(
        mapping.rows.iter().any(|m| m.buy_limit.is_none()),
        "items without a limit are kept"
    );
    // Counts read from the raw JSON, independently of the parser.
    let raw: Vec<serde_json::Value> =
        serde_json::from_slice(&read_all(&dir.join(recordings::MAPPING_FILE)).unwrap()).unwrap();
    assert!(!raw.is_empty());
    assert_eq!(mapping.rows.len(), raw.len(), "every mapping entry is kept");
    let lacking = |key: &str| raw.iter().filter(|m| m.get(key).is_none()).count();
    assert_eq!(
        mapping
            .rows
            .iter()
            .filter(|m| m.buy_limit.is_none())
            .count(),
        lacking("limit")
    );
    assert_eq!(
        mapping.rows.iter().filter(|m| m.highalch.is_none()).count(),
        lacking("highalch")
    );
}

#[test]
fn recorded_timeseries_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/osrs/eliastalcott-osrs-flipping/timeseries_5m_id4151_2021-05.json");
    let Ok(body) = std::fs::read(&path) else {
        common::skip("recorded_timeseries_parses", &path.display().to_string());
        return;
    };
    let p = wire::parse_timeseries(&body, 4151).unwrap();
    assert_eq!(p.rows.len() + p.rejections.skipped_empty as usize, 300);
    assert!(p
        .rows
        .windows(2)
        .all(|w| w[1].timestamp - w[0].timestamp >= 300));
    assert!(matches!(
        wire::parse_timeseries(&body, 4152),
        Err(WireError::Shape(_))
    ));
}

#[test]
fn broken_bodies_never_panic() {
    let dir = common::recordings();
    let snap = latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let body = snap.body.as_bytes();
    let bucket = &bucket_snapshots(&dir.join(recordings::HOURLY_FILE)).unwrap()[0].body;
    // Every truncation of a real body is a typed error.
    for cut in (0..body.len()).step_by(body.len() / 97 + 1) {
        assert!(
            wire::parse_latest(&body[..cut], 0).is_err(),
            "truncated at {cut} parsed"
        );
    }
    for cut in (0..bucket.len()).step_by(bucket.len() / 97 + 1) {
        assert!(wire::parse_bucket(&bucket.as_bytes()[..cut]).is_err());
    }
    // Wrong types inside a record reject that record only.
    let text = snap
        .body
        .replacen("\"high\":", "\"high\":\"x\",\"was\":", 1);
    let p = wire::parse_latest(text.as_bytes(), 0).unwrap();
    assert_eq!(p.rejections.malformed, 1);
    assert!(!p.rows.is_empty());
    // Garbage of many shapes.
    for garbage in [
        "null",
        "42",
        "\"str\"",
        "{\"data\":null}",
        "{\"data\":[1,2]}",
        "<html>502</html>",
        "{\"data\":{\"1\":5}}",
    ] {
        let _ = wire::parse_latest(garbage.as_bytes(), 0);
        let _ = wire::parse_bucket(garbage.as_bytes());
        let _ = wire::parse_mapping(garbage.as_bytes());
        let _ = wire::parse_timeseries(garbage.as_bytes(), 1);
        let _ = wire::parse_news(garbage);
        let _ = wire::parse_player_count(garbage);
    }
    assert!(matches!(
        wire::parse_latest(b"{\"data\":null}", 0),
        Err(WireError::Shape(_))
    ));
}
