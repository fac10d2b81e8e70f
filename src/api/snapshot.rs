//! The predictions snapshot as bytes: `GET /api/v1/predictions` without
//! filters is the whole universe, polled by third parties every tick. It is
//! encoded once per tick (and gzip-compressed once), shared by every request
//! as reference-counted bytes, and tagged with an `ETag` so that a poller
//! that already holds the tick gets `304 Not Modified`.
//!
//! Two forms (docs/API.md):
//! - `objects` (the default): `{"tick_time", "received_at", "model_version", "count",
//!   "predictions": [{"item_id", "tick_time", "observed_at",
//!   "model_version", "probabilities": {target: p}}]}`;
//! - `compact` (`?format=compact`): the targets named once, each item's
//!   probabilities as integers × `p_scale` (10,000, as the stream sends
//!   them): `{"tick_time", "received_at", "model_version", "p_scale", "targets": [...],
//!   "count", "fields": ["item_id", "tick_time", "observed_at",
//!   "probabilities"], "items": [[id, tick, observed, [p, …]], …]}`.

use bytes::Bytes;
use gept_actors::inference::{Prediction, Snapshot};
use gept_core::P_SCALE;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The snapshot's two encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Objects,
    Compact,
}

impl Form {
    /// From `?format=`: `objects` (default) or `compact`.
    pub fn parse(s: Option<&str>) -> Result<Form, String> {
        match s {
            None | Some("objects") => Ok(Form::Objects),
            Some("compact") => Ok(Form::Compact),
            Some(other) => Err(format!(
                "unknown format {other:?}; formats are objects and compact"
            )),
        }
    }
}

/// One tick's snapshot, encoded.
#[derive(Debug)]
pub struct Encoded {
    /// Which snapshot it encodes (the `ArcSwap`'s pointer) and its tick.
    snapshot: usize,
    pub etag: String,
    pub json: Bytes,
    pub gzip: Bytes,
}

/// The newest encoding of each form, shared by requests.
#[derive(Debug, Default)]
pub struct SnapshotCache {
    objects: Mutex<Option<Arc<Encoded>>>,
    compact: Mutex<Option<Arc<Encoded>>>,
}

impl SnapshotCache {
    /// The encoding of `snap` in `form`: the cached one when it is of this
    /// snapshot, else encoded now (outside the lock) and cached.
    pub fn get(&self, snap: &Arc<Snapshot>, form: Form) -> Arc<Encoded> {
        if let Some(e) = self.cached(snap, form) {
            return e;
        }
        let id = Arc::as_ptr(snap) as usize;
        let mut items: Vec<&Arc<Prediction>> = snap.predictions.values().collect();
        items.sort_by_key(|p| p.item_id);
        let json = encode(snap, &items, None, form);
        let gzip = gzip(&json);
        let encoded = Arc::new(Encoded {
            snapshot: id,
            etag: format!(
                "\"{}-{}-{}-{}\"",
                snap.tick_time.unwrap_or_default(),
                snap.model_version.as_deref().unwrap_or("none"),
                items.len(),
                match form {
                    Form::Objects => "o",
                    Form::Compact => "c",
                }
            ),
            json: Bytes::from(json),
            gzip: Bytes::from(gzip),
        });
        *self.slot(form).lock().expect("snapshot cache") = Some(encoded.clone());
        encoded
    }

    /// The encoding of `snap` in `form` if it is cached (no encoding).
    pub fn cached(&self, snap: &Arc<Snapshot>, form: Form) -> Option<Arc<Encoded>> {
        let id = Arc::as_ptr(snap) as usize;
        self.slot(form)
            .lock()
            .expect("snapshot cache")
            .as_ref()
            .filter(|e| e.snapshot == id)
            .cloned()
    }

    fn slot(&self, form: Form) -> &Mutex<Option<Arc<Encoded>>> {
        match form {
            Form::Objects => &self.objects,
            Form::Compact => &self.compact,
        }
    }
}

/// gzip at a fast level: the snapshot is compressed once per tick.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// Each target's name as a JSON string (quoted), by target index.
static QUOTED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    gept_core::target_names()
        .iter()
        .map(|n| serde_json::to_string(n).expect("a string"))
        .collect()
});

