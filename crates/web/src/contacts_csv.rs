//! Contacts from CSV, for `switchboard contacts import` and the dashboard's
//! Contacts page.
//!
//! The first row names the columns, in any order and case: `phone`
//! (required), `name`, `email`, `external_id`. A header the import cannot
//! map refuses the whole file before anything is stored ([`CsvError`]).
//! After that every row stands alone: [`parse`] (pure) turns each into a
//! validated [`ContactSpec`] or a [`Rejected`] row carrying the row as
//! written and the reason; [`import`] then upserts the good rows by phone,
//! so one bad row costs only itself and nothing is dropped without a word.
//!
//! Row numbers are lines of the file, the header being row 1, so they match
//! what an editor shows (a quoted field spanning lines counts from its first).

use serde::Serialize;
use switchboard_model::{ContactInput, ContactSpec, ModelError, Region};
use switchboard_store::contacts::Upserted;
use switchboard_store::{Store, StoreError};

/// The columns an import understands.
pub const COLUMNS: &[&str] = &["phone", "name", "email", "external_id"];

/// How much of a rejected row a report repeats (in characters).
const RAW_MAX_CHARS: usize = 200;

/// Why a whole file is refused; nothing was imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    #[error("the CSV is empty: its first row must name the columns, such as {}", COLUMNS.join(","))]
    Empty,
    #[error("CSV header: {0}")]
    Header(#[source] csv::Error),
    #[error(
        "CSV header: no phone column (found {}); the first row must name the columns, such as {}",
        quoted(.found),
        COLUMNS.join(",")
    )]
    NoPhoneColumn { found: Vec<String> },
    #[error(
        "CSV header: unknown column(s) {}; the columns are {} (phone required, any order)",
        quoted(.unknown),
        COLUMNS.join(", ")
    )]
    UnknownColumns { unknown: Vec<String> },
    #[error("CSV header: column {column:?} appears twice")]
    DuplicateColumn { column: String },
}

/// Why an import stopped: the file was refused, or the database failed
/// part-way (the rows before `row` are stored).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error("import stopped at row {row} after {created} created and {updated} updated: {source}")]
    Store {
        row: u64,
        created: u64,
        updated: u64,
        #[source]
        source: StoreError,
    },
}

/// Why one row was not imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    #[error("not readable as CSV: {0}")]
    Unreadable(#[source] csv::Error),
    #[error("has {fields} fields but the header names {columns}")]
    TooManyFields { fields: usize, columns: usize },
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// The store refused this row (such as a phone number taken meanwhile).
    #[error(transparent)]
    NotSaved(StoreError),
}

/// A row that was not imported, as written in the file.
#[derive(Debug)]
pub struct Rejected {
    /// Line number in the file; the header is row 1.
    pub row: u64,
    /// The row's text, cut to 200 characters.
    pub raw: String,
    pub error: RowError,
}

/// One row that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow {
    pub row: u64,
    pub raw: String,
    pub spec: ContactSpec,
}

/// A file split into contacts ready to store and the rows that are not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub valid: Vec<ParsedRow>,
    pub rejected: Vec<Rejected>,
    /// Rows with no value in any column (such as `,,,`), skipped. Empty
    /// lines are not rows and are not counted.
    pub blank: u64,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// New contacts.
    pub created: u64,
    /// Existing contacts (same phone) overwritten by a row.
    pub updated: u64,
    /// Rows with no value in any column, skipped.
    pub blank: u64,
    /// Rows not imported, in file order.
    pub rejected: Vec<Rejected>,
}

impl ImportReport {
    /// The report as `{"created", "updated", "blank", "failed": [{"row", "raw", "error"}]}`.
    pub fn summary(&self) -> ImportSummary {
        ImportSummary {
            created: self.created,
            updated: self.updated,
            blank: self.blank,
            failed: self
                .rejected
                .iter()
                .map(|r| FailedRow {
                    row: r.row,
                    raw: r.raw.clone(),
                    error: r.error.to_string(),
                })
                .collect(),
        }
    }
}

