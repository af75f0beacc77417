//! Reading one `[section]` of the config field by field, collecting problems instead of stopping.

use std::collections::BTreeMap;
use std::net::SocketAddr;

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
