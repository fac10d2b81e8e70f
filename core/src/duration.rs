//! Human-readable durations in configuration: `500ms`, `60s`, `5m`, `1h`, `1d`.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses `"<integer><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?} (ms, s, m, h, d)"
            ))
        }
    };
    Ok(Duration::from_millis(millis))
}

/// Formats a duration in the largest unit that divides it exactly.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Serde adapter: `#[serde(with = "gept_core::duration::serde_text")]`.
pub mod serde_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        for (text, secs, shown) in [
            ("60s", 60, "1m"),
            ("90s", 90, "90s"),
            ("5m", 300, "5m"),
            ("1h", 3600, "1h"),
            ("1d", 86400, "1d"),
        ] {
            let d = parse(text).unwrap();
            assert_eq!(d, Duration::from_secs(secs));
            assert_eq!(format(d), shown);
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse("60").is_err());
        assert!(parse("s").is_err());
        assert!(parse("5y").is_err());
    }
}
