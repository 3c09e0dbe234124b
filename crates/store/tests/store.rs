//! The store's behaviour, run on every available backend (SQLite always,
//! PostgreSQL when `SWITCHBOARD_TEST_DATABASE_URL` is set, as in `make test`).

use std::sync::Arc;

use switchboard_model::*;
use switchboard_store::testing::all_stores;
use switchboard_store::{SecretBox, SessionFilter, Store, StoreError, StoreOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn agent(name: &str) -> AgentSpec {
    AgentInput {
        name: name.into(),
        ..Default::default()
    }
    .validate(Region::default())
    .expect("valid agent")
}

fn phone(s: &str) -> E164 {
    E164::parse(s, Region::default()).expect("valid phone")
}

async fn each_backend<F, Fut>(test: F) -> TestResult
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    let dir = tempfile::tempdir()?;
    for store in all_stores(dir.path()).await? {
        let backend = store.backend().name();
        test(store)
            .await
            .map_err(|e| format!("on {backend}: {e}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn agents_round_trip_and_names_are_unique() -> TestResult {
    each_backend(|store| async move {
        let mut spec = agent("Support");
        spec.routing_attributes.session_id = "OpencxSessionId".into();
        spec.handoff_mode = HandoffMode::LiveTransfer;
        spec.handoff_number = Some(HandoffTarget::Phone(phone("+14155550123")));
        spec.handoff_phrases = vec!["talk to a human".into()];
        spec.tools = vec![switchboard_model::AgentTool {
            name: "order_status".into(),
            description: "Where an order is".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
            url: "https://api.example.com/orders".into(),
            method: "GET".into(),
            timeout_ms: 1500,
        }];
        let created = store.create_agent(&spec).await?;
        assert_eq!(created.spec, spec, "every field survives the round trip");
        assert_eq!(store.find_agent("Support").await?.id, created.id);
        assert_eq!(
            store.find_agent(&created.id.to_string()).await?.id,
            created.id
        );

        let err = store.create_agent(&agent("Support")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { field: "name", .. }),
            "{err}"
        );

        let mut changed = spec.clone();
        changed.greeting = "Hi there".into();
        changed.tools.clear();
        let updated = store.update_agent(created.id, &changed).await?;
        assert_eq!(updated.spec.greeting, "Hi there");
        assert!(updated.spec.tools.is_empty(), "tools are replaced too");
        assert!(updated.updated_at >= created.updated_at);

        store.create_agent(&agent("Billing")).await?;
        let names: Vec<_> = store
            .list_agents()
            .await?
            .into_iter()
            .map(|a| a.spec.name)
            .collect();
        assert_eq!(names, ["Billing", "Support"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_number_belongs_to_one_agent_and_conflicts_name_it() -> TestResult {
    each_backend(|store| async move {
        let support = store.create_agent(&agent("Support")).await?;
        let sales = store.create_agent(&agent("Sales")).await?;
        let n = phone("+14155550100");
        store.add_number(&n, Some(support.id), "main line").await?;
        assert_eq!(
            store.agent_for_number(&n).await?.map(|a| a.id),
            Some(support.id)
        );

        let err = store.add_number(&n, Some(sales.id), "").await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(
            err,
            StoreError::Conflict {
                field: "number",
                ..
            }
        ));
        assert!(
            msg.contains("`Support`"),
            "conflict names the agent holding the number: {msg}"
        );
        let err = store.bind_number(&n, Some(sales.id)).await.unwrap_err();
        assert!(err.to_string().contains("`Support`"), "{err}");

        // Unbind, then the other agent may take it.
        store.bind_number(&n, None).await?;
        assert_eq!(store.agent_for_number(&n).await?, None);
        let bound = store.bind_number(&n, Some(sales.id)).await?;
        assert_eq!(bound.agent_id, Some(sales.id));
        assert_eq!(bound.label, "main line");

        // Deleting the agent leaves the number, unbound.
        store.delete_agent(sales.id).await?;
        assert_eq!(store.number_by_e164(&n).await?.agent_id, None);
        store.delete_number(&n).await?;
        assert!(matches!(
            store.number_by_e164(&n).await,
            Err(StoreError::NotFound { .. })
        ));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn trunk_passwords_are_encrypted_and_write_only() -> TestResult {
    each_backend(|store| async move {
        let spec = TrunkInput {
            name: "carrier".into(),
            host: "sip.example.com".into(),
            allowed_cidrs: vec!["203.0.113.0/24".into()],
            inbound_username: Some("in".into()),
            inbound_password: Some("s3cret-in".into()),
            outbound_username: Some("out".into()),
            outbound_password: Some("s3cret-out".into()),
            register: true,
            transfer: switchboard_model::TrunkTransfer::Refer,
            ..Default::default()
        }
        .validate(Region::default())?;
        let trunk = store.create_trunk(&spec).await?;
        assert!(trunk.inbound_password_set && trunk.outbound_password_set);
        assert_eq!(
            store.trunk(trunk.id).await?.transfer,
            switchboard_model::TrunkTransfer::Refer
        );
        let json = serde_json::to_string(&trunk)?;
        assert!(
            !json.contains("s3cret"),
            "the record never carries a password: {json}"
        );
        let creds = store.trunk_credentials(trunk.id).await?;
        assert_eq!(
            creds.inbound_password.map(|p| p.into_inner()).as_deref(),
            Some("s3cret-in")
        );
        assert_eq!(
            store.find_trunk("carrier").await?.allowed_cidrs,
            spec.allowed_cidrs
        );
        let err = store.create_trunk(&spec).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { field: "name", .. }));
        store.delete_trunk(trunk.id).await?;
        assert!(store.list_trunks().await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn contacts_match_by_phone_and_search() -> TestResult {
    each_backend(|store| async move {
        let ana = ContactInput {
            phone: "+1 415 555 0100".into(),
            name: "Ana Lima".into(),
            email: Some("ana@example.com".into()),
            external_id: Some("003XX0000001".into()),
        }
        .validate(Region::default())?;
        let created = store.create_contact(&ana).await?;
        assert_eq!(
            store
                .contact_by_phone(&phone("+14155550100"))
                .await?
                .map(|c| c.id),
            Some(created.id)
        );
        assert!(store
            .contact_by_phone(&phone("+14155550199"))
            .await?
            .is_none());
        let err = store.create_contact(&ana).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { field: "phone", .. }));

        let mut renamed = ana.clone();
        renamed.name = "Ana Souza".into();
        let (c, how) = store.upsert_contact(&renamed).await?;
        assert_eq!(
            (c.id, how),
            (created.id, switchboard_store::contacts::Upserted::Updated)
        );
        assert_eq!(store.list_contacts("souza", 10, 0).await?.len(), 1);
        assert_eq!(store.list_contacts("EXAMPLE.COM", 10, 0).await?.len(), 1);
        assert_eq!(store.list_contacts("nobody", 10, 0).await?.len(), 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sessions_keep_turns_in_order_with_millisecond_times() -> TestResult {
    each_backend(|store| async move {
        let a = store.create_agent(&agent("Support")).await?;
        let t0 = Timestamp::parse_rfc3339("2026-11-25T19:01:04.123Z")?;
        let s = store
            .create_session(&NewSession {
                agent_id: Some(a.id),
                direction: Direction::Inbound,
                from: "+14155550100".into(),
                to: "+14155550111".into(),
                contact_id: None,
                started_at: t0,
            })
            .await?;
        assert_eq!(s.status, SessionStatus::Ringing);
        assert_eq!(
            store.session(s.id).await?,
            s,
            "create_session returns the row exactly as stored"
        );
        store.mark_answered(s.id, t0.plus_millis(1)).await?;
        let turns = [
            (Speaker::Ai, "Hello, how can I help?"),
            (Speaker::Caller, "I need to speak with a person"),
            (Speaker::Ai, "Connecting you now."),
        ];
        for (i, (who, text)) in turns.iter().enumerate() {
            let start = t0.plus_millis(1000 * i as i64 + 7);
            store
                .append_turn(s.id, *who, text, start, start.plus_millis(999))
                .await?;
        }
        let stored = store.turns(s.id).await?;
        assert_eq!(stored.iter().map(|t| t.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(stored[1].text, "I need to speak with a person");
        assert_eq!(
            stored[1].started_at.to_rfc3339(),
            "2026-11-25T19:01:05.130Z"
        );

        let payload =
            serde_json::json!({"rule": "handoff_phrase", "matched": "speak with a person"});
        store
            .add_trace_step(s.id, Some(1), "decision", &payload, Some(3))
            .await?;
        let trace = store.trace_steps(s.id).await?;
        assert_eq!(
            (trace[0].payload.clone(), trace[0].latency_ms),
            (payload, Some(3))
        );

        store
            .end_session(
                s.id,
                t0.plus_millis(5000),
                Outcome::LoggedEscalation,
                "caller asked for a person",
            )
            .await?;
        let ended = store.session(s.id).await?;
        assert_eq!(ended.status, SessionStatus::Ended);
        assert_eq!(ended.outcome, Some(Outcome::LoggedEscalation));
        assert_eq!(ended.answered_at, Some(t0.plus_millis(1)));
        // The other side's late BYE does not rewrite the account.
        store
            .end_session(
                s.id,
                t0.plus_millis(9000),
                Outcome::Abandoned,
                "caller hung up",
            )
            .await?;
        let again = store.session(s.id).await?;
        assert_eq!(again.outcome, Some(Outcome::LoggedEscalation));
        assert_eq!(again.ended_at, Some(t0.plus_millis(5000)));
        assert_eq!(
            again.end_reason.as_deref(),
            Some("caller asked for a person")
        );
        store.set_recording(s.id, "rec.wav").await?;
        assert_eq!(
            store.session(s.id).await?.recording.as_deref(),
            Some("rec.wav")
        );

        let listed = store
            .list_sessions(&SessionFilter {
                outcome: Some(Outcome::LoggedEscalation),
                limit: 10,
                ..Default::default()
            })
            .await?;
        assert_eq!(listed.len(), 1);
        let none = store
            .list_sessions(&SessionFilter {
                outcome: Some(Outcome::Resolved),
                limit: 10,
                ..Default::default()
            })
            .await?;
        assert!(none.is_empty());
        assert!(store.handoff_for_session(s.id).await?.is_none());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn users_logins_and_tokens() -> TestResult {
    each_backend(|store| async move {
        let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(
            1_800_000_000_000,
        )));
        let store = store.with_clock(clock.clone());
        assert_eq!(store.user_count().await?, 0);
        let admin = store.create_user("admin", "correct horse").await?;
        assert!(store
            .verify_password("admin", "correct horse")
            .await?
            .is_some());
        assert!(store.verify_password("admin", "wrong").await?.is_none());
        assert!(store
            .verify_password("nobody", "correct horse")
            .await?
            .is_none());

        let (cookie, login) = store.create_login(&admin, 60_000).await?;
        let found = store.login(&cookie).await?.expect("live login");
        assert_eq!(
            (found.user.id, found.csrf_token),
            (admin.id, login.csrf_token)
        );
        clock.advance_millis(60_001);
        assert!(
            store.login(&cookie).await?.is_none(),
            "expired logins are refused"
        );

        let (cookie, _) = store.create_login(&admin, 60_000).await?;
        store.set_password("admin", "new password").await?;
        assert!(
            store.login(&cookie).await?.is_none(),
            "a new password ends sessions"
        );

        let new = store.create_api_token("ci").await?;
        assert!(new.secret.starts_with("sb_"));
        let used = store
            .verify_api_token(&new.secret)
            .await?
            .expect("valid token");
        assert_eq!(used.id, new.token.id);
        assert!(used.last_used_at.is_some());
        assert!(store.verify_api_token("sb_forged").await?.is_none());
        store.revoke_api_token(new.token.id).await?;
        assert!(store.verify_api_token(&new.secret).await?.is_none());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn settings_and_audit() -> TestResult {
    each_backend(|store| async move {
        assert_eq!(store.setting("salesforce.miaw").await?, None);
        store
            .put_setting(
                "salesforce.miaw",
                &serde_json::json!({"org_id": "00D000000000001"}),
            )
            .await?;
        store
            .put_setting(
                "salesforce.miaw",
                &serde_json::json!({"org_id": "00D000000000002"}),
            )
            .await?;
        assert_eq!(
            store.setting("salesforce.miaw").await?,
            Some(serde_json::json!({"org_id": "00D000000000002"}))
        );
        store
            .audit(
                "user:admin",
                "agent.create",
                "Support",
                serde_json::json!({}),
            )
            .await?;
        let entries = store.audit_entries(10).await?;
        assert_eq!(entries[0].action, "agent.create");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unreachable_database_is_reported_as_unavailable() -> TestResult {
    // Port 1 on loopback: nothing listens there.
    let err = Store::connect(
        "postgresql://sb:pw@127.0.0.1:1/sb",
        StoreOptions {
            acquire_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        SecretBox::ephemeral(),
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let err = Store::connect("mysql://x", StoreOptions::default(), SecretBox::ephemeral())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sqlite://"), "{err}");
    Ok(())
}

/// The call path's session writes (on SQLite through a connection of their
/// own) from many calls at once: every row ends complete, reads see them at
/// once, and `close` still returns (the pool waits for every connection).
#[tokio::test]
async fn concurrent_call_writes_land_and_close_returns() -> TestResult {
    for max_connections in [1, 8] {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("calls.db").display());
        let options = StoreOptions {
            max_connections,
            ..StoreOptions::default()
        };
        let store = Store::connect(&url, options, SecretBox::ephemeral()).await?;
        store.migrate().await?;
        let t0 = Timestamp::parse_rfc3339("2026-11-26T03:00:00Z")?;
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let s = store
                        .create_session(&NewSession {
                            agent_id: None,
                            direction: Direction::Inbound,
                            from: format!("+1415555{i:04}"),
                            to: "+14155550111".into(),
                            contact_id: None,
                            started_at: t0,
                        })
                        .await?;
                    store.mark_answered(s.id, t0.plus_millis(5)).await?;
                    store
                        .end_session(
                            s.id,
                            t0.plus_millis(900),
                            Outcome::Resolved,
                            "caller hung up",
                        )
                        .await?;
                    Ok::<_, StoreError>(s.id)
                })
            })
            .collect();
        for call in calls {
            let id = call.await??;
            let row = store.session(id).await?;
            assert_eq!(
                row.status,
                SessionStatus::Ended,
                "{max_connections} connections"
            );
            assert_eq!(row.answered_at, Some(t0.plus_millis(5)));
            assert_eq!(row.end_reason.as_deref(), Some("caller hung up"));
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), store.close())
            .await
            .map_err(|_| format!("close hung with {max_connections} connections"))?;
    }
    Ok(())
}