/// An item's prediction in the objects form (the `targets` selected),
/// without its closing brace:
/// `{"item_id","tick_time","observed_at","model_version","probabilities":{target: p}`.
/// The snapshot's items and the one-item route share it.
fn write_object(out: &mut Vec<u8>, p: &Prediction, targets: &[usize]) {
    write!(
        out,
        "{{\"item_id\":{},\"tick_time\":{},\"observed_at\":{},\"model_version\":{},\"probabilities\":{{",
        p.item_id,
        p.tick_time,
        p.observed_at,
        serde_json::to_string(&*p.model_version).expect("a string"),
    )
    .expect("memory");
    for (j, &t) in targets.iter().enumerate() {
        if j > 0 {
            out.push(b',');
        }
        out.extend_from_slice(QUOTED[t].as_bytes());
        out.push(b':');
        // The f32 as serde_json writes it (shortest round trip).
        serde_json::to_writer(&mut *out, &p.probabilities[t]).expect("memory");
    }
    out.push(b'}');
}

/// `GET /api/v1/predictions/{id}`'s bodies: each item's prediction encoded
/// once per tick (on its first request) and shared; a request adds only its
/// `received_at` and `data_age_seconds`.
#[derive(Debug, Default)]
pub struct ItemCache {
    bodies: std::sync::RwLock<ItemBodies>,
}

#[derive(Debug, Default)]
struct ItemBodies {
    /// The snapshot (the `ArcSwap`'s pointer) the bodies are of.
    snapshot: usize,
    /// Per item, the object without its closing brace, and its ETag.
    items: std::collections::HashMap<gept_core::ItemId, (Bytes, Arc<str>)>,
}

impl ItemCache {
    /// The encoded prediction of `item` in `snap` (without its closing
    /// brace) and its ETag; `None` when the snapshot has no prediction of it.
    pub fn get(&self, snap: &Arc<Snapshot>, item: gept_core::ItemId) -> Option<(Bytes, Arc<str>)> {
        let id = Arc::as_ptr(snap) as usize;
        {
            let bodies = self.bodies.read().expect("item cache");
            if bodies.snapshot == id {
                if let Some(hit) = bodies.items.get(&item) {
                    return Some(hit.clone());
                }
            }
        }
        let p = snap.predictions.get(&item)?;
        let all: [usize; gept_core::N_TARGETS] = std::array::from_fn(|t| t);
        let mut out = Vec::with_capacity(gept_core::N_TARGETS * 32 + 256);
        write_object(&mut out, p, &all);
        // Weak: the body's data age moves with the clock, its meaning with
        // the tick.
        let etag: Arc<str> = Arc::from(format!(
            "W/\"{}-{}-{}-i{}\"",
            p.tick_time,
            p.model_version,
            snap.tick_time.unwrap_or_default(),
            item
        ));
        let hit = (Bytes::from(out), etag);
        let mut bodies = self.bodies.write().expect("item cache");
        if bodies.snapshot != id {
            bodies.snapshot = id;
            bodies.items.clear();
        }
        bodies.items.insert(item, hit.clone());
        Some(hit)
    }
}

