//! Readers of recorded API responses (the layout of
//! `shared/data/osrs/ernestoreza-ge_data/`): `latest_snapshots.jsonl.zst`,
//! `1h_snapshots.jsonl.gz`, `5m_snapshots_partial.jsonl.gz`, `mapping.json.gz`.
//!
//! Files may be zstd (`.zst`), gzip (`.gz`) or plain. Bodies are returned
//! exactly as the API sent them, so the replay server can serve them unchanged
//! and every consumer parses them with [`crate::wire`].

use serde::Deserialize;
use serde_json::value::RawValue;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// File name of the `/latest` recording.
pub const LATEST_FILE: &str = "latest_snapshots.jsonl.zst";
/// File name of the `/1h` recording.
pub const HOURLY_FILE: &str = "1h_snapshots.jsonl.gz";
/// File name of the `/5m` recording.
pub const FIVE_MINUTE_FILE: &str = "5m_snapshots_partial.jsonl.gz";
/// File name of the `/mapping` recording.
pub const MAPPING_FILE: &str = "mapping.json.gz";

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Opens a file, decompressing by its extension.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, RecordingError> {
    let io_err = |source| RecordingError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read + Send> = if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(io_err)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Reads a whole (possibly compressed) file.
pub fn read_all(path: &Path) -> Result<Vec<u8>, RecordingError> {
    let mut out = Vec::new();
    open(path)?
        .read_to_end(&mut out)
        .map_err(|source| RecordingError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(out)
}

/// One recorded `/latest` response and when it was observed.
#[derive(Debug, Clone)]
pub struct RecordedLatest {
    /// Observation time (Unix seconds) of the snapshot.
    pub timestamp: i64,
    /// The response body, `{"data":{...}}`, as the API sent it.
    pub body: String,
}

#[derive(Deserialize)]
struct LatestLine<'a> {
    timestamp: i64,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Streams the `/latest` recording, one snapshot at a time, in file order.
pub fn latest_snapshots(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RecordedLatest, RecordingError>>, RecordingError> {
    let reader = open(path)?;
    let path = path.to_owned();
    Ok(reader.lines().enumerate().filter_map(move |(i, line)| {
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(source) => {
                return Some(Err(RecordingError::Io {
                    path: path.clone(),
                    source,
                }))
            }
        };
        Some(
            serde_json::from_str::<LatestLine>(&line)
                .map(|l| RecordedLatest {
                    timestamp: l.timestamp,
                    body: format!("{{\"data\":{}}}", l.data.get()),
                })
                .map_err(|e| RecordingError::Format {
                    path: path.clone(),
                    line: i + 1,
                    message: e.to_string(),
                }),
        )
    }))
}

/// One recorded `/5m` or `/1h` response and its bucket start.
#[derive(Debug, Clone)]
pub struct RecordedBucket {
    pub timestamp: i64,
    /// The unchanged response body.
    pub body: String,
}

#[derive(Deserialize)]
struct BucketLine {
    timestamp: i64,
}

/// Reads a bucket recording (`/5m` or `/1h`), one response per line, sorted
/// by bucket start with repeated buckets dropped.
pub fn bucket_snapshots(path: &Path) -> Result<Vec<RecordedBucket>, RecordingError> {
    let reader = open(path)?;
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| RecordingError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let head: BucketLine = serde_json::from_str(&line).map_err(|e| RecordingError::Format {
            path: path.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(RecordedBucket {
            timestamp: head.timestamp,
            body: line,
        });
    }
    out.sort_by_key(|b| b.timestamp);
    out.dedup_by_key(|b| b.timestamp);
    Ok(out)
}

/// Where the recordings of a data directory are, if present.
#[derive(Debug, Clone)]
pub struct RecordingSet {
    pub dir: PathBuf,
}

impl RecordingSet {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.file(LATEST_FILE)
    }
    pub fn hourly(&self) -> Option<PathBuf> {
        self.file(HOURLY_FILE)
    }
    pub fn five_minute(&self) -> Option<PathBuf> {
        self.file(FIVE_MINUTE_FILE)
    }
    pub fn mapping(&self) -> Option<PathBuf> {
        self.file(MAPPING_FILE)
    }
}
