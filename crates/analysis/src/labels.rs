//! Churn labels: a CSV of `customer_id,churned`, one customer a row.
//!
//! The header row is optional; `churned` is `1` (churned) or `0` (stayed), and
//! `true`/`false` are accepted too. A bad row is reported with its line number
//! and skipped, never fatal: one typo must not throw away a labelled data set.

use std::io::BufRead;

use rustc_hash::FxHashMap;
use serde::Serialize;

/// A label row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLabel {
    /// 1-based line number in the CSV.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// Counts of a labels file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelStats {
    /// Lines read, blank ones and the header included.
    pub lines_read: u64,
    /// Rows accepted: one per labelled customer.
    pub accepted: u64,
    /// Rows rejected (bad syntax, bad value, duplicate customer).
    pub rejected: u64,
    /// Accepted rows with `churned = 1`.
    pub positives: u64,
}

/// Errors that stop reading labels.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// Reading the file failed.
    #[error("reading labels: {0}")]
    Io(#[from] std::io::Error),
}

/// Labelled customers: id → churned.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    map: FxHashMap<String, bool>,
    stats: LabelStats,
}

impl Labels {
    /// Builds labels from pairs (for tests and callers holding labels in memory).
    /// A repeated id keeps its first label.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let mut labels = Labels::default();
        for (id, churned) in pairs {
            labels.stats.lines_read += 1;
            if labels.insert(id, churned) {
                labels.stats.accepted += 1;
                labels.stats.positives += u64::from(churned);
            } else {
                labels.stats.rejected += 1;
            }
        }
        labels
    }

    /// Inserts a label unless the id is already labelled; true if inserted.
    fn insert(&mut self, id: &str, churned: bool) -> bool {
        if self.map.contains_key(id) {
            return false;
        }
        self.map.insert(id.to_string(), churned);
        true
    }

    /// The label of a customer, if labelled.
    pub fn get(&self, customer_id: &str) -> Option<bool> {
        self.map.get(customer_id).copied()
    }

    /// Labelled customers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no customer is labelled.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every labelled customer, sorted by id (a deterministic order).
    pub fn sorted(&self) -> Vec<(&str, bool)> {
        let mut all: Vec<(&str, bool)> = self.map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// What reading the file counted.
    pub fn stats(&self) -> &LabelStats {
        &self.stats
    }
}

/// Reads a labels CSV. Bad rows go to `on_bad_row` and are counted.
pub fn read_labels(
    input: impl BufRead,
    mut on_bad_row: impl FnMut(&BadLabel),
) -> Result<Labels, LabelError> {
    let mut labels = Labels::default();
    let mut input = input;
    let mut buf = Vec::with_capacity(128);
    let mut seen_content = false;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        labels.stats.lines_read += 1;
        let line_no = labels.stats.lines_read;
        let mut bad = |message: String| {
            labels.stats.rejected += 1;
            on_bad_row(&BadLabel {
                line: line_no,
                message,
            });
        };
        let Ok(text) = std::str::from_utf8(&buf) else {
            bad("not UTF-8".into());
            continue;
        };
        // A spreadsheet export often starts with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let first_row = !seen_content;
        seen_content = true;
        let fields = match split_csv(text) {
            Ok(f) => f,
            Err(message) => {
                bad(message.into());
                continue;
            }
        };
        if fields.len() != 2 {
            bad(format!(
                "expected 2 fields (customer_id,churned), found {}",
                fields.len()
            ));
            continue;
        }
        let id = fields[0].trim();
        let value = fields[1].trim();
        let churned = match parse_churned(value) {
            Some(c) => c,
            // Only the first row may be a header, and only a header-like one.
            None if first_row && !value.is_empty() && value.parse::<f64>().is_err() => continue,
            None => {
                bad(format!("churned must be 1 or 0, found {value:?}"));
                continue;
            }
        };
        if id.is_empty() {
            bad("empty customer_id".into());
            continue;
        }
        if id.len() > churn_core::event::MAX_CUSTOMER_ID_BYTES {
            bad("customer_id longer than 256 bytes".into());
            continue;
        }
        if labels.map.contains_key(id) {
            bad(format!(
                "duplicate customer_id {id:?}; the first row is kept"
            ));
            continue;
        }
        labels.map.insert(id.to_string(), churned);
        labels.stats.accepted += 1;
        labels.stats.positives += u64::from(churned);
    }
    Ok(labels)
}

fn parse_churned(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "0" => Some(false),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::with_capacity(2);
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        // Whitespace before an opening quote is not part of the field.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            if let Some(c) = chars.next() {
                field.push(c);
            }
        }
        if chars.peek() == Some(&'"') {
            field.clear();
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field"),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("text after a closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Labels, Vec<BadLabel>) {
        let mut bad = Vec::new();
        let labels = read_labels(text.as_bytes(), |b| bad.push(b.clone())).expect("in memory");
        (labels, bad)
    }

    #[test]
    fn header_is_optional_and_values_are_read() {
        let (l, bad) = read("customer_id,churned\nc1,1\nc2,0\r\n\n c3 , true\n");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(l.len(), 3);
        assert_eq!(l.get("c1"), Some(true));
        assert_eq!(l.get("c2"), Some(false));
        assert_eq!(l.get("c3"), Some(true));
        assert_eq!(l.stats().positives, 2);
        let (l, bad) = read("c1,1\nc2,0\n");
        assert!(bad.is_empty());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn bad_rows_are_reported_with_line_numbers_and_skipped() {
        let (l, bad) = read("id,churned\nc1,1\nc2,2\nc3\nc1,0\n,1\n\"c,4\",1\n\"c5,1\nc6,0.5\n");
        let lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 8, 9]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.get("c1"), Some(true), "first row of a duplicate kept");
        assert_eq!(l.get("c,4"), Some(true), "quoted field");
        assert_eq!(l.stats().rejected, 6);
    }

    #[test]
    fn a_header_is_only_accepted_first() {
        let (l, bad) = read("c1,1\ncustomer_id,churned\n");
        assert_eq!(l.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 2);
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_csv(r#""a ""q"" b",1"#).expect("valid"),
            vec!["a \"q\" b".to_string(), "1".to_string()]
        );
        assert!(split_csv(r#""a"x,1"#).is_err());
    }
}
