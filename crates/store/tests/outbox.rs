//! Handoffs and the outbox on every backend: one transaction for handoff +
//! job + session outcome, leases, retries, dead letters, re-drive, and
//! concurrent workers never holding the same job.

use std::collections::HashSet;
use std::sync::Arc;

use switchboard_model::*;
use switchboard_store::testing::all_stores;
use switchboard_store::{Store, StoreError, HANDOFF_JOB};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn session_with_turns(
    store: &Store,
    turns: usize,
) -> Result<Session, Box<dyn std::error::Error>> {
    let s = store
        .create_session(&NewSession {
            agent_id: None,
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+14155550111".into(),
            contact_id: None,
            started_at: Timestamp::from_millis(1_800_000_000_000),
        })
        .await?;
    for i in 0..turns {
        let t = Timestamp::from_millis(1_800_000_000_000 + i as i64 * 1000);
        store
            .append_turn(
                s.id,
                if i % 2 == 0 {
                    Speaker::Ai
                } else {
                    Speaker::Caller
                },
                &format!("turn {i}"),
                t,
                t,
            )
            .await?;
    }
    Ok(s)
}

fn spec() -> HandoffSpec {
    HandoffInput {
        reason: "Caller asked for a person".into(),
        ..Default::default()
    }
    .validate(HandoffMode::LoggedEscalation)
    .expect("valid")
}

#[tokio::test]
async fn handoff_job_and_outcome_are_written_together() -> TestResult {
    let dir = tempfile::tempdir()?;
    for store in all_stores(dir.path()).await? {
        let s = session_with_turns(&store, 3).await?;
        let end = Timestamp::from_millis(1_800_000_009_000);
        let h = store.create_handoff(s.id, &spec(), Some(end)).await?;
        assert_eq!((h.status, h.turn_count), (HandoffStatus::Pending, 3));
        let session = store.session(s.id).await?;
        assert_eq!(session.outcome, Some(Outcome::LoggedEscalation));
        assert_eq!(
            (session.status, session.ended_at),
            (SessionStatus::Ended, Some(end))
        );
        assert_eq!(store.outbox_counts(HANDOFF_JOB).await?.pending, 1);
        let err = store.create_handoff(s.id, &spec(), None).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    field: "session",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            store.outbox_counts(HANDOFF_JOB).await?.pending,
            1,
            "the failed second handoff left no job"
        );
        let missing = store
            .create_handoff(SessionId::new(), &spec(), None)
            .await
            .unwrap_err();
        assert!(matches!(missing, StoreError::NotFound { .. }));
    }
    Ok(())
}

#[tokio::test]
async fn leases_retries_dead_letters_and_redrive() -> TestResult {
    let dir = tempfile::tempdir()?;
    for store in all_stores(dir.path()).await? {
        let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(
            1_800_000_000_000,
        )));
        let store = store.with_clock(clock.clone());
        let s = session_with_turns(&store, 1).await?;
        let h = store.create_handoff(s.id, &spec(), None).await?;

        let job = store
            .claim_job(HANDOFF_JOB, "w1", 30_000)
            .await?
            .expect("due job");
        assert_eq!(
            (job.ref_id.as_str(), job.attempts),
            (h.id.to_string().as_str(), 1)
        );
        assert!(
            store.claim_job(HANDOFF_JOB, "w2", 30_000).await?.is_none(),
            "a leased job is not handed out twice"
        );

        // w1 stalls past its lease; w2 takes over; w1 can no longer settle.
        clock.advance_millis(30_001);
        let taken = store
            .claim_job(HANDOFF_JOB, "w2", 30_000)
            .await?
            .expect("expired lease is reclaimed");
        assert_eq!(taken.attempts, 2);
        assert!(!store.finish_job(&job).await?, "the old owner lost the job");
        assert!(
            !store.ack_handoff_messages(&job, h.id, 1).await?,
            "nor may it record progress"
        );

        // A retry is not due before its time.
        let next = clock.now().plus_millis(5_000);
        assert!(
            store
                .retry_job(&taken, next, "salesforce unavailable")
                .await?
        );
        assert!(store.claim_job(HANDOFF_JOB, "w3", 30_000).await?.is_none());
        assert_eq!(store.next_job_due(HANDOFF_JOB).await?, Some(next));
        clock.advance_millis(5_000);
        let again = store
            .claim_job(HANDOFF_JOB, "w3", 30_000)
            .await?
            .expect("due after back-off");
        assert!(
            again.first_failed_at.is_some(),
            "the first failure time is kept for the dead-letter age"
        );

        assert!(store.kill_job(&again, "400 unknown deployment").await?);
        store
            .set_handoff_status(
                h.id,
                HandoffStatus::DeadLetter,
                Some("400 unknown deployment"),
            )
            .await?;
        assert_eq!(store.outbox_counts(HANDOFF_JOB).await?.dead, 1);
        assert!(
            store.claim_job(HANDOFF_JOB, "w3", 30_000).await?.is_none(),
            "dead jobs stay dead"
        );

        let redriven = store.redrive_handoff(h.id).await?;
        assert_eq!(redriven.status, HandoffStatus::Pending);
        let job = store
            .claim_job(HANDOFF_JOB, "w4", 30_000)
            .await?
            .expect("re-driven job is due");
        assert!(
            job.first_failed_at.is_none(),
            "a re-drive starts a fresh dead-letter clock"
        );
        let busy = store.redrive_handoff(h.id).await.unwrap_err();
        assert!(
            matches!(busy, StoreError::Conflict { .. }),
            "no re-drive while an attempt runs"
        );
        assert!(
            store.release_job(&job).await?,
            "shutdown gives the job back"
        );
        let job = store
            .claim_job(HANDOFF_JOB, "w5", 30_000)
            .await?
            .expect("released job is due at once");
        let attempt = HandoffAttempt {
            started_at: clock.now(),
            finished_at: clock.now(),
            outcome: "delivered".into(),
            messages_sent: 1,
            error: None,
        };
        assert!(store.complete_handoff(&job, h.id, &attempt).await?);
        assert!(
            !store.complete_handoff(&job, h.id, &attempt).await?,
            "settled once"
        );
        assert_eq!(store.handoff_attempts(h.id).await?.len(), 1);
        assert_eq!(store.handoff(h.id).await?.status, HandoffStatus::Delivered);
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_workers_never_share_a_job() -> TestResult {
    let dir = tempfile::tempdir()?;
    for store in all_stores(dir.path()).await? {
        let mut expected = HashSet::new();
        for _ in 0..40 {
            let s = session_with_turns(&store, 0).await?;
            expected.insert(
                store
                    .create_handoff(s.id, &spec(), None)
                    .await?
                    .id
                    .to_string(),
            );
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = store
                    .claim_job(HANDOFF_JOB, &format!("w{w}"), 60_000)
                    .await?
                {
                    assert!(store.finish_job(&job).await?);
                    mine.push(job.ref_id);
                }
                Ok::<_, StoreError>(mine)
            }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.extend(t.await??);
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            seen.len(),
            unique.len(),
            "no job was claimed twice on {}",
            store.backend().name()
        );
        assert_eq!(unique, expected);
    }
    Ok(())
}