/// [`ImportReport`] in a serializable form (the CLI's `--json`).
#[derive(Debug, Serialize)]
pub struct ImportSummary {
    pub created: u64,
    pub updated: u64,
    pub blank: u64,
    pub failed: Vec<FailedRow>,
}

#[derive(Debug, Serialize)]
pub struct FailedRow {
    pub row: u64,
    pub raw: String,
    pub error: String,
}

/// Reads `text` as CSV and validates every row; numbers without a country
/// code are read in `region`.
pub fn parse(text: &str, region: Region) -> Result<Parsed, CsvError> {
    // Spreadsheets often save UTF-8 with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(CsvError::Header)?.clone();
    if header.iter().all(str::is_empty) {
        return Err(CsvError::Empty);
    }
    let columns = Columns::from_header(&header)?;

    let mut parsed = Parsed::default();
    let mut record = csv::StringRecord::new();
    loop {
        let before = reader.position().byte();
        let result = reader.read_record(&mut record);
        let end = reader.position().byte();
        match result {
            Ok(false) => break,
            Ok(true) => {
                let (row, start) = record.position().map_or((0, before), |p| locate(text, p));
                let raw = raw_row(text, start, end);
                if record.iter().all(str::is_empty) {
                    parsed.blank += 1;
                } else if record.len() > header.len() {
                    parsed.rejected.push(Rejected {
                        row,
                        raw,
                        error: RowError::TooManyFields {
                            fields: record.len(),
                            columns: header.len(),
                        },
                    });
                } else {
                    match columns.input(&record).validate(region) {
                        Ok(spec) => parsed.valid.push(ParsedRow { row, raw, spec }),
                        Err(e) => parsed.rejected.push(Rejected {
                            row,
                            raw,
                            error: e.into(),
                        }),
                    }
                }
            }
            Err(e) => {
                let (row, start) = e.position().map_or((0, before), |p| locate(text, p));
                parsed.rejected.push(Rejected {
                    row,
                    raw: raw_row(text, start, end),
                    error: RowError::Unreadable(e),
                });
                // A reader that cannot move past the error would loop forever.
                if end <= before {
                    break;
                }
            }
        }
    }
    Ok(parsed)
}

/// Parses `text` and upserts each valid row by phone, in file order.
pub async fn import(
    store: &Store,
    text: &str,
    region: Region,
) -> Result<ImportReport, ImportError> {
    let parsed = parse(text, region)?;
    let mut report = ImportReport {
        blank: parsed.blank,
        ..ImportReport::default()
    };
    let mut rejected = parsed.rejected;
    for row in parsed.valid {
        match store.upsert_contact(&row.spec).await {
            Ok((_, Upserted::Created)) => report.created += 1,
            Ok((_, Upserted::Updated)) => report.updated += 1,
            // About this row alone (another writer took the number, or
            // deleted the contact between lookup and update).
            Err(e @ (StoreError::Conflict { .. } | StoreError::NotFound { .. })) => {
                rejected.push(Rejected {
                    row: row.row,
                    raw: row.raw,
                    error: RowError::NotSaved(e),
                });
            }
            // The database itself failed: every further row would too.
            Err(source) => {
                return Err(ImportError::Store {
                    row: row.row,
                    created: report.created,
                    updated: report.updated,
                    source,
                })
            }
        }
    }
    rejected.sort_by_key(|r| r.row);
    report.rejected = rejected;
    Ok(report)
}

/// Positions of the known columns in the header.
#[derive(Debug)]
struct Columns {
    phone: usize,
    name: Option<usize>,
    email: Option<usize>,
    external_id: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Columns, CsvError> {
        let names: Vec<String> = header.iter().map(str::to_lowercase).collect();
        let pos = |col: &str| names.iter().position(|n| n == col);
        // A missing phone column usually means the first row is data, so say
        // what was found rather than listing it all as unknown columns.
        let Some(phone) = pos("phone") else {
            return Err(CsvError::NoPhoneColumn {
                found: header.iter().map(str::to_string).collect(),
            });
        };
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !COLUMNS.contains(&n.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(CsvError::UnknownColumns { unknown });
        }
        if let Some((_, n)) = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
        {
            return Err(CsvError::DuplicateColumn { column: n.clone() });
        }
        Ok(Columns {
            phone,
            name: pos("name"),
            email: pos("email"),
            external_id: pos("external_id"),
        })
    }

