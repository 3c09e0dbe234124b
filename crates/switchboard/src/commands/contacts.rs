//! `switchboard contacts list|add|show|remove|import`.
//!
//! Import reads a CSV whose header names the columns (any order), validates
//! each row on its own and upserts it by phone, so one bad row costs only
//! itself; the report names each failed row and field.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;
use switchboard_model::{Contact, ContactId, ContactInput, Region, E164};
use switchboard_store::contacts::Upserted;
use switchboard_store::Store;

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::ContactsCommand;
use crate::output::{self, or_dash, Table};
use crate::Failure;

/// The columns an import understands.
const COLUMNS: &[&str] = &["phone", "name", "email", "external_id"];

pub(crate) async fn run(app: &App, cmd: ContactsCommand) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let region = app.config.phone.default_region;
    match cmd {
        ContactsCommand::List {
            search,
            limit,
            json,
        } => {
            let contacts = store
                .list_contacts(&search, i64::from(limit.max(1)), 0)
                .await?;
            if json.json {
                return output::json(&contacts).map(|()| ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["PHONE", "NAME", "EMAIL", "EXTERNAL ID", "ID"]);
            for c in &contacts {
                table.row(vec![
                    c.phone.to_string(),
                    c.name.clone(),
                    or_dash(c.email.as_ref()),
                    or_dash(c.external_id.as_ref()),
                    c.id.to_string(),
                ]);
            }
            table.print(if search.is_empty() {
                "No contacts yet: add one with `switchboard contacts add --phone NUMBER` or import a CSV."
            } else {
                "No contacts match."
            });
        }
        ContactsCommand::Add {
            phone,
            name,
            email,
            external_id,
            json,
        } => {
            let spec = ContactInput {
                phone,
                name,
                email,
                external_id,
            }
            .validate(region)?;
            let contact = store.create_contact(&spec).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "contact.create",
                    &contact.id.to_string(),
                    json!({}),
                )
                .await?;
            if json.json {
                output::json(&contact)?;
            } else {
                println!("Added contact {} ({}).", contact.phone, contact.id);
            }
        }
        ContactsCommand::Show { contact, json } => {
            let c = find(store, &contact, region).await?;
            if json.json {
                output::json(&c)?;
            } else {
                output::fields(&[
                    ("id", c.id.to_string()),
                    ("phone", c.phone.to_string()),
                    ("name", c.name.clone()),
                    ("email", or_dash(c.email.as_ref())),
                    ("external id", or_dash(c.external_id.as_ref())),
                    ("created", c.created_at.to_string()),
                    ("updated", c.updated_at.to_string()),
                ]);
            }
        }
        ContactsCommand::Remove { contact } => {
            let c = find(store, &contact, region).await?;
            store.delete_contact(c.id).await?;
            store
                .audit(AUDIT_ACTOR, "contact.delete", &c.id.to_string(), json!({}))
                .await?;
            println!("Removed contact {} ({}).", c.phone, c.id);
        }
        ContactsCommand::Import { file, json } => {
            let text = read_input(&file)?;
            let report = import(store, &text, region).await?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "contact.import",
                    &file.display().to_string(),
                    json!({ "created": report.created, "updated": report.updated, "failed": report.failed.len() }),
                )
                .await?;
            if json.json {
                output::json(&report)?;
            } else {
                for f in &report.failed {
                    println!("row {}: {}", f.row, f.error);
                }
                println!(
                    "created {}, updated {}, failed {}",
                    report.created,
                    report.updated,
                    report.failed.len()
                );
            }
            if !report.failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A contact by id, or by phone in any common form.
async fn find(store: &Store, text: &str, region: Region) -> anyhow::Result<Contact> {
    if let Ok(id) = text.parse::<ContactId>() {
        return Ok(store.contact(id).await?);
    }
    let phone = E164::parse(text, region)?;
    store.contact_by_phone(&phone).await?.ok_or_else(|| {
        Failure::failed(format!(
            "contact not found: {phone} (`switchboard contacts list --search` finds contacts)"
        ))
    })
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    }
    Ok(text)
}

#[derive(Debug, Default, Serialize)]
struct ImportReport {
    created: u64,
    updated: u64,
    failed: Vec<RowFailure>,
}

#[derive(Debug, Serialize)]
struct RowFailure {
    /// Line number in the file; the header is row 1.
    row: u64,
    error: String,
}

async fn import(store: &Store, text: &str, region: Region) -> anyhow::Result<ImportReport> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| Failure::usage(format!("CSV header: {e}")))?
        .clone();
    let columns = Columns::from_header(&header)?;

    let mut report = ImportReport::default();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let row = e.position().map_or(0, |p| p.line());
                report.failed.push(RowFailure {
                    row,
                    error: format!("not readable as CSV: {e}"),
                });
                continue;
            }
        };
        let row = record.position().map_or(0, |p| p.line());
        if record.len() > header.len() {
            report.failed.push(RowFailure {
                row,
                error: format!(
                    "has {} fields but the header names {}",
                    record.len(),
                    header.len()
                ),
            });
            continue;
        }
        let input = columns.input(&record);
        let outcome = match input.validate(region) {
            Ok(spec) => store.upsert_contact(&spec).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((_, Upserted::Created)) => report.created += 1,
            Ok((_, Upserted::Updated)) => report.updated += 1,
            Err(error) => report.failed.push(RowFailure { row, error }),
        }
    }
    Ok(report)
}

/// Positions of the known columns in the header.
struct Columns {
    phone: usize,
    name: Option<usize>,
    email: Option<usize>,
    external_id: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> anyhow::Result<Columns> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !COLUMNS.contains(n))
            .collect();
        if !unknown.is_empty() {
            return Err(Failure::usage(format!(
                "CSV header: unknown column(s) {}; the columns are {} (phone required, any order)",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                COLUMNS.join(", ")
            )));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Failure::usage(format!(
                    "CSV header: column {n:?} appears twice"
                )));
            }
        }
        let pos = |col: &str| names.iter().position(|n| n == col);
        let phone = pos("phone").ok_or_else(|| {
            Failure::usage(format!(
                "CSV header: no phone column; the first row must name the columns, such as {}",
                COLUMNS.join(",")
            ))
        })?;
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
