//! Predictions as stored: one row per tick, its items' probabilities in one
//! compressed body.
//!
//! Nothing reads a single item's stored prediction: the readers want a whole
//! tick (`Store::predictions_at`), and retention keeps or drops whole ticks.
//! A row per item and tick spent ~310 bytes per item on SQLite (216 of `u16`
//! probabilities, the rest the key, the model version and a time index);
//! a tick's body is about a quarter of that per item, see `BENCHMARKS.md`.
//!
//! The body, before zstd (level [`LEVEL`]):
//! - `u8` format ([`FORMAT`]), varint item count `n`;
//! - `n` varint item ids, ascending, each the difference to the one before;
//! - `n` zigzag varints, each item's `observed_at` minus the tick's time;
//! - the probabilities as published ([`gept_core::p_units`]: integers
//!   p × 10,000, what the stream and the compact snapshot send, so the
//!   store keeps exactly what clients saw), each written as its difference to
//!   the value its neighbours predict ([`predicted`]), zigzag, wrapping in 16
//!   bits; item by item, the low bytes of every item and target first, then
//!   the high bytes (mostly zero, they compress to little).
//!
//! Decoding gives exactly the published integers back (as p = units / 10,000).

use crate::rows::PredictionRow;
use crate::StoreError;
#[cfg(test)]
use gept_core::P_SCALE;
use gept_core::{from_p_units, p_units, ItemId, N_TARGETS, OFFSETS_BP};

/// The body's format byte.
const FORMAT: u8 = 1;
/// zstd level: 3 is zstd's default; higher levels gained little here.
const LEVEL: i32 = 3;
/// Offsets per horizon: targets are horizon-major (`fill_1h_1.25pct`, …).
const OFFSETS: usize = OFFSETS_BP.len();

/// One tick's predictions as stored: the common fields and the body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TickPredictions {
    pub tick_time: i64,
    pub model_version: String,
    pub items: i64,
    pub body: Vec<u8>,
}

/// What target `k`'s value is written as a difference to, from the
/// targets before it: the plane through its three neighbours at the next
/// shorter horizon and the next smaller offset (`up + left − corner`);
/// along the first horizon or offset, the one neighbour there is. The
/// model's probabilities are smooth in both, so the differences are small
/// (half within ±4 units here, ~20 % fewer bytes than a difference along
/// the horizon alone).
fn predicted(row: &[u16; N_TARGETS], k: usize) -> u16 {
    let (h, o) = (k / OFFSETS, k % OFFSETS);
    match (h, o) {
        (0, 0) => 0,
        (0, _) => row[k - 1],
        (_, 0) => row[k - OFFSETS],
        _ => row[k - OFFSETS]
            .wrapping_add(row[k - 1])
            .wrapping_sub(row[k - OFFSETS - 1]),
    }
}

fn zigzag16(d: u16) -> u16 {
    let s = d as i16;
    ((s << 1) ^ (s >> 15)) as u16
}

fn unzigzag16(z: u16) -> u16 {
    ((z >> 1) as i16 ^ -((z & 1) as i16)) as u16
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, StoreError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*at)
            .ok_or_else(|| corrupt("it ends inside a number"))?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("a number is longer than 64 bits"))
}

fn corrupt(why: &str) -> StoreError {
    StoreError::Invalid(format!("a stored tick of predictions is corrupt: {why}"))
}

/// Groups rows by tick and encodes each tick: rows of one tick must share a
/// model version and have distinct items with [`N_TARGETS`] probabilities.
pub(crate) fn encode(rows: &[PredictionRow]) -> Result<Vec<TickPredictions>, StoreError> {
    let mut by_tick: std::collections::BTreeMap<i64, Vec<&PredictionRow>> = Default::default();
    for r in rows {
        by_tick.entry(r.tick_time).or_default().push(r);
    }
    by_tick
        .into_iter()
        .map(|(tick, mut rows)| {
            rows.sort_by_key(|r| r.item_id);
            encode_tick(tick, &rows)
        })
        .collect()
}

