//! The Contacts page as a user drives it: add, edit and delete a contact with
//! errors shown next to the field, and import a CSV with a report that names
//! every row it did not import.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::App;
use switchboard_model::{ContactId, ContactInput, Region};

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn add(app: &App, phone: &str, name: &str) -> ContactId {
    let spec = ContactInput {
        phone: phone.into(),
        name: name.into(),
        email: None,
        external_id: None,
    }
    .validate(Region::default())
    .unwrap();
    app.state.store.create_contact(&spec).await.unwrap().id
}

async fn actions(app: &App) -> Vec<String> {
    app.state
        .store
        .audit_entries(50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[tokio::test]
async fn a_contact_is_edited_and_deleted_from_its_page() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    let ana = add(&app, "+14155550100", "Ana").await;
    add(&app, "+14155550101", "Bo").await;
    let path = format!("/contacts/{ana}");

    let list = app.page("/contacts", &cookie).await;
    assert!(
        list.body.contains(&format!("href=\"{path}\"")),
        "each row links to its contact: {}",
        list.body
    );
    let r = app.page(&path, &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("value=\"+14155550100\""), "{}", r.body);
    assert!(r.body.contains("data-confirm="), "delete asks first");

    // A bad email is shown next to its field, with the typed values kept.
    let bad = form(&[
        ("csrf", &csrf),
        ("phone", "+14155550100"),
        ("name", "Ana Lima"),
        ("email", "not-an-email"),
    ]);
    let r = app.form(Method::POST, &path, Some(&cookie), &bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"email-error\""), "{}", r.body);
    assert!(r.body.contains("value=\"Ana Lima\""));
    // Another contact's number is refused next to the phone field.
    let taken = form(&[("csrf", &csrf), ("phone", "415 555 0101"), ("name", "Ana")]);
    let r = app.form(Method::POST, &path, Some(&cookie), &taken).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("id=\"phone-error\""), "{}", r.body);
    assert_eq!(app.state.store.contact(ana).await.unwrap().name, "Ana");

    let good = form(&[
        ("csrf", &csrf),
        ("phone", "(415) 555-0100"),
        ("name", "Ana Lima"),
        ("email", "ana@example.com"),
        ("external_id", "003A1"),
    ]);
    let r = app.form(Method::POST, &path, Some(&cookie), &good).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{path}?saved=true"));
    let r = app.page(r.location(), &cookie).await;
    assert!(r.body.contains("Saved."));
    let saved = app.state.store.contact(ana).await.unwrap();
    assert_eq!(saved.name, "Ana Lima");
    assert_eq!(saved.email.as_deref(), Some("ana@example.com"));
    assert_eq!(saved.external_id.as_deref(), Some("003A1"));

    // Deleting needs the CSRF token like every change.
    let delete = format!("{path}/delete");
    let r = app.form(Method::POST, &delete, Some(&cookie), "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .form(
            Method::POST,
            &delete,
            Some(&cookie),
            &form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/contacts")
    );
    assert!(app.state.store.contact(ana).await.is_err());
    let r = app.page(&path, &cookie).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.page("/contacts/not-an-id", &cookie).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let actions = actions(&app).await;
    for action in ["contact.update", "contact.delete"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn a_csv_import_reports_every_row_it_did_not_import() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    let old = add(&app, "+14155550101", "Old Name").await;
    let csv = "\u{feff}Name,PHONE,email\r\n\
               \"Lima, Ana\",+1 415 555 0100,ana@example.com\r\n\
               Bad Phone,call me,\r\n\
               New Name,4155550101,\r\n\
               ,,\r\n";
    let r = app
        .form(
            Method::POST,
            "/contacts/import",
            Some(&cookie),
            &form(&[("csrf", &csrf), ("csv", csv), ("filename", "leads.csv")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let report = r.body.split("id=\"import-report\"").nth(1).unwrap();
    for text in [
        "<strong>1</strong> imported as new contacts",
        "<strong>1</strong> updated existing contacts",
        "<strong>1</strong> rejected",
        "<strong>1</strong> without any value",
        "<td data-label=\"Row\">3</td>",
        "<code>Bad Phone,call me,</code>",
        "phone: `call me`",
    ] {
        assert!(report.contains(text), "the report shows {text}: {report}");
    }
    let ana = app
        .state
        .store
        .contact_by_phone(&switchboard_model::E164::parse_strict("+14155550100").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.name, "Lima, Ana");
    assert_eq!(
        app.state.store.contact(old).await.unwrap().name,
        "New Name",
        "upserted by phone"
    );
    let audit = app.state.store.audit_entries(10).await.unwrap();
    let entry = audit.iter().find(|e| e.action == "contact.import").unwrap();
    assert_eq!(entry.target, "dashboard: leads.csv");
    assert_eq!(entry.detail["failed"], 1);

    // A file the import cannot map is refused whole, its text kept to fix.
    let r = app
        .form(
            Method::POST,
            "/contacts/import",
            Some(&cookie),
            &form(&[("csrf", &csrf), ("csv", "Name,Mobile\nZed,+14155550199\n")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("no phone column"), "{}", r.body);
    assert!(
        r.body
            .contains("found &quot;Name&quot;, &quot;Mobile&quot;"),
        "{}",
        r.body
    );
    assert!(r.body.contains("Zed,+14155550199"), "the text is kept");
    assert_eq!(
        app.state
            .store
            .list_contacts("", 10, 0)
            .await
            .unwrap()
            .len(),
        2,
        "nothing imported"
    );
    let r = app
        .form(
            Method::POST,
            "/contacts/import",
            Some(&cookie),
            &form(&[("csrf", &csrf), ("csv", "")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("the CSV is empty"), "{}", r.body);
}

#[tokio::test]
async fn the_contacts_page_says_how_much_an_import_takes() {
    let app = App::sqlite().await;
    let (cookie, _) = app.login().await;
    let r = app.page("/contacts", &cookie).await;
    assert!(r.body.contains("Up to 2 MiB per import"), "{}", r.body);
    assert!(r.body.contains("data-max-bytes=\"2097152\""));
    assert!(r.body.contains("type=\"file\""));
}
