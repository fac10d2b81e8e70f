//! The one batched store writer every collector writes through.
//!
//! Rows are buffered per table and flushed when a buffer reaches
//! `batch_rows`, every `flush_interval`, and on [`Flush`]. A failed write keeps
//! its rows and is retried at the next flush, so a database that goes away
//! loses nothing; [`Flush`] reports the failure to whoever waits on it.
//! Flushes hold the mailbox, so rows are stored in the order they arrived.
//!
//! Memory is bounded: when a flush fails with more than `max_rows` buffered
//! (a long database outage), the buffers are appended to the journal on
//! local disk (`crate::journal`, checksummed, synced) and let go. Every
//! flush first replays the journal in order, then the buffers, so rows are
//! still stored in arrival order; a journal left by a process that died is
//! replayed by the next one. Writes are idempotent, so a batch replayed twice
//! (a crash between storing and clearing) is stored once.

use crate::journal::Journal;
use actix::prelude::*;
use gept_core::metrics as m;
use gept_core::{BucketPrice, BucketStep, ItemMeta, LatestPrice, NewsItem, PlayerCount};
use gept_store::Store;
use std::time::Duration;

/// Rows of one table, handed to the writer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Rows {
    Latest(Vec<LatestPrice>),
    Buckets(BucketStep, Vec<BucketPrice>),
    Items(Vec<ItemMeta>, i64),
    News(Vec<NewsItem>, i64),
    PlayerCounts(Vec<PlayerCount>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Latest(r) => r.len(),
            Rows::Buckets(_, r) => r.len(),
            Rows::Items(r, _) => r.len(),
            Rows::News(r, _) => r.len(),
            Rows::PlayerCounts(r) => r.len(),
        }
    }
}

/// Buffer these rows for the next flush.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Write(pub Rows);

/// Store everything buffered now; answers once it is stored (or why not).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Flush;

/// What the writer holds now: rows in memory and journal bytes.
#[derive(Message)]
#[rtype(result = "(usize, u64)")]
pub struct Held;

#[derive(Default)]
struct Buffers {
    latest: Vec<LatestPrice>,
    five_minute: Vec<BucketPrice>,
    one_hour: Vec<BucketPrice>,
    other: Vec<Rows>,
}

impl Buffers {
    fn rows(&self) -> usize {
        self.latest.len()
            + self.five_minute.len()
            + self.one_hour.len()
            + self.other.iter().map(Rows::len).sum::<usize>()
    }

    fn push(&mut self, rows: Rows) {
        match rows {
            Rows::Latest(r) => self.latest.extend(r),
            Rows::Buckets(BucketStep::FiveMinutes, r) => self.five_minute.extend(r),
            Rows::Buckets(BucketStep::OneHour, r) => self.one_hour.extend(r),
            other => self.other.push(other),
        }
    }

    /// The buffers as batches, oldest table order as `write` stores them.
    fn into_batches(self) -> Vec<Rows> {
        let mut out = Vec::new();
        if !self.latest.is_empty() {
            out.push(Rows::Latest(self.latest));
        }
        if !self.five_minute.is_empty() {
            out.push(Rows::Buckets(BucketStep::FiveMinutes, self.five_minute));
        }
        if !self.one_hour.is_empty() {
            out.push(Rows::Buckets(BucketStep::OneHour, self.one_hour));
        }
        out.extend(self.other);
        out
    }

    /// Puts back what a failed flush did not store, ahead of newer rows.
    fn restore(&mut self, mut older: Buffers) {
        older.latest.append(&mut self.latest);
        older.five_minute.append(&mut self.five_minute);
        older.one_hour.append(&mut self.one_hour);
        older.other.append(&mut self.other);
        *self = older;
    }
}

/// The store writer actor.
pub struct StoreWriter {
    store: Store,
    batch_rows: usize,
    flush_interval: Duration,
    buffers: Buffers,
    /// Where rows over `max_rows` go during an outage.
    journal: Option<Journal>,
    max_rows: usize,
}

impl StoreWriter {
    pub fn new(store: Store, batch_rows: usize, flush_interval: Duration) -> Self {
        Self {
            store,
            batch_rows,
            flush_interval,
            buffers: Buffers::default(),
            journal: None,
            max_rows: usize::MAX,
        }
    }

    /// Bounds the rows held in memory to `max_rows` (plus one batch): past
    /// it, a failed flush spills them to `journal`.
    pub fn with_journal(mut self, journal: Journal, max_rows: usize) -> Self {
        metrics::gauge!(m::STORE_JOURNAL_BYTES).set(journal.bytes() as f64);
        self.journal = Some(journal);
        self.max_rows = max_rows.max(1);
        self
    }

