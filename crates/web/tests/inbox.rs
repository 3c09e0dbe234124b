//! The Inbox: filters, transcript search and keyset paging, on the page and
//! on `GET /api/v1/sessions`, on every configured backend; and the live
//! updates stream.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::App;
use http_body_util::BodyExt;
use switchboard_model::{
    AgentInput, Direction, HandoffMode, HandoffSpec, NewSession, Outcome, Region, SessionId,
    Speaker, Timestamp,
};
use switchboard_store::Store;
use tower::ServiceExt;

/// 2026-11-20T00:00:00Z.
const DAY0: i64 = 1_795_132_800_000;
const DAY: i64 = 86_400_000;

struct Seeded {
    sales: String,
    /// Inbound, Sales, day 0, resolved, "refund" in the transcript.
    refund: SessionId,
    /// Outbound, Support, day 1, logged escalation with a pending handoff.
    escalated: SessionId,
    /// Inbound, Support, day 2, abandoned; its transcript has "100%_sure".
    percent: SessionId,
}

async fn seed(store: &Store) -> Seeded {
    let agent = |name: &str| AgentInput {
        name: name.into(),
        ..Default::default()
    };
    let sales = store
        .create_agent(&agent("Sales").validate(Region::default()).unwrap())
        .await
        .unwrap();
    let support = store
        .create_agent(&agent("Support").validate(Region::default()).unwrap())
        .await
        .unwrap();
    let session = |agent, direction, at: i64| NewSession {
        agent_id: Some(agent),
        direction,
        from: "+14155550100".into(),
        to: "+14155550199".into(),
        contact_id: None,
        started_at: Timestamp::from_millis(at),
    };
    let turn = |s: SessionId, speaker, text: &'static str, at: i64| async move {
        let t = Timestamp::from_millis(at);
        store.append_turn(s, speaker, text, t, t).await.unwrap();
    };

    let refund = store
        .create_session(&session(sales.id, Direction::Inbound, DAY0 + 3_600_000))
        .await
        .unwrap()
        .id;
    turn(
        refund,
        Speaker::Caller,
        "I would like a REFUND please",
        DAY0,
    )
    .await;
    store
        .end_session(
            refund,
            Timestamp::from_millis(DAY0 + 3_700_000),
            Outcome::Resolved,
            "done",
        )
        .await
        .unwrap();

    let escalated = store
        .create_session(&session(
            support.id,
            Direction::Outbound,
            DAY0 + DAY + 60_000,
        ))
        .await
        .unwrap()
        .id;
    turn(
        escalated,
        Speaker::Caller,
        "Let me talk to a person",
        DAY0 + DAY,
    )
    .await;
    store
        .create_handoff(
            escalated,
            &HandoffSpec {
                mode: HandoffMode::LoggedEscalation,
                reason: "asked for a person".into(),
                summary: "wants a person".into(),
                preferred_channel: None,
                channel_details: None,
            },
            None,
        )
        .await
        .unwrap();
    store
        .end_session(
            escalated,
            Timestamp::from_millis(DAY0 + DAY + 120_000),
            Outcome::LoggedEscalation,
            "handoff",
        )
        .await
        .unwrap();

    let percent = store
        .create_session(&session(
            support.id,
            Direction::Inbound,
            DAY0 + 2 * DAY + 60_000,
        ))
        .await
        .unwrap()
        .id;
    turn(percent, Speaker::Ai, "Are you 100%_sure?", DAY0 + 2 * DAY).await;
    store
        .end_session(
            percent,
            Timestamp::from_millis(DAY0 + 2 * DAY + 90_000),
            Outcome::Abandoned,
            "hangup",
        )
        .await
        .unwrap();

    Seeded {
        sales: sales.id.to_string(),
        refund,
        escalated,
        percent,
    }
}

