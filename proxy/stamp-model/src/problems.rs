//! Collecting configuration problems: every crate validates its own section
//! into one list, each line naming where the value came from and the key.

use std::collections::HashMap;
use std::time::Duration;

/// Every problem found, one per line: `source: `key`: reason`.
#[derive(Debug, Default)]
pub struct Problems {
    source: String,
    list: Vec<String>,
    /// Keys whose value came from a command-line flag: named as the flag.
    flags: HashMap<String, String>,
}

impl Problems {
    /// Problems in `source` (a file path, or "command line").
    pub fn new(source: impl Into<String>) -> Problems {
        Problems {
            source: source.into(),
            ..Problems::default()
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value of `key` came from `flag` (`--read-timeout`): problems with
    /// it name the flag instead of blaming the file.
    pub fn from_flag(&mut self, key: &str, flag: &str) {
        self.flags.insert(key.to_string(), flag.to_string());
    }

    /// Records a problem with `key`.
    pub fn add(&mut self, key: &str, reason: impl std::fmt::Display) {
        let key = self.flags.get(key).map_or(key, String::as_str);
        self.list
            .push(format!("{}: `{key}`: {reason}", self.source));
    }

    /// Records a problem that names its own key (`policies[2].remote: …`).
    pub fn add_raw(&mut self, line: impl std::fmt::Display) {
        self.list.push(format!("{}: {line}", self.source));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_list(self) -> Vec<String> {
        self.list
    }

    /// A duration such as `500ms`, `2s`, `12h`; `default` when unset, and a
    /// problem (then `default`) when malformed or zero.
    pub fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.add(key, "must be longer than zero");
                    default
                }
                Err(e) => {
                    self.add(
                        key,
                        format!("`{text}` is not a duration ({e}); write e.g. 500ms, 2s, 12h"),
                    );
                    default
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_source_and_the_flag() {
        let mut p = Problems::new("p.toml");
        p.from_flag("timeouts.read", "--read-timeout");
        assert_eq!(
            p.duration("timeouts.read", Some("soon"), Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        p.duration("timeouts.connect", Some("0s"), Duration::from_secs(1));
        let list = p.into_list();
        assert!(list[0].starts_with("p.toml: `--read-timeout`: `soon` is not a duration"));
        assert!(list[1].contains("`timeouts.connect`: must be longer than zero"));
    }
}
