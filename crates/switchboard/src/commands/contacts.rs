//! `switchboard contacts list|add|show|remove|import`.
//!
//! Import reads a CSV whose header names the columns (any order), validates
//! each row on its own and upserts it by phone, so one bad row costs only
//! itself; the report names each failed row and field. The parsing and the
//! upsert are `switchboard_web::contacts_csv`, shared with the dashboard.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use switchboard_model::{Contact, ContactId, ContactInput, Region, E164};
use switchboard_store::Store;
use switchboard_web::contacts_csv::{self, ImportError};

use crate::app::{App, AUDIT_ACTOR};
use crate::cli::ContactsCommand;
use crate::output::{self, or_dash, Table};
use crate::Failure;

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
            let report = contacts_csv::import(store, &text, region)
                .await
                .map_err(|e| match e {
                    ImportError::Csv(e) => Failure::usage(e.to_string()),
                    e => anyhow::Error::from(e),
                })?;
            store
                .audit(
                    AUDIT_ACTOR,
                    "contact.import",
                    &file.display().to_string(),
                    json!({ "created": report.created, "updated": report.updated, "failed": report.rejected.len() }),
                )
                .await?;
            if json.json {
                output::json(&report.summary())?;
            } else {
                for r in &report.rejected {
                    println!("row {}: {}", r.row, r.error);
                }
                if report.blank > 0 {
                    println!("skipped {} row(s) without any value", report.blank);
                }
                println!(
                    "created {}, updated {}, failed {}",
                    report.created,
                    report.updated,
                    report.rejected.len()
                );
            }
            if !report.rejected.is_empty() {
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
