//! Closed days packed: one row per item and UTC day of `/latest` ticks,
//! `/5m` or `/1h` buckets, the rows of that day in one compressed body.
//!
//! PostgreSQL only. A PostgreSQL row costs ~28 bytes of tuple header and
//! line pointer and ~20 more in its primary-key index before any data: a
//! stored tick row took ~114 bytes there (75 of heap, 39 of index) against
//! ~45 on SQLite, and a `/5m` bucket row ~75 against ~22, so the tables that
//! grow with time were 2–3× SQLite's and PostgreSQL missed the storage aim
//! (see `BENCHMARKS.md`). Once a day is closed, the retention pass moves its
//! rows into the table's `_packed` sibling ([`packed_table`]): same
//! partitioning, one row `(item_id, day, rows, first_time, last_time, body)`
//! per item and day. Reads take both tables and merge them (a row present in
//! both, which a late write into a packed day can make until the next pass,
//! is read once), so every read gives the same rows as before the move.
//!
//! The body is a format byte then, raw ([`RAW`]) or zstd-compressed
//! ([`ZSTD`], whichever is smaller), the columns of the day's rows oldest
//! first, each value a varint: the row count; the first time (zigzag) and
//! each later time's difference to the one before; one byte of flags per row
//! (which optional fields are present); then each field as a column of
//! zigzag differences to its previous present value (prices, trade times),
//! or plain zigzag values (volumes). An item's trade time usually repeats or
//! moves by about a tick, its prices by little, so most values take a byte.

use crate::predictions::{get_varint, put_varint};
use crate::StoreError;
use gept_core::{BucketPrice, BucketStep, ItemId, LatestPrice};

/// Body format: the columns as they are.
const RAW: u8 = 1;
/// Body format: the columns, zstd-compressed.
const ZSTD: u8 = 2;
/// zstd level (zstd's default).
const LEVEL: i32 = 3;
/// Bytes a decompressed body may take per row at most (six varints of at
/// most ten bytes and a flags byte), for the decompression bound.
const MAX_ROW_BYTES: usize = 61;

/// The packed sibling of a packable table; `None` for any other table.
pub fn packed_table(table: &str) -> Option<&'static str> {
    match table {
        "prices_latest_1m" => Some("prices_latest_1m_packed"),
        "price_data_5min" => Some("price_data_5min_packed"),
        "prices_1h" => Some("prices_1h_packed"),
        _ => None,
    }
}

/// The start of the UTC day holding `t`.
pub fn day_of(t: i64) -> i64 {
    t - t.rem_euclid(86_400)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Invalid(format!("a packed day of stored rows is corrupt: {why}"))
}

/// Writes a column of optional values as differences to the previous present one.
fn put_deltas(out: &mut Vec<u8>, values: impl Iterator<Item = Option<i64>>) {
    let mut last = 0i64;
    for v in values.flatten() {
        put_varint(out, zigzag(v.wrapping_sub(last)));
        last = v;
    }
}

/// Reads a column written by [`put_deltas`]: one value for each `true` of `present`.
fn get_deltas(
    raw: &[u8],
    at: &mut usize,
    present: impl Iterator<Item = bool>,
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut last = 0i64;
    present
        .map(|p| {
            if !p {
                return Ok(None);
            }
            last = last.wrapping_add(unzigzag(get_varint(raw, at)?));
            Ok(Some(last))
        })
        .collect()
}

/// The shared frame: count, times, flags, then `columns` writes the fields.
fn encode_frame(times: &[i64], flags: &[u8], columns: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut raw = Vec::with_capacity(times.len() * 8 + 16);
    put_varint(&mut raw, times.len() as u64);
    let mut last = 0i64;
    for (i, &t) in times.iter().enumerate() {
        put_varint(
            &mut raw,
            if i == 0 {
                zigzag(t)
            } else {
                t.wrapping_sub(last) as u64
            },
        );
        last = t;
    }
    raw.extend_from_slice(flags);
    columns(&mut raw);
    let mut body = Vec::with_capacity(raw.len() + 1);
    match zstd::bulk::compress(&raw, LEVEL) {
        Ok(z) if z.len() < raw.len() => {
            body.push(ZSTD);
            body.extend_from_slice(&z);
        }
        _ => {
            body.push(RAW);
            body.extend_from_slice(&raw);
        }
    }
    body
}

/// A body opened: its columns, the rows' times and flags, and where the
/// fields start.
struct Frame {
    raw: Vec<u8>,
    times: Vec<i64>,
    flags: Vec<u8>,
    at: usize,
}