/// The session ids the API lists for `query`, newest first.
async fn api_ids(app: &App, query: &str) -> Vec<String> {
    let r = app
        .api(Method::GET, &format!("/api/v1/sessions?{query}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The session ids the Inbox page lists for `query`, newest first.
async fn page_ids(app: &App, cookie: &str, query: &str) -> Vec<String> {
    let r = app.page(&format!("/inbox?{query}"), cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
    r.body
        .split("data-session=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// SQLite, and PostgreSQL when configured (the SQLite file lives in `dir`).
async fn stores(dir: &tempfile::TempDir) -> Vec<Store> {
    switchboard_store::testing::all_stores(dir.path())
        .await
        .unwrap()
}

#[tokio::test]
async fn inbox_filters_by_agent_direction_outcome_handoff_dates_and_transcript_text() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(&dir).await {
        let backend = store.backend().name();
        let app = App::with_store(store.clone(), None).await;
        let s = seed(&store).await;
        let (cookie, _) = app.login().await;
        let (refund, escalated, percent) = (
            s.refund.to_string(),
            s.escalated.to_string(),
            s.percent.to_string(),
        );
        let day = |n: i64| Timestamp::from_millis(DAY0 + n * DAY).to_rfc3339();

        let cases: Vec<(String, String, Vec<&String>)> = vec![
            // (API query, page query, expected newest first)
            (
                String::new(),
                String::new(),
                vec![&percent, &escalated, &refund],
            ),
            (
                format!("agent={}", s.sales),
                format!("agent={}", s.sales),
                vec![&refund],
            ),
            (
                "agent=Support".into(),
                String::new(),
                vec![&percent, &escalated],
            ),
            (
                "direction=outbound".into(),
                "direction=outbound".into(),
                vec![&escalated],
            ),
            (
                "outcome=abandoned".into(),
                "outcome=abandoned".into(),
                vec![&percent],
            ),
            (
                "outcome=logged_escalation".into(),
                "outcome=logged_escalation".into(),
                vec![&escalated],
            ),
            (
                "handoff_status=pending".into(),
                "handoff=pending".into(),
                vec![&escalated],
            ),
            (
                "handoff_status=delivered".into(),
                "handoff=delivered".into(),
                vec![],
            ),
            // Case-insensitive, anywhere in any turn.
            ("q=refund".into(), "q=Refund".into(), vec![&refund]),
            ("q=a%20PERSON".into(), "q=a+person".into(), vec![&escalated]),
            (
                "q=nothing%20like%20this".into(),
                "q=nothing+like+this".into(),
                vec![],
            ),
            // `%` and `_` are literal, not wildcards.
            (
                "q=100%25_sure".into(),
                "q=100%25_sure".into(),
                vec![&percent],
            ),
            ("q=%25".into(), "q=%25".into(), vec![&percent]),
            ("q=_".into(), "q=_".into(), vec![&percent]),
            // Day 1 only: from its midnight up to the next (UTC days without script).
            (
                format!("from={}&to={}", day(1), day(2)),
                "from=2026-11-21&to=2026-11-21".into(),
                vec![&escalated],
            ),
            (
                format!("from={}", day(1)),
                "from=2026-11-21".into(),
                vec![&percent, &escalated],
            ),
            (
                format!("to={}", day(1)),
                "to=2026-11-20".into(),
                vec![&refund],
            ),
            // The browser's own bounds win over the days.
            (
                format!("from={}", day(2)),
                format!("from=2026-11-01&from_ms={}", DAY0 + 2 * DAY),
                vec![&percent],
            ),
            // Filters combine.
            (
                "agent=Support&direction=inbound&q=sure".into(),
                "direction=inbound&q=sure&outcome=abandoned".into(),
                vec![&percent],
            ),
        ];
        for (api_q, page_q, want) in &cases {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(&api_ids(&app, api_q).await, &want, "{backend} API ?{api_q}");
            if !page_q.is_empty() || api_q.is_empty() {
                assert_eq!(
                    &page_ids(&app, &cookie, page_q).await,
                    &want,
                    "{backend} page ?{page_q}"
                );
            }
        }

        // The page keeps what was asked in the form and shows the handoff state.
        let r = app.page("/inbox?q=person&handoff=pending", &cookie).await;
        assert!(r.body.contains(r#"value="person""#), "{}", r.body);
        assert!(
            r.body.contains(r#"<option value="pending" selected>"#),
            "{}",
            r.body
        );
        assert!(
            r.body.contains(r#"<td data-label="Handoff">pending</td>"#),
            "{}",
            r.body
        );
        assert!(r.body.contains(r#"href="/inbox""#), "a Clear link");
        // A value that cannot be read is named, and the rest still filters.
        let r = app.page("/inbox?from=yesterday&q=refund", &cookie).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.contains("From: `yesterday` is not a date"),
            "{}",
            r.body
        );
        assert!(r.body.contains(&refund) && !r.body.contains(&percent));
        let r = app.page("/inbox?q=zzz", &cookie).await;
        assert!(r.body.contains("No sessions match these filters."));
        // The API refuses what it cannot read, naming the parameter.
        let r = app
            .api(Method::GET, "/api/v1/sessions?from=yesterday", None)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.json()["error"]["field"], "from");
        let r = app
            .api(Method::GET, "/api/v1/sessions?handoff_status=lost", None)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    }
}

#[tokio::test]
async fn inbox_pages_to_older_sessions_without_skipping_equal_start_times() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(&dir).await {
        let backend = store.backend().name();
        let app = App::with_store(store.clone(), None).await;
        let (cookie, _) = app.login().await;
        // 60 sessions, in pairs started at the same millisecond, so a page
        // boundary falls between two sessions with equal start times.
        let mut all = Vec::new();
        for i in 0..60 {
            let s = store
                .create_session(&NewSession {
                    agent_id: None,
                    direction: Direction::Inbound,
                    from: "+14155550100".into(),
                    to: "+14155550199".into(),
                    contact_id: None,
                    started_at: Timestamp::from_millis(DAY0 + (i / 2) * 1000),
                })
                .await
                .unwrap();
            all.push(s);
        }
        all.sort_by_key(|s| std::cmp::Reverse((s.started_at, s.id.to_string())));
        let want: Vec<String> = all.iter().map(|s| s.id.to_string()).collect();

        // The page: 50, then an Older link to the other 10.
        let r = app.page("/inbox?outcome=", &cookie).await;
        let first = page_ids(&app, &cookie, "outcome=").await;
        assert_eq!(first, want[..50], "{backend}");
        let older = r
            .body
            .split("rel=\"next\"")
            .next()
            .unwrap()
            .rsplit("href=\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        assert!(older.starts_with("/inbox?before="), "{older}");
        let second = page_ids(&app, &cookie, older.trim_start_matches("/inbox?")).await;
        assert_eq!(second, want[50..], "{backend}");
        assert!(
            !app.page(&older, &cookie)
                .await
                .body
                .contains("rel=\"next\""),
            "no Older link on the last page"
        );

        // The API: the same keyset with the last session's start and id.
        let page1 = api_ids(&app, "limit=25").await;
        let last = all.iter().find(|s| s.id.to_string() == page1[24]).unwrap();
        let next = api_ids(
            &app,
            &format!(
                "limit=25&before={}&before_id={}",
                last.started_at.to_rfc3339().replace('+', "%2B"),
                last.id
            ),
        )
        .await;
        assert_eq!([page1, next].concat(), want[..50], "{backend}");
    }
}

/// Reads the next server-sent event's text, or `None` if none came in `wait`.
async fn next_event(body: &mut axum::body::Body, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .ok()??;
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let text = String::from_utf8_lossy(&data).into_owned();
        // Keep-alive comments start with ':'.
        if text.contains("event:") {
            return Some(text);
        }
    }
}

#[tokio::test]
async fn inbox_events_tell_the_page_when_sessions_or_turns_change() {
    let app = App::sqlite().await;
    let store = app.state.store.clone();

    // Only for logged-in people.
    let r = app
        .send(Request::get("/inbox/events").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let (cookie, _) = app.login().await;
    let open = |path: String| {
        let req = Request::get(path)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        app.router.clone().oneshot(req)
    };

    // The Inbox renders the version it shows; a stream opened with it stays
    // quiet until something changes.
    let page = app.page("/inbox", &cookie).await.body;
    let version = page
        .split("data-version=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let res = open(format!("/inbox/events?since={version}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = res.into_body();
    assert_eq!(
        next_event(&mut body, Duration::from_millis(1500)).await,
        None
    );
    let session = store
        .create_session(&NewSession {
            agent_id: None,
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+14155550199".into(),
            contact_id: None,
            started_at: Timestamp::from_millis(DAY0),
        })
        .await
        .unwrap();
    let event = next_event(&mut body, Duration::from_secs(5))
        .await
        .expect("a change event after a session started");
    assert!(event.contains("event: change"), "{event}");
    drop(body);

    // A live session's page listens for its own changes: a new turn.
    let page = app
        .page(&format!("/inbox/{}", session.id), &cookie)
        .await
        .body;
    assert!(
        page.contains("data-events=\"/inbox/events?session="),
        "{page}"
    );
    let version = page
        .split("data-version=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut body = open(format!(
        "/inbox/events?session={}&since={version}",
        session.id
    ))
    .await
    .unwrap()
    .into_body();
    assert_eq!(
        next_event(&mut body, Duration::from_millis(1200)).await,
        None
    );
    let t = Timestamp::from_millis(DAY0 + 1000);
    store
        .append_turn(session.id, Speaker::Caller, "hello?", t, t)
        .await
        .unwrap();
    let event = next_event(&mut body, Duration::from_secs(5))
        .await
        .expect("a change event after a turn");
    assert!(event.contains("event: change"), "{event}");

    // Once the call is over (and nothing is being delivered) the page stops listening.
    store
        .end_session(session.id, t, Outcome::Resolved, "done")
        .await
        .unwrap();
    let page = app
        .page(&format!("/inbox/{}", session.id), &cookie)
        .await
        .body;
    assert!(!page.contains("data-events="), "{page}");
    // An unknown session is a 404 page, not a stream that never reports.
    let r = app
        .page(
            &format!("/inbox/events?session={}", SessionId::new()),
            &cookie,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.page("/inbox/events?session=nope", &cookie).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_event_stream_stops_polling_when_the_browser_disconnects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = App::sqlite().await;
    let (cookie, _) = app.login().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchboard_web::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    let metrics = app.state.metrics.clone();

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /inbox/events?since=stale HTTP/1.1\r\nHost: test\r\nCookie: {cookie}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // A stale version: the first event comes at once.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains("event: change") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no change event: {seen}"));
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert_eq!(metrics.event_streams(), 1);

    // The browser goes away: the stream, and its polling, end with it.
    drop(tcp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metrics.event_streams() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
