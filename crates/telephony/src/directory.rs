//! What admission reads on every INVITE, kept for a short while: the trunks
//! (as [`TrunkRule`]s) and the agent each called number routes to.
//!
//! Before this cache every INVITE listed the trunks and looked the number
//! and its agent up in the store: three of the nine store round trips of a
//! call, each a hop to SQLite's worker thread and back. Now an entry is
//! read from the store at most once per [`SipConfig::directory_ttl`]
//! (default 1 s), so a trunk, number or agent changed in the store is seen
//! by INVITEs at the latest one TTL later. [`Directory::invalidate`]
//! (called by [`crate::Telephony::reload_trunks`] and
//! [`crate::Telephony::reload_routing`]) drops everything at once: the
//! next INVITE reads the store again.
//!
//! The freshness rules are sans-IO ([`Cached`], on explicit instants); the
//! store reads happen outside the lock, and a read that raced an
//! invalidation is used for its own call but not kept.
//!
//! [`SipConfig::directory_ttl`]: crate::SipConfig::directory_ttl

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_model::{Agent, E164};
use switchboard_store::{Store, StoreError};

use crate::control::TrunkRule;

/// Numbers remembered at most; past it the map starts over (a guard
/// against a caller walking through random called numbers).
const MAX_NUMBERS: usize = 10_000;

/// The cached directory. Shared by every call task.
pub(crate) struct Directory {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every invalidation; a store read started under an older
    /// generation is not kept.
    generation: u64,
    trunks: Option<Cached<Arc<[TrunkRule]>>>,
    numbers: HashMap<E164, Cached<Option<Agent>>>,
}

/// A value read from the store at `read_at`.
#[derive(Debug, Clone)]
pub(crate) struct Cached<T> {
    value: T,
    read_at: Instant,
}

impl<T: Clone> Cached<T> {
    pub(crate) fn new(value: T, read_at: Instant) -> Self {
        Self { value, read_at }
    }

    /// The value while it is younger than `ttl` at `now`.
    pub(crate) fn fresh(&self, now: Instant, ttl: Duration) -> Option<T> {
        (now.saturating_duration_since(self.read_at) < ttl).then(|| self.value.clone())
    }
}

impl Directory {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// Forgets everything: the next INVITE reads the store.
    pub(crate) fn invalidate(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.trunks = None;
        state.numbers.clear();
    }

    /// The trunks as admission rules, at most `ttl` old.
    pub(crate) async fn trunks(
        &self,
        store: &Store,
        now: Instant,
    ) -> Result<Arc<[TrunkRule]>, StoreError> {
        let generation = {
            let state = self.lock();
            if let Some(rules) = state.trunks.as_ref().and_then(|c| c.fresh(now, self.ttl)) {
                return Ok(rules);
            }
            state.generation
        };
        let rules: Arc<[TrunkRule]> = store
            .list_trunks()
            .await?
            .into_iter()
            .map(|t| TrunkRule {
                id: t.id,
                digest_username: t.inbound_username.filter(|_| t.inbound_password_set),
                allowed_cidrs: t.allowed_cidrs,
            })
            .collect();
        let mut state = self.lock();
        if state.generation == generation {
            state.trunks = Some(Cached::new(rules.clone(), now));
        }
        Ok(rules)
    }

    /// The agent `number` routes to (`None`: not bound), at most `ttl` old.
    pub(crate) async fn agent_for_number(
        &self,
        store: &Store,
        number: &E164,
        now: Instant,
    ) -> Result<Option<Agent>, StoreError> {
        let generation = {
            let state = self.lock();
            if let Some(agent) = state
                .numbers
                .get(number)
                .and_then(|c| c.fresh(now, self.ttl))
            {
                return Ok(agent);
            }
            state.generation
        };
        let agent = store.agent_for_number(number).await?;
        let mut state = self.lock();
        if state.generation == generation {
            if state.numbers.len() >= MAX_NUMBERS {
                state.numbers.clear();
            }
            state
                .numbers
                .insert(number.clone(), Cached::new(agent.clone(), now));
        }
        Ok(agent)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a cache: whatever a panicking holder left is still
        // a valid (if stale) cache.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_model::{AgentInput, Region, TrunkInput};
    use switchboard_store::testing::sqlite_store;

    #[test]
    fn an_entry_is_fresh_until_its_ttl_has_passed() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let c = Cached::new(7, t0);
        assert_eq!(c.fresh(t0, ttl), Some(7));
        assert_eq!(c.fresh(t0 + Duration::from_millis(999), ttl), Some(7));
        assert_eq!(
            c.fresh(t0 + ttl, ttl),
            None,
            "a change is seen after the TTL"
        );
        // A clock that seems to go backwards keeps the entry, never panics.
        if let Some(earlier) = t0.checked_sub(Duration::from_millis(5)) {
            assert_eq!(c.fresh(earlier, ttl), Some(7));
        }
    }

    #[tokio::test]
    async fn a_trunk_change_is_seen_after_the_ttl_or_at_once_after_invalidate() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let store = sqlite_store(dir.path()).await?;
        store.create_trunk(&trunk("first")?).await?;
        let dir_ = Directory::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(dir_.trunks(&store, t0).await?.len(), 1);

        let second = store.create_trunk(&trunk("second")?).await?;
        let within = t0 + Duration::from_millis(500);
        assert_eq!(dir_.trunks(&store, within).await?.len(), 1, "cached");
        let after = t0 + Duration::from_secs(1);
        let rules = dir_.trunks(&store, after).await?;
        assert_eq!(rules.len(), 2, "the new trunk admits calls after the TTL");
        assert!(rules.iter().any(|r| r.id == second.id));

        store.delete_trunk(second.id).await?;
        dir_.invalidate();
        assert_eq!(
            dir_.trunks(&store, after).await?.len(),
            1,
            "a removed trunk stops admitting at once after invalidate"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_number_change_is_seen_after_the_ttl_or_at_once_after_invalidate(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = sqlite_store(dir.path()).await?;
        let agent = store
            .create_agent(
                &AgentInput {
                    name: "Support".into(),
                    ..Default::default()
                }
                .validate(Region::default())?,
            )
            .await?;
        let number = E164::parse_strict("+14155550100")?;
        let dir_ = Directory::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(
            dir_.agent_for_number(&store, &number, t0).await?.is_none(),
            "not bound yet"
        );

        store.add_number(&number, Some(agent.id), "main").await?;
        let within = t0 + Duration::from_millis(999);
        assert!(dir_
            .agent_for_number(&store, &number, within)
            .await?
            .is_none());
        let after = t0 + Duration::from_secs(1);
        let routed = dir_.agent_for_number(&store, &number, after).await?;
        assert_eq!(routed.map(|a| a.id), Some(agent.id), "routed after the TTL");

        store.delete_number(&number).await?;
        assert!(dir_
            .agent_for_number(&store, &number, after)
            .await?
            .is_some());
        dir_.invalidate();
        assert!(
            dir_.agent_for_number(&store, &number, after)
                .await?
                .is_none(),
            "a deleted number stops routing at once after invalidate"
        );
        Ok(())
    }

    fn trunk(name: &str) -> anyhow::Result<switchboard_model::TrunkSpec> {
        Ok(TrunkInput {
            name: name.into(),
            host: "127.0.0.1".into(),
            allowed_cidrs: vec!["127.0.0.0/8".into()],
            ..Default::default()
        }
        .validate(Region::default())?)
    }

    #[test]
    fn a_zero_ttl_never_serves_from_the_cache() {
        let t0 = Instant::now();
        assert_eq!(Cached::new(1, t0).fresh(t0, Duration::ZERO), None);
    }
}
