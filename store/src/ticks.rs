//! `/latest` ticks stored once.
//!
//! The upstream's `/latest` answers every item at every poll, but between two
//! polls most items have not traded: the same prices and trade times come
//! back (on the development recording, 62 % of the rows of a poll five
//! minutes after the previous one). The store keeps
//!
//! - one row per stored tick in `latest_ticks` (its time and whether it is a
//!   keyframe), written in the same transaction as the tick's rows;
//! - in `prices_latest_1m`, for a **keyframe** every item of the tick, and
//!   for any other tick only the items whose `high`, `high_time`, `low` or
//!   `low_time` differ from the tick before it.
//!
//! A tick is a keyframe when it is the first the writing process stores
//! after the store's newest tick it did not write itself (a restart, a
//! failover), the first of its UTC hour, or when an item of the tick before
//! is missing from it. So every UTC hour, and so every UTC day, begins with a
//! keyframe: a read of `[from, to)` starts at the newest keyframe at or before
//! `from` (at most an hour of changes before it), and retention can drop
//! whole days without leaving a tick that depends on a dropped one.
//!
//! A tick is stored whole, once: a repeat of a stored tick (by its time) is
//! ignored, as rows were before. A tick older than the newest stored one (a
//! late write) is stored as a keyframe, and the stored tick after it is
//! rewritten as a keyframe first, so no tick is ever read against the wrong
//! predecessor.
//!
//! [`reconstruct`] gives back exactly the rows of every tick as written
//! (`Store::load_latest`, `Store::item_latest`): readers never see the
//! layout.

use gept_core::{ItemId, LatestPrice};
use std::collections::{BTreeMap, HashMap};

/// Seconds between forced keyframes: the first tick of each UTC hour.
pub const KEYFRAME_PERIOD: i64 = 3600;

/// The full state of the newest tick a process stored: every item's row.
#[derive(Debug, Clone, Default)]
pub struct TickState {
    pub time: i64,
    pub rows: HashMap<ItemId, LatestPrice>,
}

/// The state the writing process last stored, shared by the clones of one
/// store (`None` until it stores a tick, or after a failed write).
pub type TickCache = std::sync::Arc<tokio::sync::Mutex<Option<TickState>>>;

/// Whether two rows of an item show the same market (their times aside).
fn same(a: &LatestPrice, b: &LatestPrice) -> bool {
    a.high == b.high && a.high_time == b.high_time && a.low == b.low && a.low_time == b.low_time
}

/// What to store of the tick at `time` with `rows` (one per item; a repeated
/// item keeps its first row) after `prev`, the state of the tick stored just
/// before it (`None`: unknown). Answers whether it is a keyframe, the rows to
/// store, and the tick's full state.
pub fn plan(
    prev: Option<&TickState>,
    time: i64,
    rows: &[LatestPrice],
) -> (bool, Vec<LatestPrice>, TickState) {
    let mut state = TickState {
        time,
        rows: HashMap::with_capacity(rows.len()),
    };
    for r in rows {
        state.rows.entry(r.item_id).or_insert(*r);
    }
    let keyframe = match prev {
        None => true,
        Some(p) => {
            p.time.div_euclid(KEYFRAME_PERIOD) != time.div_euclid(KEYFRAME_PERIOD)
                || p.rows.keys().any(|id| !state.rows.contains_key(id))
        }
    };
    let mut keep: Vec<LatestPrice> = state
        .rows
        .values()
        .filter(|r| {
            keyframe
                || prev
                    .and_then(|p| p.rows.get(&r.item_id))
                    .is_none_or(|before| !same(before, r))
        })
        .copied()
        .collect();
    keep.sort_unstable_by_key(|r| r.item_id);
    (keyframe, keep, state)
}

/// Every tick of `ticks` (time, keyframe; in time order) at or after `from`,
/// rebuilt from the stored `rows` (sorted by time, then item) read from the
/// first of `ticks` on: each item's row as of the tick, with the tick's time.
/// Sorted by time, then item, as `Store::load_latest` answers. Rows of a time
/// that is not a listed tick are ignored; ticks before the first keyframe
/// show only the items that changed since.
pub fn reconstruct(ticks: &[(i64, bool)], rows: &[LatestPrice], from: i64) -> Vec<LatestPrice> {
    let mut state: BTreeMap<ItemId, LatestPrice> = BTreeMap::new();
    let mut out = Vec::new();
    let mut j = 0;
    for &(t, keyframe) in ticks {
        if keyframe {
            state.clear();
        }
        while j < rows.len() && rows[j].timestamp < t {
            j += 1;
        }
        while j < rows.len() && rows[j].timestamp == t {
            state.insert(rows[j].item_id, rows[j]);
            j += 1;
        }
        if t >= from {
            out.extend(state.values().map(|r| LatestPrice { timestamp: t, ..*r }));
        }
    }
    out
}

