//! The delivery worker: claims handoff jobs from the outbox and posts them
//! to Salesforce MIAW.
//!
//! One attempt: token (authenticated for a known contact when a JWT key is
//! configured, else unauthenticated) → create the conversation (skipped if an
//! earlier attempt did) → post every message not yet acknowledged, recording
//! each acknowledgement (and renewing the lease) before the next. Ids derive
//! from the session, so a retry after a lost response re-sends the same ids
//! and nothing is duplicated. On failure the policy decides: back off and
//! retry, or dead-letter with Salesforce's own words.
//!
//! Run loop: claim → attempt → settle; when idle, sleep until the next job is
//! due or [`Worker::notifier`] is poked by a new handoff. Shutdown releases a
//! job between two messages.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use switchboard_model::{
    Agent, Clock, Contact, Handoff, HandoffAttempt, HandoffId, HandoffStatus, Region,
    RoutingAttributeNames, Timestamp, E164,
};
use switchboard_salesforce::{AccessToken, JwtSigner, MiawClient, MiawError};
use switchboard_store::{OutboxJob, Store, StoreError, HANDOFF_JOB};
use tokio::sync::{watch, Notify};

use crate::policy::{verdict, Backoff, Verdict};
use crate::render::{conversation_id, render, RenderInput};

/// Where handoffs go, resolved from the settings at each attempt.
pub struct Target {
    pub client: MiawClient,
    /// Signs customer identity tokens; `None` means every caller is unauthenticated.
    pub signer: Option<JwtSigner>,
    /// Org-wide routing-attribute names.
    pub names: RoutingAttributeNames,
    /// Base URL of our Inbox, for the link in the handoff header.
    pub inbox_base_url: Option<String>,
    /// True when this is the built-in sandbox.
    pub sandbox: bool,
}

/// Why there is no [`Target`]: the handoff waits as "not configured".
#[derive(Debug, Clone)]
pub struct NotConfigured(pub String);

/// Resolves the current [`Target`] (settings can change while we run).
pub trait TargetSource: Send + Sync + 'static {
    fn target(&self) -> impl Future<Output = Result<Arc<Target>, NotConfigured>> + Send;
}

impl<T: TargetSource> TargetSource for Arc<T> {
    fn target(&self) -> impl Future<Output = Result<Arc<Target>, NotConfigured>> + Send {
        (**self).target()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long a claimed job is ours without progress.
    pub lease: Duration,
    /// After this long failing, a transient failure becomes a dead letter.
    pub max_age: Duration,
    pub backoff: Backoff,
    /// Longest idle sleep between looks at the outbox.
    pub idle_poll: Duration,
    /// Lifetime of a customer identity token we sign.
    pub identity_ttl: Duration,
    /// Pack several turns per message (fewer round-trips on slow links).
    pub pack_turns: bool,
    pub max_chars: usize,
    pub default_region: Region,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            max_age: Duration::from_secs(24 * 3600),
            backoff: Backoff::default(),
            idle_poll: Duration::from_secs(1),
            identity_ttl: Duration::from_secs(300),
            pack_turns: false,
            max_chars: crate::render::DEFAULT_MAX_CHARS,
            default_region: Region::default(),
        }
    }
}

pub struct Worker<S> {
    store: Store,
    source: S,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    owner: String,
    notify: Arc<Notify>,
    /// Access tokens per handoff, kept across attempts of the same process.
    tokens: Mutex<HashMap<HandoffId, AccessToken>>,
    /// Told about every delivered handoff, to follow its conversation.
    watch: crate::watcher::WatchRequests,
}

