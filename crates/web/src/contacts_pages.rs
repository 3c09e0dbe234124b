//! Contacts: list and search, add, edit and delete one, and import many from
//! CSV with a report of every row that was not imported.
//!
//! The import form posts the CSV as text (`application/x-www-form-urlencoded`,
//! like every other form, so the CSRF check reads it); a few lines of page
//! script read a chosen file into the text box first. Parsing and the upsert
//! by phone are [`crate::contacts_csv`], shared with the CLI.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use serde_json::json;
use switchboard_model::{Contact, ContactId, ContactInput};

use crate::api::audit;
use crate::auth::{see_other, Caller};
use crate::contacts_csv::{self, ImportError, ImportReport, COLUMNS};
use crate::error::ApiError;
use crate::pages::{
    csrf_field, error_banner, html_response, layout, page_error, text_input, time, Nav,
};
use crate::routes::BODY_LIMIT;
use crate::AppState;

/// Contacts listed on one page.
const LIST_LIMIT: i64 = 200;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactsQuery {
    q: String,
}

/// The add and edit forms as submitted (strings, so a bad value is shown
/// back next to its field).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactForm {
    phone: String,
    name: String,
    email: String,
    external_id: String,
}

impl ContactForm {
    fn from_contact(c: &Contact) -> Self {
        Self {
            phone: c.phone.as_str().to_string(),
            name: c.name.clone(),
            email: c.email.clone().unwrap_or_default(),
            external_id: c.external_id.clone().unwrap_or_default(),
        }
    }

    fn to_input(&self) -> ContactInput {
        ContactInput {
            phone: self.phone.clone(),
            name: self.name.clone(),
            email: Some(self.email.clone()),
            external_id: Some(self.external_id.clone()),
        }
    }
}

/// The import form: the CSV text and, when it came from a file, its name.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImportForm {
    csv: String,
    filename: String,
}

/// What the Contacts page shows besides the list.
#[derive(Default)]
struct ContactsView<'a> {
    q: &'a str,
    add: ContactForm,
    add_error: Option<&'a ApiError>,
    import_text: &'a str,
    import_error: Option<&'a str>,
    report: Option<&'a ImportReport>,
}

pub async fn contacts_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ContactsQuery>,
) -> Response {
    let view = ContactsView {
        q: &q.q,
        ..ContactsView::default()
    };
    render_contacts(&s, &caller, view, StatusCode::OK).await
}

pub async fn create_contact_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ContactForm>,
) -> Response {
    let result = async {
        let spec = form.to_input().validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.create_contact(&spec).await?)
    }
    .await;
    match result {
        Ok(c) => {
            audit(&s, &caller, "contact.create", &c.id.to_string(), json!({})).await;
            see_other("/contacts")
        }
        Err(e) if e.status().is_client_error() => {
            let status = e.status();
            let view = ContactsView {
                add: form,
                add_error: Some(&e),
                ..ContactsView::default()
            };
            render_contacts(&s, &caller, view, status).await
        }
        Err(e) => page_error(e),
    }
}