fn encode_tick(tick: i64, rows: &[&PredictionRow]) -> Result<TickPredictions, StoreError> {
    let version = &rows[0].model_version;
    let mut raw = Vec::with_capacity(rows.len() * (N_TARGETS * 2 + 4) + 8);
    raw.push(FORMAT);
    put_varint(&mut raw, rows.len() as u64);
    let mut last: Option<ItemId> = None;
    for r in rows {
        if &r.model_version != version {
            return Err(StoreError::Invalid(format!(
                "predictions of tick {tick} from two model versions ({version}, {})",
                r.model_version
            )));
        }
        if r.probabilities.len() != N_TARGETS {
            return Err(StoreError::Invalid(format!(
                "item {} at tick {tick} has {} probabilities, not {N_TARGETS}",
                r.item_id,
                r.probabilities.len()
            )));
        }
        if last == Some(r.item_id) {
            return Err(StoreError::Invalid(format!(
                "item {} twice at tick {tick}",
                r.item_id
            )));
        }
        put_varint(&mut raw, (r.item_id - last.unwrap_or(0)) as u64);
        last = Some(r.item_id);
    }
    for r in rows {
        let d = r.observed_at - tick;
        put_varint(&mut raw, ((d << 1) ^ (d >> 63)) as u64);
    }
    let q: Vec<[u16; N_TARGETS]> = rows
        .iter()
        .map(|r| std::array::from_fn(|k| p_units(r.probabilities[k])))
        .collect();
    let residuals: Vec<[u16; N_TARGETS]> = q
        .iter()
        .map(|row| std::array::from_fn(|k| zigzag16(row[k].wrapping_sub(predicted(row, k)))))
        .collect();
    for plane in [0u32, 8] {
        for r in &residuals {
            raw.extend(r.iter().map(|&z| (z >> plane) as u8));
        }
    }
    let body = zstd::bulk::compress(&raw, LEVEL)
        .map_err(|e| StoreError::Invalid(format!("compressing predictions: {e}")))?;
    Ok(TickPredictions {
        tick_time: tick,
        model_version: version.clone(),
        items: rows.len() as i64,
        body,
    })
}