enum Failure {
    NotConfigured(String),
    Miaw(MiawError),
    /// Refused in a way retrying cannot fix (the token endpoint refusing our
    /// identity token: a key that does not match the org's registration).
    Rejected(MiawError),
    Store(StoreError),
    LeaseLost,
    Shutdown,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<MiawError> for Failure {
    fn from(e: MiawError) -> Self {
        Failure::Miaw(e)
    }
}

impl<S: TargetSource> Worker<S> {
    pub fn new(
        store: Store,
        source: S,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        owner: String,
    ) -> Self {
        Self {
            store,
            source,
            clock,
            config,
            owner,
            notify: Arc::new(Notify::new()),
            tokens: Mutex::new(HashMap::new()),
            watch: Default::default(),
        }
    }

    /// Poke this after writing a handoff so the worker looks at once.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Tells the conversation watchers about every handoff this worker delivers.
    pub fn with_watchers(mut self, watch: crate::watcher::WatchRequests) -> Self {
        self.watch = watch;
        self
    }

    /// Shares a notifier between several workers.
    pub fn with_notifier(mut self, notify: Arc<Notify>) -> Self {
        self.notify = notify;
        self
    }

    /// Works jobs until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.run_once(&shutdown).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "handoff worker could not read the outbox"),
            }
            let wait = self.idle_wait().await;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.notify.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claims and works one job. Returns false when none was due.
    pub async fn run_once(&self, shutdown: &watch::Receiver<bool>) -> Result<bool, StoreError> {
        let lease_ms = ms(self.config.lease);
        let Some(job) = self
            .store
            .claim_job(HANDOFF_JOB, &self.owner, lease_ms)
            .await?
        else {
            return Ok(false);
        };
        let Ok(id) = job.ref_id.parse::<HandoffId>() else {
            self.store
                .kill_job(&job, "the job does not name a handoff")
                .await?;
            return Ok(true);
        };
        let span = tracing::info_span!("handoff", handoff = %id, attempt = job.attempts);
        let _enter = span.enter();
        let started = self.clock.now();
        let mut sent = 0i64;
        let result = self.attempt(&job, id, shutdown, &mut sent).await;
        self.settle(&job, id, started, sent, result).await?;
        Ok(true)
    }

    async fn idle_wait(&self) -> Duration {
        match self.store.next_job_due(HANDOFF_JOB).await {
            Ok(Some(due)) => {
                let ms = due.as_millis() - self.clock.now().as_millis();
                Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
                    .min(self.config.idle_poll)
            }
            _ => self.config.idle_poll,
        }
    }

    async fn settle(
        &self,
        job: &OutboxJob,
        id: HandoffId,
        started: Timestamp,
        sent: i64,
        result: Result<(), Failure>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (outcome, error): (&str, Option<String>) = match result {
            Ok(()) => {
                self.forget_token(id);
                let attempt = HandoffAttempt {
                    started_at: started,
                    finished_at: now,
                    outcome: "delivered".into(),
                    messages_sent: sent,
                    error: None,
                };
                // Job done, handoff delivered and attempt recorded together.
                if self.store.complete_handoff(job, id, &attempt).await? {
                    self.watch.delivered(id);
                    tracing::info!(messages = sent, "handoff delivered");
                    return Ok(());
                }
                ("lease_lost", None)
            }
            Err(Failure::LeaseLost) => {
                tracing::warn!("lease lost; another worker continues this handoff");
                ("lease_lost", None)
            }
            Err(Failure::Shutdown) => {
                self.store.release_job(job).await?;
                ("released", None)
            }
            Err(Failure::NotConfigured(reason)) => {
                let msg = format!("Salesforce is not configured: {reason}");
                self.store.park_job(job, &msg).await?;
                self.store
                    .set_handoff_status(id, HandoffStatus::NotConfigured, Some(&msg))
                    .await?;
                ("not_configured", Some(msg))
            }
            Err(Failure::Miaw(e)) => {
                let msg = e.to_string();
                if e.is_unauthorized() {
                    self.forget_token(id);
                }
                self.fail(job, id, &msg, verdict(&e), e.retry_after(), now)
                    .await?
            }
            Err(Failure::Rejected(e)) => {
                self.forget_token(id);
                let msg = e.to_string();
                self.fail(job, id, &msg, Verdict::DeadLetter, None, now)
                    .await?
            }
            Err(Failure::Store(e)) => {
                let msg = format!("database error: {e}");
                self.fail(job, id, &msg, Verdict::Retry, None, now).await?
            }
        };
        self.store
            .record_handoff_attempt(
                id,
                &HandoffAttempt {
                    started_at: started,
                    finished_at: now,
                    outcome: outcome.into(),
                    messages_sent: sent,
                    error,
                },
            )
            .await
    }

