//! The store writer's spill file: an append-only journal of row batches on
//! local disk, for a database outage longer than the writer's memory bound.
//!
//! Each record is `length (u32 LE) | CRC-32 of the payload (u32 LE) |
//! payload (JSON of one batch)`, written and synced before the writer lets
//! go of the rows in memory. Reading stops at the first record that is short
//! or fails its checksum (a tail torn by a crash mid-append): what came
//! before it is intact.

use crate::writer::Rows;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The journal file of one writer.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    bytes: u64,
}

impl Journal {
    /// Opens (creating the folder) the journal in `dir`; a journal left by
    /// an earlier process is kept, to be replayed.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("writer.journal");
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Journal { path, bytes })
    }

    /// Bytes the journal holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Appends `batches` and syncs them to disk.
    pub fn append(&mut self, batches: &[Rows]) -> io::Result<()> {
        let mut out = Vec::new();
        for rows in batches {
            let payload = serde_json::to_vec(rows).map_err(io::Error::other)?;
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&out)?;
        f.sync_data()?;
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// Every intact batch, in the order appended, and whether a torn or
    /// corrupt tail was left out.
    pub fn read_all(&self) -> io::Result<(Vec<Rows>, bool)> {
        let mut data = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(e) => return Err(e),
        }
        let mut batches = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let Some(head) = data.get(at..at + 8) else {
                return Ok((batches, true));
            };
            let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
            let Some(payload) = data.get(at + 8..at + 8 + len) else {
                return Ok((batches, true));
            };
            if crc32fast::hash(payload) != crc {
                return Ok((batches, true));
            }
            match serde_json::from_slice(payload) {
                Ok(rows) => batches.push(rows),
                Err(_) => return Ok((batches, true)),
            }
            at += 8 + len;
        }
        Ok((batches, false))
    }

    /// Empties the journal (its batches are stored).
    pub fn clear(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        f.sync_all()?;
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gept_core::LatestPrice;

    fn batch(t: i64) -> Rows {
        Rows::Latest(vec![LatestPrice {
            item_id: 4151,
            timestamp: t,
            high: Some(1_500_000),
            high_time: Some(t - 5),
            low: None,
            low_time: Some(t - 70),
        }])
    }

    #[test]
    fn batches_come_back_in_order_and_a_torn_tail_is_left_out() {
        let dir = tempfile_dir();
        let mut j = Journal::open(&dir).unwrap();
        assert!(j.is_empty());
        j.append(&[batch(1), batch(2)]).unwrap();
        j.append(&[batch(3)]).unwrap();
        let (back, torn) = Journal::open(&dir).unwrap().read_all().unwrap();
        assert!(!torn);
        let times: Vec<i64> = back
            .iter()
            .map(|r| match r {
                Rows::Latest(v) => v[0].timestamp,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(times, vec![1, 2, 3]);
        // A crash mid-append: half a record, then a corrupt one.
        let path = dir.join("writer.journal");
        let mut data = std::fs::read(&path).unwrap();
        let whole = data.len();
        data.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &data).unwrap();
        let (back, torn) = Journal::open(&dir).unwrap().read_all().unwrap();
        assert_eq!((back.len(), torn), (3, true));
        data.truncate(whole);
        let last = data.len() - 1;
        data[last] ^= 0xFF;
        std::fs::write(&path, &data).unwrap();
        let (back, torn) = Journal::open(&dir).unwrap().read_all().unwrap();
        assert_eq!(
            (back.len(), torn),
            (2, true),
            "the corrupt record is left out"
        );
        let mut j = Journal::open(&dir).unwrap();
        j.clear().unwrap();
        assert!(j.is_empty());
        assert_eq!(j.read_all().unwrap().0.len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gept-journal-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
