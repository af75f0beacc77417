//! Human sizes for quotas and limits: `500M`, `1.5GiB`, `2G`, `10MiB`, `4096`.
//!
//! `K`, `M`, `G`, `T` (with or without a trailing `B` or `iB`) are binary multiples (1024),
//! as `df -h` and most admins read them; a plain number is bytes.

use std::fmt;

/// A size that could not be read, with the text that was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSize(pub String);

impl fmt::Display for BadSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad size {:?}: use bytes or a number with K, M, G or T (e.g. 500M, 1.5GiB, 2G)",
            self.0
        )
    }
}

impl std::error::Error for BadSize {}

/// Parse a human size into bytes.
pub fn parse_size(text: &str) -> Result<u64, BadSize> {
    let bad = || BadSize(text.to_string());
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.chars().filter(|&c| c == '.').count() > 1 {
        return Err(bad());
    }
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Format bytes for people: `0 B`, `512 B`, `10.0 MiB`, `1.50 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_admins_type() {
        let table: &[(&str, u64)] = &[
            ("4096", 4096),
            ("0", 0),
            ("500M", 500 << 20),
            ("500m", 500 << 20),
            ("2G", 2 << 30),
            ("10MiB", 10 << 20),
            ("1.5GiB", 3 << 29),
            ("1.5 GB", 3 << 29),
            ("64k", 64 << 10),
            ("1T", 1 << 40),
            ("12B", 12),
        ];
        for (text, bytes) in table {
            assert_eq!(parse_size(text), Ok(*bytes), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for text in ["", "M", "ten", "5X", "1.2.3G", "-5M", "99999999999999999999T", "5 M B"] {
            assert!(parse_size(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(10 << 20), "10.0 MiB");
        assert_eq!(format_size(3 << 29), "1.50 GiB");
        assert_eq!(format_size(200 << 30), "200 GiB");
    }
}