/// One item's rows at `ticks` (time, keyframe; in time order, all at or
/// after `from`), from `before` (the item's newest stored row before `from`
/// and at or after the keyframe a read starts at) and `rows` (the item's
/// stored rows at or after `from`, in time order).
pub fn reconstruct_item(
    ticks: &[(i64, bool)],
    before: Option<LatestPrice>,
    rows: &[LatestPrice],
) -> Vec<LatestPrice> {
    let mut state = before;
    let mut out = Vec::with_capacity(ticks.len());
    let mut j = 0;
    for &(t, keyframe) in ticks {
        if keyframe {
            state = None;
        }
        while j < rows.len() && rows[j].timestamp < t {
            j += 1;
        }
        if j < rows.len() && rows[j].timestamp == t {
            state = Some(rows[j]);
        }
        if let Some(r) = state {
            out.push(LatestPrice { timestamp: t, ..r });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(item: ItemId, t: i64, high: i64, ht: i64) -> LatestPrice {
        LatestPrice {
            item_id: item,
            timestamp: t,
            high: Some(high),
            high_time: Some(ht),
            low: None,
            low_time: None,
        }
    }

    /// Plans ticks one after another as a single writer would and answers
    /// what the store would hold (ticks and rows).
    fn store(ticks: &[(i64, Vec<LatestPrice>)]) -> (Vec<(i64, bool)>, Vec<LatestPrice>) {
        let mut prev: Option<TickState> = None;
        let (mut listed, mut stored) = (Vec::new(), Vec::new());
        for (t, rows) in ticks {
            let (keyframe, keep, state) = plan(prev.as_ref(), *t, rows);
            listed.push((*t, keyframe));
            stored.extend(keep);
            prev = Some(state);
        }
        (listed, stored)
    }

    #[test]
    fn only_changes_are_stored_and_every_tick_comes_back_whole() {
        // Hour 1: three ticks; hour 2 starts a keyframe; item 2 vanishes at
        // the last tick (a keyframe too).
        let h = 3600 * 500;
        let ticks = vec![
            (h + 60, vec![row(1, h + 60, 10, h), row(2, h + 60, 20, h)]),
            (
                h + 120,
                vec![row(1, h + 120, 10, h), row(2, h + 120, 21, h + 100)],
            ),
            (
                h + 180,
                vec![row(1, h + 180, 10, h), row(2, h + 180, 21, h + 100)],
            ),
            (
                h + 3600,
                vec![
                    row(1, h + 3600, 11, h + 3590),
                    row(2, h + 3600, 21, h + 100),
                ],
            ),
            (h + 3660, vec![row(1, h + 3660, 11, h + 3590)]),
        ];
        let (listed, stored) = store(&ticks);
        assert_eq!(
            listed.iter().map(|(_, k)| *k).collect::<Vec<_>>(),
            vec![true, false, false, true, true]
        );
        // 2 + 1 (item 2 changed) + 0 + 2 (keyframe) + 1 (keyframe).
        assert_eq!(stored.len(), 6);
        let whole: Vec<LatestPrice> = ticks.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(reconstruct(&listed, &stored, i64::MIN), whole);
        // From the middle of the first hour: the read starts at its keyframe.
        let from = h + 120;
        let tail: Vec<LatestPrice> = whole
            .iter()
            .filter(|r| r.timestamp >= from)
            .copied()
            .collect();
        assert_eq!(reconstruct(&listed, &stored, from), tail);
        // One item, from the second tick: its row before `from` carries.
        let before = stored
            .iter()
            .rfind(|r| r.item_id == 1 && r.timestamp < from)
            .copied();
        let after: Vec<LatestPrice> = stored
            .iter()
            .filter(|r| r.item_id == 1 && r.timestamp >= from)
            .copied()
            .collect();
        let at: Vec<(i64, bool)> = listed.iter().filter(|(t, _)| *t >= from).copied().collect();
        let want: Vec<LatestPrice> = tail.iter().filter(|r| r.item_id == 1).copied().collect();
        assert_eq!(reconstruct_item(&at, before, &after), want);
        // Item 2 is gone at the last keyframe, not carried into it.
        let item2: Vec<LatestPrice> = stored
            .iter()
            .filter(|r| r.item_id == 2 && r.timestamp >= from)
            .copied()
            .collect();
        let before2 = stored
            .iter()
            .rfind(|r| r.item_id == 2 && r.timestamp < from)
            .copied();
        assert_eq!(reconstruct_item(&at, before2, &item2).len(), 3);
    }

    #[test]
    fn an_unknown_predecessor_makes_a_keyframe() {
        let rows = vec![row(7, 100, 1, 50), row(7, 100, 2, 60)];
        let (keyframe, keep, state) = plan(None, 100, &rows);
        assert!(keyframe);
        // A repeated item keeps its first row.
        assert_eq!(keep, vec![row(7, 100, 1, 50)]);
        assert_eq!(state.rows[&7], row(7, 100, 1, 50));
    }
}
