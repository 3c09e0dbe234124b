//! The dashboard as a user drives it: log in, create an agent, bind numbers,
//! see validation errors next to the field; login rate limiting.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::App;

#[tokio::test]
async fn login_redirects_back_and_wrong_passwords_are_rate_limited() {
    let app = App::sqlite().await;
    let r = app.page("/inbox", "").await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/login?next=/inbox")
    );
    let r = app
        .form(
            Method::POST,
            "/login",
            None,
            "username=admin&password=wrong",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Wrong username or password."));
    for _ in 0..2 {
        app.form(
            Method::POST,
            "/login",
            None,
            "username=admin&password=wrong",
        )
        .await;
    }
    let r = app
        .form(
            Method::POST,
            "/login",
            None,
            "username=admin&password=correct+horse+battery",
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits out the limit"
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(app
        .state
        .metrics
        .render(true)
        .contains("switchboard_login_throttled_total 1"));
    // Open redirects are refused.
    let r = app
        .form(
            Method::POST,
            "/login",
            None,
            "username=admin&password=x&next=https%3A%2F%2Fevil.example",
        )
        .await;
    assert_ne!(r.location(), "https://evil.example");
}

#[tokio::test]
async fn channels_phone_creates_agents_and_binds_numbers() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    let r = app.page("/channels/phone", &cookie).await;
    assert!(r.body.contains("No phone agents yet"), "{}", r.body);

    // A validation error is shown next to the field, with the typed values kept.
    let bad = format!("csrf={csrf}&name=Support&handoff_mode=live_transfer&handoff_number=&greeting=Hi+there&attr_session_id=OpencxSessionId&attr_caller_phone=CallerPhone&attr_handoff_reason=HandoffReason&attr_handoff_mode=HandoffMode&attr_preferred_channel=PreferredChannel");
    let r = app
        .form(Method::POST, "/channels/phone", Some(&cookie), &bad)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("id=\"handoff_number-error\""), "{}", r.body);
    assert!(r.body.contains("Hi there"), "typed values survive");

    let good = bad.replace("handoff_number=", "handoff_number=%2B14155550123");
    let r = app
        .form(Method::POST, "/channels/phone", Some(&cookie), &good)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let agent_path = r.location().to_string();
    let agent = app.state.store.find_agent("Support").await.unwrap();
    assert_eq!(agent.spec.routing_attributes.session_id, "OpencxSessionId");
    assert_eq!(
        agent.spec.handoff_number.unwrap().to_string(),
        "+14155550123"
    );

    let r = app
        .form(
            Method::POST,
            &format!("{agent_path}/numbers"),
            Some(&cookie),
            &format!("csrf={csrf}&number=415-555-0100&label=Main"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = app.page(&agent_path, &cookie).await;
    assert!(page.body.contains("+14155550100"));

    // A second agent cannot take the number; the page names who has it.
    let other = good.replace("name=Support", "name=Sales");
    let r = app
        .form(Method::POST, "/channels/phone", Some(&cookie), &other)
        .await;
    let sales_path = r.location().to_string();
    let r = app
        .form(
            Method::POST,
            &format!("{sales_path}/numbers"),
            Some(&cookie),
            &format!("csrf={csrf}&number=%2B14155550100"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.body.contains("already bound to agent `Support`"),
        "{}",
        r.body
    );

    let list = app.page("/channels/phone", &cookie).await;
    assert!(
        list.body.contains("Sales") && list.body.contains("no number"),
        "{}",
        list.body
    );

    // Unbind, then delete.
    let r = app
        .form(
            Method::POST,
            &format!("{agent_path}/numbers/unbind"),
            Some(&cookie),
            &format!("csrf={csrf}&number=%2B14155550100"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = app
        .form(
            Method::POST,
            &format!("{agent_path}/delete"),
            Some(&cookie),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(app.state.store.list_agents().await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_nav_page_renders_for_a_logged_in_user() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    for (path, heading) in [
        ("/channels/phone", "Phone agents"),
        ("/channels/phone/new", "New phone agent"),
        ("/inbox", "Inbox"),
        ("/contacts", "Contacts"),
        ("/settings/integrations", "Salesforce"),
        ("/settings/tokens", "API tokens"),
        ("/troubleshooting", "Troubleshooting"),
    ] {
        let r = app.page(path, &cookie).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.contains(heading), "{path} shows {heading}");
        assert!(
            r.body.contains("aria-current=\"page\"") || path == "/channels/phone/new",
            "{path} marks its nav entry"
        );
    }
    let r = app
        .form(
            Method::POST,
            "/settings/tokens",
            Some(&cookie),
            &format!("csrf={csrf}&name=ci"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body.contains("sb_"), "the new token is shown once");
    let r = app
        .form(
            Method::POST,
            "/contacts",
            Some(&cookie),
            &format!("csrf={csrf}&phone=nope&name=A"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("phone-error"));
}