    fn input(&self, record: &csv::StringRecord) -> ContactInput {
        let get = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        };
        ContactInput {
            phone: get(Some(self.phone)).unwrap_or_default(),
            name: get(self.name).unwrap_or_default(),
            email: get(self.email),
            external_id: get(self.external_id),
        }
    }
}

/// The line and byte offset where a record starts. After a CRLF line end the
/// reader puts the next record at the `\n`, still on the line before.
fn locate(text: &str, p: &csv::Position) -> (u64, u64) {
    let at_lf = usize::try_from(p.byte())
        .ok()
        .and_then(|i| text.as_bytes().get(i))
        == Some(&b'\n');
    (p.line() + u64::from(at_lf), p.byte() + u64::from(at_lf))
}

/// The text of the row between two byte offsets, without its line break,
/// cut to [`RAW_MAX_CHARS`].
fn raw_row(text: &str, start: u64, end: u64) -> String {
    let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
        return String::new();
    };
    let raw = text
        .get(start..end)
        .unwrap_or("")
        .trim_end_matches(['\r', '\n']);
    match raw.char_indices().nth(RAW_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_string(),
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_ok(text: &str) -> Parsed {
        parse(text, Region::default()).unwrap()
    }

    fn phones(p: &Parsed) -> Vec<&str> {
        p.valid.iter().map(|r| r.spec.phone.as_str()).collect()
    }

    #[test]
    fn headers_map_in_any_order_and_case() {
        let p = parse_ok(
            "EMAIL, External_ID ,Name,PHONE\nana@example.com,003A1,Ana Lima,415 555 0100\n",
        );
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let spec = &p.valid[0].spec;
        assert_eq!(spec.phone.as_str(), "+14155550100");
        assert_eq!(spec.name, "Ana Lima");
        assert_eq!(spec.email.as_deref(), Some("ana@example.com"));
        assert_eq!(spec.external_id.as_deref(), Some("003A1"));
        assert_eq!(p.valid[0].row, 2);
    }

    #[test]
    fn only_phone_is_required() {
        let p = parse_ok("phone\n+14155550100\n");
        assert_eq!(phones(&p), ["+14155550100"]);
        assert_eq!(p.valid[0].spec.name, "");
        assert_eq!(p.valid[0].spec.email, None);
    }

    #[test]
    fn a_missing_phone_column_refuses_the_file_naming_the_columns_found() {
        let err = parse("Name,E-mail\nAna,ana@example.com\n", Region::default()).unwrap_err();
        assert!(matches!(err, CsvError::NoPhoneColumn { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no phone column"), "{msg}");
        assert!(msg.contains(r#"found "Name", "E-mail""#), "{msg}");
        assert!(msg.contains("phone,name,email,external_id"), "{msg}");
        // A file without a header row says which values it took for names.
        let msg = parse("+14155550100,Ana\n", Region::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(r#""+14155550100", "Ana""#), "{msg}");
    }

    #[test]
    fn unknown_and_repeated_columns_refuse_the_file() {
        let msg = parse(
            "phone,nmae,company\n+14155550100,Ana,Acme\n",
            Region::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains(r#""nmae", "company""#), "{msg}");
        assert!(msg.contains("phone, name, email, external_id"), "{msg}");
        let err = parse("phone,name,Name\n", Region::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"CSV header: column "name" appears twice"#
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        for text in ["", "\n\n", "\u{feff}"] {
            let err = parse(text, Region::default()).unwrap_err();
            assert!(matches!(err, CsvError::Empty), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn a_bad_phone_rejects_only_its_row_with_the_row_as_written() {
        let p = parse_ok("phone,name\n+14155550100,Ana\ncall me,Bo\n+14155550102,Cy\n");
        assert_eq!(phones(&p), ["+14155550100", "+14155550102"]);
        assert_eq!(p.rejected.len(), 1);
        let bad = &p.rejected[0];
        assert_eq!(bad.row, 3);
        assert_eq!(bad.raw, "call me,Bo");
        assert!(matches!(&bad.error, RowError::Invalid(e) if e.field() == "phone"));
        assert!(
            bad.error.to_string().starts_with("phone: `call me`"),
            "{}",
            bad.error
        );
    }

    #[test]
    fn every_invalid_row_is_reported() {
        let p = parse_ok(
            "phone,email\n,ana@example.com\n+14155550101,not-an-email\n+14155550102,a@b.c,extra\n",
        );
        assert!(p.valid.is_empty());
        let rows: Vec<(u64, String)> = p
            .rejected
            .iter()
            .map(|r| (r.row, r.error.to_string()))
            .collect();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].0, 2);
        assert!(rows[0].1.starts_with("phone:"), "{rows:?}");
        assert!(rows[1].1.starts_with("email: `not-an-email`"), "{rows:?}");
        assert_eq!(rows[2], (4, "has 3 fields but the header names 2".into()));
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let p = parse_ok("\u{feff}phone,name\n+14155550100,Ana\n");
        assert_eq!(phones(&p), ["+14155550100"]);
        let p = parse_ok("\u{feff}\"phone\",\"name\"\r\n+14155550100,Ana\r\n");
        assert_eq!(phones(&p), ["+14155550100"]);
        assert_eq!(p.valid[0].raw, "+14155550100,Ana");
        let p = parse_ok("phone,name\r\n+14155550100,Ana\r\nnope,Bo\r\n");
        assert_eq!(
            (p.rejected[0].row, p.rejected[0].raw.as_str()),
            (3, "nope,Bo")
        );
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        let p = parse_ok(
            "phone,name\n\"+1 415 555 0100\",\"Lima, Ana \"\"Nana\"\"\"\n+14155550102,Cy\n",
        );
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.valid[0].spec.name, "Lima, Ana \"Nana\"");
        assert_eq!(
            p.valid[0].raw,
            "\"+1 415 555 0100\",\"Lima, Ana \"\"Nana\"\"\""
        );
        // The multi-line name is refused by validation; its row is where it starts.
        let p = parse_ok("phone,name\n+14155550101,\"Bo\nJr\"\nbad,Cy\n");
        let rows: Vec<u64> = p.rejected.iter().map(|r| r.row).collect();
        assert_eq!(rows, [2, 4], "{:?}", p.rejected);
    }

    #[test]
    fn empty_lines_are_skipped_and_blank_rows_counted() {
        let p = parse_ok("phone,name\n\n+14155550100,Ana\n\r\n,\n  ,  \n+14155550101,Bo\n\n");
        assert_eq!(phones(&p), ["+14155550100", "+14155550101"]);
        assert_eq!(p.valid[1].row, 7, "rows are lines of the file");
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.blank, 2);
    }

    #[test]
    fn short_rows_leave_later_columns_empty() {
        let p = parse_ok("phone,name,email\n+14155550100\n");
        assert_eq!(phones(&p), ["+14155550100"]);
        assert_eq!(p.valid[0].spec.email, None);
    }

    #[test]
    fn long_rows_are_cut_in_the_report() {
        let text = format!("phone,name\nnope,{}\n", "é".repeat(500));
        let p = parse_ok(&text);
        let raw = &p.rejected[0].raw;
        assert_eq!(raw.chars().count(), RAW_MAX_CHARS + 1);
        assert!(raw.ends_with('…'));
    }

    #[test]
    fn the_summary_carries_every_failure() {
        let p = parse_ok("phone\nnope\n");
        let report = ImportReport {
            created: 1,
            rejected: p.rejected,
            ..ImportReport::default()
        };
        let json = serde_json::to_value(report.summary()).unwrap();
        assert_eq!(json["created"], 1);
        assert_eq!(json["failed"][0]["row"], 2);
        assert_eq!(json["failed"][0]["raw"], "nope");
        assert!(json["failed"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("phone:"));
    }
}