    async fn fail(
        &self,
        job: &OutboxJob,
        id: HandoffId,
        msg: &str,
        verdict: Verdict,
        retry_after: Option<Duration>,
        now: Timestamp,
    ) -> Result<(&'static str, Option<String>), StoreError> {
        let failing_since = job.first_failed_at.unwrap_or(now);
        let too_old = now.as_millis() - failing_since.as_millis() > ms(self.config.max_age);
        if verdict == Verdict::DeadLetter || too_old {
            let why = if too_old && verdict == Verdict::Retry {
                format!(
                    "{msg} (still failing after {} s; gave up)",
                    self.config.max_age.as_secs()
                )
            } else {
                msg.to_string()
            };
            tracing::warn!(error = %why, "handoff dead-lettered");
            self.store.kill_job(job, &why).await?;
            self.store
                .set_handoff_status(id, HandoffStatus::DeadLetter, Some(&why))
                .await?;
            return Ok(("dead_letter", Some(why)));
        }
        let jitter = rand::thread_rng().gen::<f64>();
        let delay = self.config.backoff.delay(job.attempts, retry_after, jitter);
        tracing::info!(error = %msg, retry_in_ms = delay.as_millis() as u64, "handoff attempt failed; will retry");
        self.store
            .retry_job(job, now.plus_millis(ms(delay)), msg)
            .await?;
        self.store
            .set_handoff_status(id, HandoffStatus::Pending, Some(msg))
            .await?;
        Ok(("retry", Some(msg.to_string())))
    }