/// Imports the posted CSV and shows the Contacts page with the report.
pub async fn import_contacts_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ImportForm>,
) -> Response {
    match contacts_csv::import(&s.store, &form.csv, s.settings.default_region).await {
        Ok(report) => {
            let source = match form.filename.trim() {
                "" => "dashboard: pasted CSV".to_string(),
                name => format!("dashboard: {}", name.chars().take(200).collect::<String>()),
            };
            audit(
                &s,
                &caller,
                "contact.import",
                &source,
                json!({ "created": report.created, "updated": report.updated, "failed": report.rejected.len() }),
            )
            .await;
            let view = ContactsView {
                report: Some(&report),
                ..ContactsView::default()
            };
            render_contacts(&s, &caller, view, StatusCode::OK).await
        }
        // The whole file was refused: keep the text so it can be fixed.
        Err(ImportError::Csv(e)) => {
            let message = e.to_string();
            let view = ContactsView {
                import_text: &form.csv,
                import_error: Some(&message),
                ..ContactsView::default()
            };
            render_contacts(&s, &caller, view, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(ImportError::Store {
            row,
            created,
            updated,
            source,
        }) => {
            let e = ApiError::from(source);
            let message = format!(
                "The import stopped at row {row}: {e}. Rows before it were imported ({created} new, {updated} updated); importing the same file again is safe."
            );
            let view = ContactsView {
                import_text: &form.csv,
                import_error: Some(&message),
                ..ContactsView::default()
            };
            render_contacts(&s, &caller, view, e.status()).await
        }
    }
}

async fn render_contacts(
    s: &AppState,
    caller: &Caller,
    view: ContactsView<'_>,
    status: StatusCode,
) -> Response {
    let contacts = match s.store.list_contacts(view.q, LIST_LIMIT, 0).await {
        Ok(c) => c,
        Err(e) => return page_error(e),
    };
    let error = view.add_error;
    let body = html! {
        @if let Some(report) = view.report { (import_report(report)) }
        form.inline role="search" method="get" action="/contacts" {
            label for="q" { "Search" }
            input id="q" name="q" value=(view.q) placeholder="Name, phone or email";
            button type="submit" { "Search" }
        }
        @if contacts.is_empty() {
            p.empty {
                @if view.q.is_empty() { "No contacts. Callers whose number matches a contact get an authenticated Salesforce identity." }
                @else { "No contacts match." }
            }
        } @else {
            table.contacts {
                thead { tr { th { "Name" } th { "Phone" } th { "Email" } th { "External id" } } }
                tbody {
                    @for c in &contacts {
                        tr {
                            td data-label="Name" {
                                a href=(format!("/contacts/{}", c.id)) {
                                    @if c.name.is_empty() { "(no name)" } @else { (c.name) }
                                }
                            }
                            td data-label="Phone" { (c.phone.as_str()) }
                            td data-label="Email" { (c.email.as_deref().unwrap_or("")) }
                            td data-label="External id" { (c.external_id.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if i64::try_from(contacts.len()).is_ok_and(|n| n >= LIST_LIMIT) {
                p.muted { "Showing the first " (LIST_LIMIT) "; search to find others." }
            }
        }
        h2 { "Add a contact" }
        (error_banner(error))
        form method="post" action="/contacts" {
            (csrf_field(caller))
            (text_input("Phone", "phone", &view.add.phone, "", error))
            (text_input("Name", "name", &view.add.name, "", error))
            (text_input("Email", "email", &view.add.email, "", error))
            (text_input("External id", "external_id", &view.add.external_id, "The contact's id in your CRM", error))
            button type="submit" { "Add contact" }
        }
        (import_form(caller, view.import_text, view.import_error))
    };
    html_response(status, layout("Contacts", caller, Nav::Contacts, body))
}

fn import_form(caller: &Caller, text: &str, error: Option<&str>) -> Markup {
    let placeholder = format!(
        "{}\n+14155550100,Ana Lima,ana@example.com,003A1",
        COLUMNS.join(",")
    );
    html! {
        h2 id="import-heading" { "Import from CSV" }
        p.muted {
            "The first row names the columns, in any order: "
            code { "phone" } " (required), " code { "name" } ", " code { "email" } ", " code { "external_id" } ". "
            "A row whose phone matches an existing contact updates it; rows that cannot be imported are listed with the reason. "
            "Up to " (BODY_LIMIT / (1024 * 1024)) " MiB per import as the form sends it, which is about 1 MB of CSV: "
            "split larger files, or use " code { "switchboard contacts import FILE.csv" } "."
        }
        @if let Some(e) = error { div.error role="alert" id="import-error" { (e) } }
        form.import method="post" action="/contacts/import" id="import" data-max-bytes=(BODY_LIMIT) aria-labelledby="import-heading" {
            (csrf_field(caller))
            input type="hidden" name="filename" id="import-filename";
            div.field {
                label for="csv-file" { "CSV file" }
                input type="file" id="csv-file" accept=".csv,text/csv,text/plain";
                small { "Read in this browser into the box below; nothing is sent until you press Import." }
            }
            div.field {
                label for="csv" { "CSV text" }
                textarea id="csv" name="csv" rows="8" spellcheck="false" placeholder=(placeholder) aria-describedby="import-size" { (text) }
                small.field-error id="import-size" role="alert" {}
            }
            button type="submit" { "Import" }
        }
        script { (PreEscaped(IMPORT_SCRIPT)) }
    }
}

/// Reads a chosen file into the text box and refuses, before sending, a form
/// larger than the server accepts.
const IMPORT_SCRIPT: &str = r#"(function () {
  const form = document.getElementById("import");
  if (!form) return;
  const file = document.getElementById("csv-file");
  const text = document.getElementById("csv");
  const note = document.getElementById("import-size");
  const max = Number(form.dataset.maxBytes);
  const mib = (n) => (n / 1048576).toFixed(1) + " MiB";
  file.addEventListener("change", async () => {
    note.textContent = "";
    const f = file.files[0];
    if (!f) return;
    if (f.size > max) {
      note.textContent = f.name + " is " + mib(f.size) + ": larger than one import takes (" + mib(max) + "). Split it, or use the CLI.";
      file.value = "";
      return;
    }
    text.value = await f.text();
    form.elements.filename.value = f.name;
  });
  form.addEventListener("submit", (e) => {
    const size = new Blob([new URLSearchParams(new FormData(form)).toString()]).size;
    if (size > max) {
      e.preventDefault();
      note.textContent = "This CSV is " + mib(size) + " as the form sends it, more than one import takes (" + mib(max) + "). Split it, or use the CLI.";
    }
  });
})();"#;

fn import_report(report: &ImportReport) -> Markup {
    let rejected = report.rejected.len();
    html! {
        section.import-report id="import-report" role="status" aria-labelledby="import-report-heading" {
            h2 id="import-report-heading" { "Import report" }
            ul.counts {
                li { strong { (report.created) } " imported as new contacts" }
                li { strong { (report.updated) } " updated existing contacts (same phone)" }
                li { strong { (rejected) } " rejected, listed below" }
                @if report.blank > 0 { li { strong { (report.blank) } " without any value, skipped" } }
            }
            @if rejected > 0 {
                table.rejected {
                    caption { "Rejected rows: not imported. Fix them and import just these rows again." }
                    thead { tr { th { "Row" } th { "As written" } th { "Reason" } } }
                    tbody {
                        @for r in &report.rejected {
                            tr {
                                td data-label="Row" { (r.row) }
                                td data-label="As written" { code { (r.raw) } }
                                td data-label="Reason" { (r.error) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One contact

/// The contact named by the `{id}` path segment of a page route; an unknown
/// id renders the error page instead of reaching the handler.
pub struct PageContact(pub Contact);

impl axum::extract::FromRequestParts<AppState> for PageContact {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = id
            .parse::<ContactId>()
            .map_err(|_| page_error(ApiError::not_found("contact", &id)))?;
        s.store
            .contact(id)
            .await
            .map(PageContact)
            .map_err(page_error)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SavedQuery {
    saved: bool,
}

pub async fn contact_page(
    Extension(caller): Extension<Caller>,
    Query(q): Query<SavedQuery>,
    PageContact(contact): PageContact,
) -> Response {
    let form = ContactForm::from_contact(&contact);
    render_contact(&caller, &contact, &form, None, q.saved, StatusCode::OK)
}

pub async fn update_contact_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageContact(contact): PageContact,
    Form(form): Form<ContactForm>,
) -> Response {
    let result = async {
        let spec = form.to_input().validate(s.settings.default_region)?;
        Ok::<_, ApiError>(s.store.update_contact(contact.id, &spec).await?)
    }
    .await;
    match result {
        Ok(updated) => {
            audit(
                &s,
                &caller,
                "contact.update",
                &updated.id.to_string(),
                json!({}),
            )
            .await;
            see_other(&format!("/contacts/{}?saved=true", updated.id))
        }
        Err(e) if e.status().is_client_error() => {
            render_contact(&caller, &contact, &form, Some(&e), false, e.status())
        }
        Err(e) => page_error(e),
    }
}

pub async fn delete_contact_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PageContact(contact): PageContact,
) -> Response {
    if let Err(e) = s.store.delete_contact(contact.id).await {
        return page_error(e);
    }
    audit(
        &s,
        &caller,
        "contact.delete",
        &contact.id.to_string(),
        json!({}),
    )
    .await;
    see_other("/contacts")
}

fn render_contact(
    caller: &Caller,
    contact: &Contact,
    form: &ContactForm,
    error: Option<&ApiError>,
    saved: bool,
    status: StatusCode,
) -> Response {
    let title = if contact.name.is_empty() {
        contact.phone.as_str().to_string()
    } else {
        contact.name.clone()
    };
    let action = format!("/contacts/{}", contact.id);
    let body = html! {
        p.actions { a href="/contacts" { "← All contacts" } }
        @if saved { div.notice role="status" { "Saved." } }
        (error_banner(error))
        form method="post" action=(action) {
            (csrf_field(caller))
            (text_input("Phone", "phone", &form.phone, "", error))
            (text_input("Name", "name", &form.name, "", error))
            (text_input("Email", "email", &form.email, "", error))
            (text_input("External id", "external_id", &form.external_id, "The contact's id in your CRM", error))
            button type="submit" { "Save" }
        }
        dl.meta {
            dt { "Id" } dd { code { (contact.id) } }
            dt { "Created" } dd { (time(contact.created_at)) }
            dt { "Updated" } dd { (time(contact.updated_at)) }
        }
        h2 { "Delete" }
        form method="post" action=(format!("{action}/delete")) data-confirm=(format!("Delete contact {}? Callers from {} will no longer be recognised.", title, contact.phone.as_str())) {
            (csrf_field(caller))
            button.danger type="submit" { "Delete contact" }
        }
    };
    html_response(status, layout(&title, caller, Nav::Contacts, body))
}