/// Encodes `items` of `snap` (all targets, or the `targets` selected).
pub fn encode(
    snap: &Snapshot,
    items: &[&Arc<Prediction>],
    targets: Option<&[usize]>,
    form: Form,
) -> Vec<u8> {
    let names = gept_core::target_names();
    let all: Vec<usize> = (0..names.len()).collect();
    let targets = targets.unwrap_or(&all);
    let mut out = Vec::with_capacity(items.len() * targets.len() * 6 + 4096);
    let version = serde_json::to_string(&snap.model_version.as_deref()).expect("a string");
    let tick = snap.tick_time.map_or("null".to_string(), |t| t.to_string());
    // When the tick arrived: a client's data age is now − received_at (the
    // body is encoded once per tick, so the age itself cannot be in it).
    let received = snap
        .received_at
        .map_or("null".to_string(), |t| t.to_string());
    match form {
        Form::Objects => {
            write!(
                out,
                "{{\"tick_time\":{tick},\"received_at\":{received},\"model_version\":{version},\"count\":{},\"predictions\":[",
                items.len()
            )
            .expect("memory");
            for (i, p) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_object(&mut out, p, targets);
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        Form::Compact => {
            let selected: Vec<&String> = targets.iter().map(|&t| &names[t]).collect();
            write!(
                out,
                "{{\"tick_time\":{tick},\"received_at\":{received},\"model_version\":{version},\"p_scale\":{},\"targets\":{},\"count\":{},\"fields\":[\"item_id\",\"tick_time\",\"observed_at\",\"probabilities\"],\"items\":[",
                P_SCALE,
                serde_json::to_string(&selected).expect("strings"),
                items.len()
            )
            .expect("memory");
            for (i, p) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "[{},{},{},[", p.item_id, p.tick_time, p.observed_at).expect("memory");
                for (j, &t) in targets.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    let v = gept_core::p_units(p.probabilities[t]) as u32;
                    write!(out, "{v}").expect("memory");
                }
                out.extend_from_slice(b"]]");
            }
            out.extend_from_slice(b"]}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn snapshot() -> Arc<Snapshot> {
        let version: Arc<str> = Arc::from("m1");
        let mut predictions = HashMap::new();
        for (id, base) in [(2u32, 0.1f32), (1, 0.7)] {
            predictions.insert(
                id,
                Arc::new(Prediction {
                    item_id: id,
                    tick_time: 1_000,
                    observed_at: 990,
                    model_version: version.clone(),
                    probabilities: (0..gept_core::N_TARGETS)
                        .map(|t| (base + t as f32 * 0.001).min(1.0))
                        .collect(),
                }),
            );
        }
        Arc::new(Snapshot {
            tick_time: Some(1_000),
            received_at: Some(1_000),
            model_version: Some(version),
            predictions,
            market: HashMap::new(),
        })
    }

    #[test]
    fn the_objects_form_equals_serde_and_the_compact_form_rounds_to_the_scale() {
        let snap = snapshot();
        let cache = SnapshotCache::default();
        let objects = cache.get(&snap, Form::Objects);
        let v: serde_json::Value = serde_json::from_slice(&objects.json).unwrap();
        let mut items: Vec<&Arc<Prediction>> = snap.predictions.values().collect();
        items.sort_by_key(|p| p.item_id);
        let want = serde_json::json!({
            "tick_time": 1000, "received_at": 1000, "model_version": "m1", "count": 2,
            "predictions": items
                .iter()
                .map(|p| serde_json::from_slice::<serde_json::Value>(&serde_json::to_vec(&***p).unwrap()).unwrap())
                .collect::<Vec<_>>(),
        });
        assert_eq!(v, want);
        let compact = cache.get(&snap, Form::Compact);
        let c: serde_json::Value = serde_json::from_slice(&compact.json).unwrap();
        assert_eq!(c["targets"].as_array().unwrap().len(), gept_core::N_TARGETS);
        assert_eq!(c["items"][0][0], 1, "sorted by item");
        assert_eq!(c["received_at"], 1000);
        assert_eq!(c["items"][0][3][0], 7000);
        assert_eq!(c["items"][1][3][5], 1050, "0.105 × 10,000");
        assert_ne!(compact.etag, objects.etag);
        // Cached: the same bytes for the same snapshot.
        assert!(Arc::ptr_eq(&cache.get(&snap, Form::Compact), &compact));
        let mut d = flate2::read::GzDecoder::new(&compact.gzip[..]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).unwrap();
        assert_eq!(back, compact.json);
    }

    #[test]
    fn an_items_body_is_its_serde_object_encoded_once_per_snapshot() {
        let snap = snapshot();
        let cache = ItemCache::default();
        let (object, etag) = cache.get(&snap, 2).expect("item 2 is predicted");
        let mut closed = object.to_vec();
        closed.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&closed).unwrap();
        let want: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&*snap.predictions[&2]).unwrap()).unwrap();
        assert_eq!(v, want);
        assert!(etag.starts_with("W/\"1000-m1-1000-i2"), "{etag}");
        // The same bytes for the same snapshot; a new snapshot encodes again.
        let (again, _) = cache.get(&snap, 2).unwrap();
        assert_eq!(again.as_ptr(), object.as_ptr(), "shared, not encoded again");
        let next = snapshot();
        let (fresh, _) = cache.get(&next, 2).unwrap();
        assert_ne!(fresh.as_ptr(), object.as_ptr());
        assert_eq!(fresh, object, "same prediction, same bytes");
        assert!(cache.get(&next, 3).is_none(), "no prediction of item 3");
    }
}