    async fn attempt(
        &self,
        job: &OutboxJob,
        id: HandoffId,
        shutdown: &watch::Receiver<bool>,
        sent: &mut i64,
    ) -> Result<(), Failure> {
        let mut lease = LeaseClock::new(self.config.lease);
        let handoff = self.store.handoff(id).await?;
        if handoff.status == HandoffStatus::Delivered
            && handoff
                .messages_total
                .is_some_and(|t| handoff.messages_acked >= t)
        {
            return Ok(());
        }
        let session = self.store.session(handoff.session_id).await?;
        let agent = match session.agent_id {
            Some(a) => match self.store.agent(a).await {
                Ok(agent) => Some(agent),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let turns: Vec<_> = self
            .store
            .turns(session.id)
            .await?
            .into_iter()
            .take(usize::try_from(handoff.turn_count).unwrap_or(0))
            .collect();
        let target = self
            .source
            .target()
            .await
            .map_err(|NotConfigured(r)| Failure::NotConfigured(r))?;
        let contact = self.contact_for(&session).await?;

        let names = crate::attributes::effective_names(
            &target.names,
            agent.as_ref().map(|a| &a.spec.routing_attributes),
        );
        let attrs = crate::attributes::build(&names, session.id, &session.from, &handoff);
        let time_zone = agent
            .as_ref()
            .and_then(|a| a.spec.time_zone.parse().ok())
            .unwrap_or(chrono_tz::Tz::UTC);
        let messages = render(&RenderInput {
            session_id: session.id,
            caller: &session.from,
            handoff: &handoff,
            turns: &turns,
            time_zone,
            inbox_url: target
                .inbox_base_url
                .as_ref()
                .map(|b| format!("{}/inbox/{}", b.trim_end_matches('/'), session.id)),
            max_chars: self.config.max_chars,
            pack_turns: self.config.pack_turns,
        });
        let conversation = conversation_id(session.id);
        let identity = self.identity(&target, contact.as_ref(), &agent)?;
        let label = if identity.is_some() {
            "authenticated"
        } else {
            "unauthenticated"
        };
        self.store
            .plan_handoff(
                id,
                conversation,
                label,
                &attrs,
                i64::try_from(messages.len()).unwrap_or(i64::MAX),
            )
            .await?;

        let client = &target.client;
        let attrs = &attrs;
        // A token can only have been saved by an earlier attempt.
        let saved = handoff.identity.is_some();
        if !handoff.conversation_created {
            let r = self
                .with_token(id, &target, identity.as_deref(), saved, |t| async move {
                    client.create_conversation(&t, conversation, attrs).await
                })
                .await;
            ok_or_duplicate(r)?;
            if !self.store.mark_conversation_created(job, id).await? {
                return Err(Failure::LeaseLost);
            }
        }
        let start = usize::try_from(handoff.messages_acked).unwrap_or(0);
        for msg in messages.iter().skip(start) {
            if *shutdown.borrow() {
                return Err(Failure::Shutdown);
            }
            let routing = (msg.position == 0).then_some(attrs);
            let text = msg.text.as_str();
            let r = self
                .with_token(id, &target, identity.as_deref(), saved, |t| async move {
                    client
                        .send_message(&t, conversation, msg.id, text, routing)
                        .await
                        .map(|_| ())
                })
                .await;
            ok_or_duplicate(r)?;
            *sent += 1;
            let acked = i64::try_from(msg.position + 1).unwrap_or(i64::MAX);
            if !self.store.ack_handoff_messages(job, id, acked).await? {
                return Err(Failure::LeaseLost);
            }
            if lease.due() {
                if !self.store.renew_lease(job, ms(self.config.lease)).await? {
                    return Err(Failure::LeaseLost);
                }
                lease.renewed();
            }
        }
        Ok(())
    }

    /// The contact the caller is: the session's, or matched by number.
    async fn contact_for(
        &self,
        session: &switchboard_model::Session,
    ) -> Result<Option<Contact>, StoreError> {
        if let Some(c) = session.contact_id {
            match self.store.contact(c).await {
                Ok(c) => return Ok(Some(c)),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match E164::parse(&session.from, self.config.default_region) {
            Ok(phone) => self.store.contact_by_phone(&phone).await,
            Err(_) => Ok(None),
        }
    }

    /// A signed customer identity token for a known contact, if we can sign.
    fn identity(
        &self,
        target: &Target,
        contact: Option<&Contact>,
        _agent: &Option<Agent>,
    ) -> Result<Option<String>, Failure> {
        let (Some(signer), Some(contact)) = (&target.signer, contact) else {
            return Ok(None);
        };
        let subject = contact
            .external_id
            .clone()
            .unwrap_or_else(|| contact.id.to_string());
        let now = self.clock.now().as_millis() / 1000;
        let ttl = i64::try_from(self.config.identity_ttl.as_secs()).unwrap_or(300);
        signer
            .sign(&subject, now, ttl)
            .map(Some)
            .map_err(|e| Failure::NotConfigured(format!("the JWT private key cannot sign: {e}")))
    }

    /// Runs `call` with a valid access token: the one this handoff used
    /// before (memory, else the store — an unauthenticated conversation
    /// belongs to the token's subject, so retries must keep it), else a new
    /// one. On 401 the token is renewed with the continuation token (same
    /// subject), else replaced, and the call is tried once more.
    async fn with_token<F, Fut, T>(
        &self,
        id: HandoffId,
        target: &Target,
        identity: Option<&str>,
        may_be_saved: bool,
        call: F,
    ) -> Result<T, Failure>
    where
        F: Fn(AccessToken) -> Fut,
        Fut: Future<Output = Result<T, MiawError>>,
    {
        let token = match self.cached_token(id) {
            Some(t) => t,
            None => match self.saved_token(id, may_be_saved).await? {
                Some(t) => t,
                None => self.fresh_token(id, target, identity).await?,
            },
        };
        match call(token.clone()).await {
            Err(e) if e.is_unauthorized() => {
                self.forget_token(id);
                let renewed = match target.client.continuation_token(&token).await {
                    Ok(t) => {
                        self.keep_token(id, &t).await?;
                        t
                    }
                    Err(_) => self.fresh_token(id, target, identity).await?,
                };
                Ok(call(renewed).await?)
            }
            other => Ok(other?),
        }
    }

    async fn fresh_token(
        &self,
        id: HandoffId,
        target: &Target,
        identity: Option<&str>,
    ) -> Result<AccessToken, Failure> {
        let token = match identity {
            // A 401 here is about our identity token (key id, issuer, key):
            // a configuration problem that retrying will not fix.
            Some(jwt) => target.client.authenticated_token(jwt).await.map_err(|e| {
                if e.is_unauthorized() {
                    Failure::Rejected(e)
                } else {
                    Failure::Miaw(e)
                }
            })?,
            None => target.client.unauthenticated_token().await?,
        };
        self.keep_token(id, &token).await?;
        Ok(token)
    }

    async fn keep_token(&self, id: HandoffId, token: &AccessToken) -> Result<(), StoreError> {
        let saved = serde_json::json!({
            "token": token.access_token.expose(),
            "exp": token.expires_at_unix,
            "last_event_id": token.last_event_id,
        });
        self.store
            .save_handoff_token(id, &saved.to_string())
            .await?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(id, token.clone());
        }
        Ok(())
    }

    async fn saved_token(
        &self,
        id: HandoffId,
        may_be_saved: bool,
    ) -> Result<Option<AccessToken>, StoreError> {
        if !may_be_saved {
            return Ok(None);
        }
        let Some(text) = self.store.handoff_token(id).await? else {
            return Ok(None);
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(None);
        };
        let Some(secret) = v["token"].as_str() else {
            return Ok(None);
        };
        let token = AccessToken {
            access_token: switchboard_model::Redacted::new(secret.to_string()),
            last_event_id: v["last_event_id"].as_str().unwrap_or("0").to_string(),
            deployment_type: None,
            hidden_prechat_fields: Vec::new(),
            expires_at_unix: v["exp"].as_i64(),
        };
        // Even an expired token is worth returning: the 401 it earns leads to
        // its continuation token, which keeps the subject.
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(id, token.clone());
        }
        Ok(Some(token))
    }

    fn cached_token(&self, id: HandoffId) -> Option<AccessToken> {
        let now = self.clock.now().as_millis() / 1000;
        let tokens = self.tokens.lock().ok()?;
        tokens
            .get(&id)
            .filter(|t| !t.expires_within(now, 30))
            .cloned()
    }

    fn forget_token(&self, id: HandoffId) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&id);
        }
    }
}

/// When to renew a lease: a few times per lease period (at a third of it),
/// not on every message — each renewal is a database round trip.
struct LeaseClock {
    every: Duration,
    last: std::time::Instant,
}

impl LeaseClock {
    fn new(lease: Duration) -> Self {
        Self {
            every: lease / 3,
            last: std::time::Instant::now(),
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    fn renewed(&mut self) {
        self.last = std::time::Instant::now();
    }
}

/// A 409 on a create or a post means an earlier attempt already applied it
/// (its response was lost): that is success.
fn ok_or_duplicate<T>(r: Result<T, Failure>) -> Result<(), Failure> {
    match r {
        Ok(_) => Ok(()),
        Err(Failure::Miaw(e)) if e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The latest state of a handoff, for callers that wait on delivery.
pub async fn wait_delivered(
    store: &Store,
    id: HandoffId,
    timeout: Duration,
) -> Result<Handoff, StoreError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let h = store.handoff(id).await?;
        if matches!(
            h.status,
            HandoffStatus::Delivered | HandoffStatus::DeadLetter | HandoffStatus::NotConfigured
        ) || tokio::time::Instant::now() >= deadline
        {
            return Ok(h);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