fn decode_frame(body: &[u8], rows: usize) -> Result<Frame, StoreError> {
    let raw = match body.split_first() {
        Some((&RAW, rest)) => rest.to_vec(),
        Some((&ZSTD, rest)) => zstd::bulk::decompress(rest, rows * MAX_ROW_BYTES + 16)
            .map_err(|e| corrupt(&e.to_string()))?,
        _ => return Err(corrupt("unknown format")),
    };
    let mut at = 0;
    if get_varint(&raw, &mut at)? != rows as u64 {
        return Err(corrupt("its row count differs from the row's"));
    }
    let mut times = Vec::with_capacity(rows);
    let mut last = 0i64;
    for i in 0..rows {
        let v = get_varint(&raw, &mut at)?;
        last = if i == 0 {
            unzigzag(v)
        } else {
            last.wrapping_add(v as i64)
        };
        times.push(last);
    }
    let flags = raw
        .get(at..at + rows)
        .ok_or_else(|| corrupt("it ends inside the flags"))?
        .to_vec();
    at += rows;
    Ok(Frame {
        raw,
        times,
        flags,
        at,
    })
}

/// Checks that the whole body was read.
fn finished(raw: &[u8], at: usize) -> Result<(), StoreError> {
    if at == raw.len() {
        Ok(())
    } else {
        Err(corrupt("bytes are left after the last column"))
    }
}

/// A row a packable table holds: its key and the codec of its kind. Rows
/// given to `encode` are one item's of one day, strictly increasing in time;
/// `decode` takes the row count stored beside the body.
pub trait Packable: Copy + PartialEq + Send + Sync + 'static {
    fn item(&self) -> ItemId;
    fn time(&self) -> i64;
    fn encode(rows: &[Self]) -> Vec<u8>;
    fn decode(item: ItemId, rows: usize, body: &[u8]) -> Result<Vec<Self>, StoreError>;
}

impl Packable for LatestPrice {
    fn item(&self) -> ItemId {
        self.item_id
    }
    fn time(&self) -> i64 {
        self.timestamp
    }
    fn encode(rows: &[Self]) -> Vec<u8> {
        let times: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
        let flags: Vec<u8> = rows
            .iter()
            .map(|r| {
                r.high.is_some() as u8
                    | (r.high_time.is_some() as u8) << 1
                    | (r.low.is_some() as u8) << 2
                    | (r.low_time.is_some() as u8) << 3
            })
            .collect();
        encode_frame(&times, &flags, |out| {
            put_deltas(out, rows.iter().map(|r| r.high));
            put_deltas(out, rows.iter().map(|r| r.high_time));
            put_deltas(out, rows.iter().map(|r| r.low));
            put_deltas(out, rows.iter().map(|r| r.low_time));
        })
    }
    fn decode(item: ItemId, rows: usize, body: &[u8]) -> Result<Vec<Self>, StoreError> {
        let Frame {
            raw,
            times,
            flags,
            mut at,
        } = decode_frame(body, rows)?;
        let bit = |b: u8| flags.iter().map(move |f| f & b != 0);
        let high = get_deltas(&raw, &mut at, bit(1))?;
        let high_time = get_deltas(&raw, &mut at, bit(2))?;
        let low = get_deltas(&raw, &mut at, bit(4))?;
        let low_time = get_deltas(&raw, &mut at, bit(8))?;
        finished(&raw, at)?;
        Ok((0..rows)
            .map(|i| LatestPrice {
                item_id: item,
                timestamp: times[i],
                high: high[i],
                high_time: high_time[i],
                low: low[i],
                low_time: low_time[i],
            })
            .collect())
    }
}

impl Packable for BucketPrice {
    fn item(&self) -> ItemId {
        self.item_id
    }
    fn time(&self) -> i64 {
        self.timestamp
    }
    fn encode(rows: &[Self]) -> Vec<u8> {
        let times: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
        let flags: Vec<u8> = rows
            .iter()
            .map(|r| r.avg_high_price.is_some() as u8 | (r.avg_low_price.is_some() as u8) << 1)
            .collect();
        encode_frame(&times, &flags, |out| {
            put_deltas(out, rows.iter().map(|r| r.avg_high_price));
            put_deltas(out, rows.iter().map(|r| r.avg_low_price));
            for r in rows {
                put_varint(out, zigzag(r.high_price_volume));
            }
            for r in rows {
                put_varint(out, zigzag(r.low_price_volume));
            }
        })
    }
    fn decode(item: ItemId, rows: usize, body: &[u8]) -> Result<Vec<Self>, StoreError> {
        let Frame {
            raw,
            times,
            flags,
            mut at,
        } = decode_frame(body, rows)?;
        let bit = |b: u8| flags.iter().map(move |f| f & b != 0);
        let high = get_deltas(&raw, &mut at, bit(1))?;
        let low = get_deltas(&raw, &mut at, bit(2))?;
        let volumes = |at: &mut usize| -> Result<Vec<i64>, StoreError> {
            (0..rows)
                .map(|_| Ok(unzigzag(get_varint(&raw, at)?)))
                .collect()
        };
        let high_volume = volumes(&mut at)?;
        let low_volume = volumes(&mut at)?;
        finished(&raw, at)?;
        Ok((0..rows)
            .map(|i| BucketPrice {
                item_id: item,
                timestamp: times[i],
                avg_high_price: high[i],
                high_price_volume: high_volume[i],
                avg_low_price: low[i],
                low_price_volume: low_volume[i],
            })
            .collect())
    }
}