/// The rows of one stored tick, by item.
pub(crate) fn decode(t: &TickPredictions) -> Result<Vec<PredictionRow>, StoreError> {
    let n = usize::try_from(t.items).map_err(|_| corrupt("a negative item count"))?;
    let bound = n * (N_TARGETS * 2 + 20) + 16;
    let raw = zstd::bulk::decompress(&t.body, bound).map_err(|e| corrupt(&e.to_string()))?;
    if raw.first() != Some(&FORMAT) {
        return Err(corrupt("unknown format"));
    }
    let mut at = 1;
    if get_varint(&raw, &mut at)? != n as u64 {
        return Err(corrupt("its item count differs from the row's"));
    }
    let mut items = Vec::with_capacity(n);
    let mut last = 0i64;
    for _ in 0..n {
        last += get_varint(&raw, &mut at)? as i64;
        items.push(ItemId::try_from(last).map_err(|_| corrupt("an item id out of range"))?);
    }
    let mut observed = Vec::with_capacity(n);
    for _ in 0..n {
        let z = get_varint(&raw, &mut at)?;
        observed.push(t.tick_time + ((z >> 1) as i64 ^ -((z & 1) as i64)));
    }
    let planes = raw.get(at..).unwrap_or_default();
    if planes.len() != 2 * N_TARGETS * n {
        return Err(corrupt("its probabilities have the wrong length"));
    }
    let (low, high) = planes.split_at(N_TARGETS * n);
    let mut q = vec![[0u16; N_TARGETS]; n];
    for (i, row) in q.iter_mut().enumerate() {
        for k in 0..N_TARGETS {
            let z = low[i * N_TARGETS + k] as u16 | (high[i * N_TARGETS + k] as u16) << 8;
            row[k] = unzigzag16(z).wrapping_add(predicted(row, k));
        }
    }
    Ok(items
        .into_iter()
        .zip(observed)
        .zip(q)
        .map(|((item_id, observed_at), row)| PredictionRow {
            item_id,
            tick_time: t.tick_time,
            observed_at,
            model_version: t.model_version.clone(),
            probabilities: row.iter().map(|&v| from_p_units(v)).collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(item: ItemId, tick: i64, seed: u32) -> PredictionRow {
        // Probabilities rising with the horizon and falling with the offset,
        // as the model's do, with some noise; the ends exact.
        let probabilities = (0..N_TARGETS)
            .map(|k| {
                let (h, o) = (k / OFFSETS, k % OFFSETS);
                let noise = ((seed as usize * 7919 + k * 104_729) % 1000) as f32 / 20_000.0;
                (0.1 + h as f32 * 0.045 - o as f32 * 0.03 + noise).clamp(0.0, 1.0)
            })
            .collect();
        PredictionRow {
            item_id: item,
            tick_time: tick,
            observed_at: tick - (seed as i64 % 300) + 60,
            model_version: "m1".into(),
            probabilities,
        }
    }

    #[test]
    fn a_tick_round_trips_to_its_quantised_probabilities() {
        let mut rows: Vec<PredictionRow> = [2, 561, 13190, 4151, 30_000, 1]
            .iter()
            .enumerate()
            .map(|(i, &item)| row(item, 1_700_000_060, i as u32 * 31))
            .collect();
        rows[1].probabilities[0] = 0.0;
        rows[1].probabilities[7] = 1.0;
        rows[2].probabilities[N_TARGETS - 1] = 0.999_99;
        rows.push(row(5, 1_700_000_120, 3));
        let ticks = encode(&rows).unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!((ticks[0].tick_time, ticks[0].items), (1_700_000_060, 6));
        let back = decode(&ticks[0]).unwrap();
        let ids: Vec<ItemId> = back.iter().map(|r| r.item_id).collect();
        assert_eq!(ids, [1, 2, 561, 4151, 13190, 30_000]);
        for b in &back {
            let a = rows.iter().find(|r| r.item_id == b.item_id).unwrap();
            assert_eq!(
                (b.observed_at, &b.model_version),
                (a.observed_at, &a.model_version)
            );
            for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
                assert_eq!(p_units(*x), p_units(*y), "{x} vs {y}");
                assert!((x - y).abs() <= 0.5 / P_SCALE + 1e-7);
            }
        }
        // Item 561 (the second row written, the third by id).
        assert_eq!(back[2].probabilities[0], 0.0);
        assert_eq!(back[2].probabilities[7], 1.0);
        assert_eq!(decode(&ticks[1]).unwrap()[0].item_id, 5);
    }

    #[test]
    fn bad_rows_and_bodies_are_errors() {
        let mut two = vec![row(1, 60, 1), row(2, 60, 2)];
        two[1].model_version = "m2".into();
        assert!(encode(&two).is_err());
        assert!(encode(&[row(1, 60, 1), row(1, 60, 2)]).is_err());
        let mut short = row(1, 60, 1);
        short.probabilities.pop();
        assert!(encode(&[short]).is_err());
        let good = encode(&[row(1, 60, 1), row(9, 60, 2)]).unwrap().remove(0);
        for bad in [
            TickPredictions {
                items: 3,
                ..good.clone()
            },
            TickPredictions {
                body: good.body[..good.body.len() / 2].to_vec(),
                ..good.clone()
            },
            TickPredictions {
                body: zstd::bulk::compress(&[9, 2, 1, 1], 3).unwrap(),
                ..good.clone()
            },
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode(&good).unwrap().len(), 2);
    }

    #[test]
    fn zigzag_wraps_both_ways() {
        for v in [0u16, 1, 2, 0x7fff, 0x8000, 0xfffe, 0xffff] {
            assert_eq!(unzigzag16(zigzag16(v)), v);
        }
        assert_eq!(zigzag16(1u16.wrapping_neg()), 1);
        assert_eq!(zigzag16(1), 2);
    }
}
