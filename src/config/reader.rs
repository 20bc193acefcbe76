//! Reads a TOML tree (file + env overrides) into typed values, collecting every problem instead of
//! stopping at the first, and reporting every key nobody asked for as unknown.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::{Table, Value};

/// One thing wrong with the configuration, named by the key (or env var) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Walks a merged TOML table. Every read marks the key as known; [`Reader::finish`] reports the
/// rest.
pub(crate) struct Reader {
    root: Table,
    /// Dotted key -> name of the env var that set it, for messages that point at the right place.
    env_sources: BTreeMap<String, String>,
    used: HashSet<String>,
    problems: Vec<Problem>,
}

impl Reader {
    pub(crate) fn new(root: Table, env_sources: BTreeMap<String, String>) -> Self {
        Self {
            root,
            env_sources,
            used: HashSet::new(),
            problems: Vec::new(),
        }
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = match self.env_sources.get(key) {
            Some(var) => format!("{key} (from {var})"),
            None => key.to_owned(),
        };
        self.problems.push(Problem {
            key,
            message: message.into(),
        });
    }

    fn lookup(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_owned());
        let mut parts = key.split('.').peekable();
        let mut table = &self.root;
        while let Some(part) = parts.next() {
            let value = table.get(part)?;
            if parts.peek().is_none() {
                return Some(value.clone());
            }
            table = value.as_table()?;
        }
        None
    }

    /// The value as written, for the few keys that accept more than one form.
    pub(crate) fn raw(&mut self, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    pub(crate) fn is_set(&mut self, key: &str) -> bool {
        self.lookup(key).is_some()
    }

    pub(crate) fn string(&mut self, key: &str, default: &str) -> String {
        self.opt_string(key).unwrap_or_else(|| default.to_owned())
    }

    pub(crate) fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.lookup(key)? {
            Value::String(s) => Some(s),
            other => {
                self.problem(key, format!("expected a string, got {}", other.type_str()));
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.lookup(key) {
            None => default,
            Some(Value::Boolean(b)) => b,
            // Env overrides arrive as strings.
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(other) => {
                self.problem(key, format!("expected true or false, got {}", show(&other)));
                default
            }
        }
    }

    pub(crate) fn uint(
        &mut self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        let value = match self.lookup(key) {
            None => return default,
            Some(Value::Integer(i)) => u64::try_from(i).ok(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match value {
            Some(v) if range.contains(&v) => v,
            _ => {
                self.problem(
                    key,
                    format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    pub(crate) fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(text) = self.opt_string(key) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) => d,
            Err(message) => {
                self.problem(key, message);
                default
            }
        }
    }

    /// A value whose type knows how to parse itself; `what` names the expected form in messages.
    pub(crate) fn parsed<T: FromStr>(&mut self, key: &str, default: T, what: &str) -> T {
        self.opt_parsed(key, what).unwrap_or(default)
    }

    pub(crate) fn opt_parsed<T: FromStr>(&mut self, key: &str, what: &str) -> Option<T> {
        let text = self.opt_string(key)?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(key, format!("expected {what}, got {text:?}"));
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn choice<T: Copy>(&mut self, key: &str, default: T, choices: &[(&str, T)]) -> T {
        let Some(text) = self.opt_string(key) else {
            return default;
        };
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == text) {
            return *v;
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.problem(
            key,
            format!("expected one of {}, got {text:?}", names.join(", ")),
        );
        default
    }

    pub(crate) fn strings(&mut self, key: &str, default: &[&str]) -> Vec<String> {
        let items = match self.lookup(key) {
            None => return default.iter().map(|s| (*s).to_owned()).collect(),
            Some(Value::Array(items)) => items,
            // Env overrides: a TOML array, or a comma-separated list.
            Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
            Some(Value::String(s)) if s.trim_start().starts_with('[') => match toml_array(&s) {
                Some(items) => items,
                None => {
                    self.problem(key, "expected a list like [\"a\", \"b\"]");
                    return Vec::new();
                }
            },
            Some(Value::String(s)) => s
                .split(',')
                .map(|p| Value::String(p.trim().to_owned()))
                .collect(),
            Some(other) => {
                self.problem(
                    key,
                    format!("expected a list of strings, got {}", other.type_str()),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => out.push(s),
                other => self.problem(
                    key,
                    format!("expected strings in the list, got {}", show(&other)),
                ),
            }
        }
        out
    }

    /// A secret given inline (`key`) or as a file to read (`key_file`, for mounted Secrets).
    pub(crate) fn secret(&mut self, key: &str) -> Option<Secret> {
        let file_key = format!("{key}_file");
        let inline = self.opt_string(key);
        let file = self.opt_string(&file_key);
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either {key} or {file_key}, not both"));
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                // Mounted files usually end in a newline that is not part of the secret.
                Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']).to_owned())),
                Err(e) => {
                    self.problem(&file_key, format!("cannot read {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    pub(crate) fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.opt_string(key).map(PathBuf::from)
    }

    /// Every key read so far.
    pub(crate) fn asked(&self) -> Vec<String> {
        self.used.iter().cloned().collect()
    }

    /// Reports every key that no read asked for, then hands back all problems.
    pub(crate) fn finish(mut self) -> Vec<Problem> {
        let mut unknown = Vec::new();
        collect_unknown(&self.root, "", &self.used, &mut unknown);
        for key in unknown {
            self.problem(&key, "unknown key");
        }
        self.problems
    }
}

fn collect_unknown(table: &Table, prefix: &str, used: &HashSet<String>, out: &mut Vec<String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => {
                let is_known_section = used.iter().any(|u| u.starts_with(&format!("{key}.")));
                if is_known_section {
                    collect_unknown(inner, &key, used, out);
                } else {
                    out.push(key);
                }
            }
            _ if !used.contains(&key) => out.push(key),
            _ => {}
        }
    }
}

fn toml_array(text: &str) -> Option<Vec<Value>> {
    let table: Table = format!("v = {text}").parse().ok()?;
    match table.get("v")? {
        Value::Array(items) => Some(items.clone()),
        _ => None,
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Parses `250ms`, `30s`, `5m`, `12h`, `1d` (one unit; whole numbers).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad =
        || format!("expected a duration like \"250ms\", \"30s\", \"5m\" or \"12h\", got {text:?}");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(bad)
}

/// A value that must never reach a log: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The one deliberate way to read the value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An encryption key, decoded from its base64 by the config reader: 32 bytes that, like a
/// [`Secret`], never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBytes([u8; 32]);

impl KeyBytes {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The one deliberate way to read the key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> Reader {
        Reader::new(text.parse().unwrap(), BTreeMap::new())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        for bad in [
            "",
            "s",
            "5",
            "5 parsecs",
            "-5s",
            "1.5s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let mut r =
            reader("[server]\nlisten = 5\nshutdown_grace = \"soon\"\ntypo = 1\n[nosuch]\nx = 1\n");
        let _ = r.opt_parsed::<std::net::SocketAddr>("server.listen", "an address");
        let _ = r.duration("server.shutdown_grace", Duration::ZERO);
        let keys: Vec<String> = r.finish().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "server.shutdown_grace",
                "nosuch",
                "server.typo"
            ]
        );
    }

    #[test]
    fn env_strings_are_coerced() {
        let mut r = reader("a = \"true\"\nb = \"7\"\nc = \"x, y\"\nd = '[\"p\", \"q\"]'\n");
        assert!(r.bool("a", false));
        assert_eq!(r.uint("b", 0, 0..=10), 7);
        assert_eq!(r.strings("c", &[]), ["x", "y"]);
        assert_eq!(r.strings("d", &[]), ["p", "q"]);
        assert!(r.finish().is_empty());
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = std::env::temp_dir().join(format!("twofa-secret-{}", std::process::id()));
        std::fs::write(&dir, "hunter2\n").unwrap();
        let mut r = reader(&format!(
            "[s]\npassword_file = {:?}\n",
            dir.display().to_string()
        ));
        let secret = r.secret("s.password").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(r.finish().is_empty());
        std::fs::remove_file(dir).unwrap();
    }
}