    fn journal_pending(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Stores the journal's batches in order; answers the batches if all
    /// were stored (the journal may then be cleared).
    async fn replay(store: &Store, batches: Vec<Rows>) -> Result<(), String> {
        for rows in batches {
            let mut b = Buffers::default();
            b.push(rows);
            Self::write(store.clone(), b).await.map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    /// Stores `b`; on failure returns what is left unstored.
    async fn write(store: Store, mut b: Buffers) -> Result<(), (Buffers, String)> {
        macro_rules! attempt {
            ($table:expr, $fut:expr) => {
                match $fut.await {
                    Ok(n) => metrics::counter!(m::ROWS_STORED, "table" => $table).increment(n),
                    Err(e) => {
                        metrics::counter!(m::STORE_ERRORS, "table" => $table).increment(1);
                        return Err((b, e.to_string()));
                    }
                }
            };
        }
        if !b.latest.is_empty() {
            attempt!("prices_latest_1m", store.insert_latest(&b.latest));
            b.latest.clear();
        }
        if !b.five_minute.is_empty() {
            attempt!(
                "price_data_5min",
                store.insert_buckets(BucketStep::FiveMinutes, &b.five_minute)
            );
            b.five_minute.clear();
        }
        if !b.one_hour.is_empty() {
            attempt!(
                "prices_1h",
                store.insert_buckets(BucketStep::OneHour, &b.one_hour)
            );
            b.one_hour.clear();
        }
        while let Some(rows) = b.other.first().cloned() {
            match &rows {
                Rows::Items(items, now) => attempt!("items", store.upsert_items(items, *now)),
                Rows::News(news, now) => attempt!("osrs_news", store.insert_news(news, *now)),
                Rows::PlayerCounts(c) => attempt!("player_counts", store.insert_player_counts(c)),
                Rows::Latest(_) | Rows::Buckets(..) => unreachable!("kept in their own buffers"),
            }
            b.other.remove(0);
        }
        Ok(())
    }

    /// A future that flushes the journal, then the buffers, holding the
    /// mailbox until done; spills the buffers to the journal when the flush
    /// failed with more than `max_rows` of them.
    fn flush(&mut self) -> impl ActorFuture<Self, Output = Result<(), String>> {
        let taken = std::mem::take(&mut self.buffers);
        let store = self.store.clone();
        let journal = match self.journal.as_ref().filter(|j| !j.is_empty()) {
            Some(j) => match j.read_all() {
                Ok((batches, torn)) => {
                    if torn {
                        tracing::error!("the writer journal ends in a torn or corrupt record; replaying the intact ones before it");
                    }
                    Some(batches)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the writer journal cannot be read");
                    None
                }
            },
            None => None,
        };
        async move {
            let replayed = match journal {
                Some(batches) => {
                    let n = batches.len();
                    match Self::replay(&store, batches).await {
                        Ok(()) => Some(n),
                        Err(e) => return (Err((taken, e)), None),
                    }
                }
                None => None,
            };
            (Self::write(store, taken).await, replayed)
        }
        .into_actor(self)
        .map(|(res, replayed), act, _| {
            if let (Some(n), Some(j)) = (replayed, act.journal.as_mut()) {
                match j.clear() {
                    Ok(()) => tracing::info!(batches = n, "the writer journal was stored"),
                    Err(e) => tracing::error!(error = %e, "clearing the stored writer journal failed; it will be stored again (idempotent)"),
                }
            }
            let res = res.map_err(|(left, e)| {
                tracing::warn!(error = %e, rows = left.rows(), "store write failed; rows kept for the next flush");
                act.buffers.restore(left);
                e
            });
            if res.is_err() && act.buffers.rows() > act.max_rows {
                if let Some(j) = act.journal.as_mut() {
                    let spilled = std::mem::take(&mut act.buffers);
                    let rows = spilled.rows();
                    let batches = spilled.into_batches();
                    match j.append(&batches) {
                        Ok(()) => tracing::warn!(rows, journal_bytes = j.bytes(), "database away: rows over the memory bound spilled to the journal"),
                        Err(e) => {
                            tracing::error!(error = %e, "spilling to the journal failed; rows stay in memory");
                            let mut back = Buffers::default();
                            for b in batches {
                                back.push(b);
                            }
                            act.buffers = back;
                        }
                    }
                }
            }
            metrics::gauge!(m::STORE_BUFFERED_ROWS).set(act.buffers.rows() as f64);
            metrics::gauge!(m::STORE_JOURNAL_BYTES)
                .set(act.journal.as_ref().map_or(0, Journal::bytes) as f64);
            res
        })
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.flush_interval, |act, ctx| {
            if act.buffers.rows() > 0 || act.journal_pending() {
                let f = act.flush().map(|_, _, _| ());
                ctx.wait(f);
            }
        });
    }
}

impl Handler<Write> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) {
        self.buffers.push(msg.0);
        let buffered = self.buffers.rows();
        metrics::gauge!(m::STORE_BUFFERED_ROWS).set(buffered as f64);
        if buffered >= self.batch_rows {
            let f = self.flush().map(|_, _, _| ());
            ctx.wait(f);
        }
    }
}

impl Handler<Flush> for StoreWriter {
    type Result = AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.flush()))
    }
}

impl Handler<Held> for StoreWriter {
    type Result = MessageResult<Held>;

    fn handle(&mut self, _: Held, _: &mut Context<Self>) -> Self::Result {
        MessageResult((
            self.buffers.rows(),
            self.journal.as_ref().map_or(0, Journal::bytes),
        ))
    }
}
