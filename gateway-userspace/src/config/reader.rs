//! A span-aware walk over the parsed TOML document.
//!
//! The file is parsed into `toml::de::DeTable` (which keeps the byte span of every key and value)
//! and read field by field, so that every problem — unknown key, wrong type, missing key — is
//! reported with its field path and line, and so that reading goes on after a problem: the user
//! sees all of them at once.

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::Problem;

/// Collects the problems found, and turns byte offsets into 1-based line numbers.
pub(super) struct Sink {
    /// Byte offset at which each line starts; the first entry is 0.
    line_starts: Vec<usize>,
    pub(super) problems: Vec<Problem>,
}

impl Sink {
    pub(super) fn new(text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Self {
            line_starts,
            problems: Vec::new(),
        }
    }

    /// The 1-based line holding the byte at `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    pub(super) fn report(
        &mut self,
        line: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Whether a problem was reported on `field` or inside it (`field.x`, `field[1]`).
    pub(super) fn has_problem_in(&self, field: &str) -> bool {
        self.problems.iter().any(|problem| {
            problem.field.strip_prefix(field).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    }

    /// Reports a problem about a value read from the file.
    pub(super) fn report_at<T>(&mut self, at: &At<T>, message: impl Into<String>) {
        self.report(at.line, at.field.clone(), message);
    }
}

/// A value read from the file, with its field path and line.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) value: T,
    pub(super) field: String,
    pub(super) line: usize,
}

/// One TOML table being read. Creating it reports its unknown keys.
pub(super) struct TableReader<'t, 'i> {
    table: &'t DeTable<'i>,
    field: String,
    line: usize,
}

impl<'t, 'i> TableReader<'t, 'i> {
    /// The document itself; its keys are the top-level sections.
    pub(super) fn root(table: &'t Spanned<DeTable<'i>>, sink: &mut Sink, known: &[&str]) -> Self {
        Self::new(table.get_ref(), String::new(), 1, sink, known)
    }

    fn new(
        table: &'t DeTable<'i>,
        field: String,
        line: usize,
        sink: &mut Sink,
        known: &[&str],
    ) -> Self {
        let reader = Self { table, field, line };
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                sink.report(
                    sink.line(key.span().start),
                    reader.child(key.get_ref()),
                    format!("unknown key; expected one of: {}", known.join(", ")),
                );
            }
        }
        reader
    }

    /// The field path of this table, like `route_tables[0]` (empty for the document).
    pub(super) fn field(&self) -> &str {
        &self.field
    }

    /// The line where this table starts (its header, or its opening brace).
    pub(super) fn line(&self) -> usize {
        self.line
    }

    fn child(&self, key: &str) -> String {
        if self.field.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.field)
        }
    }

    fn at<T>(&self, sink: &Sink, key: &str, value: &Spanned<DeValue<'_>>, inner: T) -> At<T> {
        At {
            value: inner,
            field: self.child(key),
            line: sink.line(value.span().start),
        }
    }

    fn report_missing(&self, sink: &mut Sink, key: &str) {
        sink.report(self.line, self.child(key), "required key is missing");
    }

    /// An optional string.
    pub(super) fn string(&self, sink: &mut Sink, key: &str) -> Option<At<String>> {
        let value = self.table.get(key)?;
        let field = self.child(key);
        expect_string(sink, value, field)
    }

    /// A string that must be present.
    pub(super) fn required_string(&self, sink: &mut Sink, key: &str) -> Option<At<String>> {
        if self.table.contains_key(key) {
            self.string(sink, key)
        } else {
            self.report_missing(sink, key);
            None
        }
    }

    /// An optional integer.
    pub(super) fn integer(&self, sink: &mut Sink, key: &str) -> Option<At<i64>> {
        let value = self.table.get(key)?;
        let line = sink.line(value.span().start);
        match value.get_ref() {
            DeValue::Integer(integer) => {
                match i64::from_str_radix(integer.as_str(), integer.radix()) {
                    Ok(number) => Some(self.at(sink, key, value, number)),
                    Err(_) => {
                        sink.report(
                            line,
                            self.child(key),
                            format!("integer {integer} is too large"),
                        );
                        None
                    }
                }
            }
            other => {
                sink.report(line, self.child(key), type_mismatch("an integer", other));
                None
            }
        }
    }

    /// An optional boolean.
    pub(super) fn boolean(&self, sink: &mut Sink, key: &str) -> Option<At<bool>> {
        let value = self.table.get(key)?;
        let line = sink.line(value.span().start);
        match value.get_ref() {
            DeValue::Boolean(flag) => Some(self.at(sink, key, value, *flag)),
            other => {
                sink.report(line, self.child(key), type_mismatch("a boolean", other));
                None
            }
        }
    }

    /// An optional array of strings; `None` when the key is absent.
    pub(super) fn string_array(&self, sink: &mut Sink, key: &str) -> Option<At<Vec<At<String>>>> {
        let value = self.table.get(key)?;
        let field = self.child(key);
        let line = sink.line(value.span().start);
        let DeValue::Array(items) = value.get_ref() else {
            sink.report(
                line,
                field,
                type_mismatch("an array of strings", value.get_ref()),
            );
            return None;
        };
        let strings = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| expect_string(sink, item, format!("{field}[{index}]")))
            .collect();
        Some(At {
            value: strings,
            field,
            line,
        })
    }

    /// An optional sub-table, written `[key]`.
    pub(super) fn table(&self, sink: &mut Sink, key: &str, known: &[&str]) -> Option<Self> {
        let value = self.table.get(key)?;
        let field = self.child(key);
        let line = sink.line(value.span().start);
        match value.get_ref() {
            DeValue::Table(table) => Some(Self::new(table, field, line, sink, known)),
            other => {
                sink.report(line, field, type_mismatch("a table", other));
                None
            }
        }
    }

    /// An optional array of tables, written `[[key]]` or `key = [ { ... }, ... ]`.
    pub(super) fn table_array(&self, sink: &mut Sink, key: &str, known: &[&str]) -> Vec<Self> {
        let Some(value) = self.table.get(key) else {
            return Vec::new();
        };
        let field = self.child(key);
        let line = sink.line(value.span().start);
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                sink.report(
                    line,
                    field,
                    format!("expected an array of tables (write [[{key}]]), found a table"),
                );
                return Vec::new();
            }
            other => {
                sink.report(line, field, type_mismatch("an array of tables", other));
                return Vec::new();
            }
        };
        let mut tables = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            let item_line = sink.line(item.span().start);
            match item.get_ref() {
                DeValue::Table(table) => {
                    tables.push(Self::new(table, item_field, item_line, sink, known));
                }
                other => sink.report(item_line, item_field, type_mismatch("a table", other)),
            }
        }
        tables
    }
}

fn expect_string(
    sink: &mut Sink,
    value: &Spanned<DeValue<'_>>,
    field: String,
) -> Option<At<String>> {
    let line = sink.line(value.span().start);
    match value.get_ref() {
        DeValue::String(text) => Some(At {
            value: text.clone().into_owned(),
            field,
            line,
        }),
        other => {
            sink.report(line, field, type_mismatch("a string", other));
            None
        }
    }
}

fn type_mismatch(expected: &str, found: &DeValue<'_>) -> String {
    let found = found.type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("expected {expected}, found {article} {found}")
}
