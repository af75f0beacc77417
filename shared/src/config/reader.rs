//! Reading one `[section]` of the config field by field, collecting problems instead of stopping.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::size::parse_size;

/// One `[section]` being read. Each getter returns the default when the key is absent, and the
/// default plus a recorded problem when the value is wrong. [`Section::finish`] reports keys that
/// no getter asked for (typos).
pub struct Section<'a> {
    name: &'static str,
    table: Option<&'a toml::Table>,
    problems: &'a mut Vec<String>,
    asked: Vec<&'static str>,
}

impl<'a> Section<'a> {
    /// Start reading `[name]` of `root`.
    pub fn new(root: &'a toml::Table, name: &'static str, problems: &'a mut Vec<String>) -> Self {
        let table = match root.get(name) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                problems.push(format!("{name}: must be a [section]"));
                None
            }
        };
        Section {
            name,
            table,
            problems,
            asked: Vec::new(),
        }
    }

    fn value(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.asked.push(key);
        self.table.and_then(|t| t.get(key))
    }

    pub fn problem(&mut self, key: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{}.{key}: {what}", self.name));
    }

    /// A string.
    pub fn string(&mut self, key: &'static str, default: &str) -> String {
        match self.value(key) {
            None => default.to_string(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => {
                self.problem(key, format!("must be a string, found {}", other.type_str()));
                default.to_string()
            }
        }
    }

    /// A boolean.
    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        match self.value(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.problem(key, format!("must be true or false, found {}", other.type_str()));
                default
            }
        }
    }

    /// A whole number within `min..=max`.
    pub fn number(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        match self.value(key) {
            None => default,
            Some(toml::Value::Integer(n)) if (*n as i128) >= min as i128 && (*n as i128) <= max as i128 => *n as u64,
            Some(toml::Value::Integer(n)) => {
                self.problem(key, format!("{n} is out of range ({min} to {max})"));
                default
            }
            Some(other) => {
                self.problem(key, format!("must be a whole number, found {}", other.type_str()));
                default
            }
        }
    }

    /// A size: bytes as a number, or a string like `"50M"` or `"1.5GiB"`.
    pub fn size(&mut self, key: &'static str, default: u64) -> u64 {
        match self.value(key) {
            None => default,
            Some(toml::Value::Integer(n)) if *n >= 0 => *n as u64,
            Some(toml::Value::String(s)) => match parse_size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(key, e);
                    default
                }
            },
            Some(other) => {
                self.problem(key, format!("must be a size such as \"50M\", found {other}"));
                default
            }
        }
    }

    /// A duration: seconds as a number, or a string like `"90s"`, `"30m"`, `"24h"`, `"7d"`,
    /// within `min..=max`.
    pub fn duration(&mut self, key: &'static str, default: Duration, min: Duration, max: Duration) -> Duration {
        let parsed = match self.value(key) {
            None => return default,
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
            Some(toml::Value::String(s)) => parse_duration(s),
            Some(other) => Err(format!("must be a duration such as \"24h\", found {other}")),
        };
        match parsed {
            Ok(d) if d >= min && d <= max => d,
            Ok(d) => {
                self.problem(key, format!("{d:?} is out of range ({min:?} to {max:?})"));
                default
            }
            Err(e) => {
                self.problem(key, e);
                default
            }
        }
    }

    /// A listen address `"IP:PORT"`; an empty string turns the listener off (`None`).
    pub fn listen(&mut self, key: &'static str, default: &str) -> Option<SocketAddr> {
        let text = self.string(key, default);
        if text.is_empty() {
            return None;
        }
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!("{text:?} is not an address like \"0.0.0.0:993\" or \"[::]:993\" (empty turns it off)"),
                );
                None
            }
        }
    }

    /// A table of string values (e.g. per-domain routes).
    pub fn string_map(&mut self, key: &'static str) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        match self.value(key) {
            None => {}
            Some(toml::Value::Table(t)) => {
                for (k, v) in t {
                    match v {
                        toml::Value::String(s) => {
                            map.insert(k.clone(), s.clone());
                        }
                        other => self.problem(
                            &format!("{key}.{k}"),
                            format!("must be a string, found {}", other.type_str()),
                        ),
                    }
                }
            }
            Some(other) => self.problem(key, format!("must be a table, found {}", other.type_str())),
        }
        map
    }

    /// A nested table, returned raw for a sub-reader (`None` when absent or not a table).
    pub fn table(&mut self, key: &'static str) -> Option<&'a toml::Table> {
        match self.value(key) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(other) => {
                self.problem(key, format!("must be a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// Report every key that was present but never asked for.
    pub fn finish(self) {
        if let Some(table) = self.table {
            for key in table.keys() {
                if !self.asked.contains(&key.as_str()) {
                    self.problems.push(format!(
                        "{}.{key}: unknown setting (known: {})",
                        self.name,
                        self.asked.join(", ")
                    ));
                }
            }
        }
    }
}

/// Parse a duration: a whole number with `s`, `m`, `h` or `d` (seconds without a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: use a whole number with s, m, h or d (e.g. 90s, 30m, 24h, 7d)");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_admins_write_them() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        for bad in ["", "h", "1.5h", "-1h", "3w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