/// The table of a bucket step's packed days.
pub fn packed_buckets(step: BucketStep) -> &'static str {
    packed_table(step.table()).expect("bucket tables are packable")
}

/// `a` and `b`, each ordered by `key`, merged in that order; a key in both
/// is kept once (from `a`).
pub fn merge<T, K: Ord>(a: Vec<T>, b: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match key(x).cmp(&key(y)) {
                std::cmp::Ordering::Less => out.push(a.next().expect("peeked")),
                std::cmp::Ordering::Greater => out.push(b.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    out.push(a.next().expect("peeked"));
                    b.next();
                }
            },
            (Some(_), None) => out.push(a.next().expect("peeked")),
            (None, Some(_)) => out.push(b.next().expect("peeked")),
            (None, None) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(
        t: i64,
        high: Option<i64>,
        ht: Option<i64>,
        low: Option<i64>,
        lt: Option<i64>,
    ) -> LatestPrice {
        LatestPrice {
            item_id: 4151,
            timestamp: t,
            high,
            high_time: ht,
            low,
            low_time: lt,
        }
    }

    #[test]
    fn latest_rows_round_trip_with_nulls_and_extremes() {
        let day = 1_747_699_200;
        let rows = vec![
            tick(
                day,
                Some(1_500_000),
                Some(day - 40),
                Some(1_480_000),
                Some(day - 200),
            ),
            tick(day + 60, None, None, Some(1_480_001), Some(day + 30)),
            tick(day + 120, Some(2_147_483_647), Some(day + 119), None, None),
            tick(day + 300, Some(1), Some(-5), Some(i64::MAX), Some(i64::MIN)),
        ];
        let body = LatestPrice::encode(&rows);
        assert_eq!(LatestPrice::decode(4151, rows.len(), &body).unwrap(), rows);
        // A busy item's day (a tick a minute, small moves) packs to a few
        // bytes a row.
        let busy: Vec<LatestPrice> = (0..1440)
            .map(|i| {
                let t = day + 60 * i;
                tick(
                    t,
                    Some(1_500_000 + (i % 7) * 100),
                    Some(t - 3),
                    Some(1_490_000 - (i % 5) * 100),
                    Some(t - 20),
                )
            })
            .collect();
        let body = LatestPrice::encode(&busy);
        assert!(body.len() < busy.len() * 4, "{} bytes", body.len());
        assert_eq!(LatestPrice::decode(4151, busy.len(), &body).unwrap(), busy);
    }

    #[test]
    fn bucket_rows_round_trip() {
        let day = 1_747_699_200;
        let rows: Vec<BucketPrice> = (0..288)
            .map(|i| BucketPrice {
                item_id: 2,
                timestamp: day + 300 * i,
                avg_high_price: (i % 3 != 0).then_some(180 + i % 4),
                high_price_volume: i * 1000,
                avg_low_price: (i % 5 != 0).then_some(175),
                low_price_volume: if i == 7 { -1 } else { 3 * i },
            })
            .collect();
        let body = BucketPrice::encode(&rows);
        assert_eq!(BucketPrice::decode(2, rows.len(), &body).unwrap(), rows);
        assert_eq!(
            BucketPrice::decode(2, 0, &BucketPrice::encode(&[])).unwrap(),
            vec![]
        );
    }

    #[test]
    fn corrupt_bodies_are_refused() {
        let day = 1_747_699_200;
        let rows = vec![tick(day, Some(5), Some(day), None, None); 1];
        let body = LatestPrice::encode(&rows);
        assert!(LatestPrice::decode(1, 2, &body).is_err(), "wrong count");
        assert!(
            LatestPrice::decode(1, 1, &body[..body.len() - 1]).is_err(),
            "cut short"
        );
        let mut longer = body.clone();
        longer.push(0);
        assert!(
            LatestPrice::decode(1, 1, &longer).is_err(),
            "bytes left over"
        );
        assert!(
            LatestPrice::decode(1, 1, &[9, 1, 2]).is_err(),
            "unknown format"
        );
    }

    #[test]
    fn merge_keeps_order_and_one_of_each_key() {
        let m = merge(vec![1, 3, 5, 7], vec![2, 3, 6, 8, 9], |&x| x);
        assert_eq!(m, vec![1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(merge(vec![], vec![4], |&x: &i32| x), vec![4]);
        assert_eq!(merge(vec![4], vec![], |&x: &i32| x), vec![4]);
    }
}
