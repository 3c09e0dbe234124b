//! Call control without IO: the per-leg state machine, the routing verdicts
//! and the transfer fallback order.
//!
//! Everything here takes `now: Instant` as an input and returns what to do;
//! nothing owns a socket, spawns a task or reads the clock. The driver
//! ([`crate::call`], [`crate::server`]) turns SIP stack events into
//! [`LegInput`]s, drains [`LegOutput`]s after every input, and sleeps until
//! [`CallLeg::next_timeout`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use switchboard_model::{Direction, Outcome, Region, TrunkId, E164};

// ---------------------------------------------------------------------------
// The leg machine

/// Where one call leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE received (inbound) or sent (outbound), no ringing yet.
    Trying,
    /// 180 sent (inbound) or received (outbound).
    Ringing,
    /// Inbound: 200 OK sent, waiting for the ACK (timer H runs).
    Answered,
    /// Media flows; the engine has the call.
    Confirmed,
    /// A live transfer is being dialled; the caller still talks to the engine.
    Transferring,
    /// The caller is bridged to the transfer target through us.
    Bridged,
    /// Over; the session row is ended.
    Terminated,
}

/// What happened on the wire, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEvent {
    /// We sent 180 (inbound) or the callee rang (outbound).
    Ringing,
    /// We sent 200 OK (inbound) or received it and sent the ACK (outbound).
    Answered,
    /// The ACK for our 200 OK arrived.
    Ack,
    /// The caller sent CANCEL before we answered.
    Cancelled,
    /// The other side sent BYE.
    RemoteBye,
    /// The callee answered our INVITE with a final error (outbound).
    Rejected { code: u16, reason: String },
    /// The stack gave up on the transaction (no response, socket error).
    TransportFailed(String),
}

/// A command from the engine or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCommand {
    /// Hang up with a reason in words ("agent hung up").
    Hangup(String),
    /// A live transfer starts dialling.
    TransferStarted,
    /// The transfer target answered and media is bridged.
    TransferBridged,
    /// The transfer failed; the original call goes on.
    TransferFailed,
    /// The bridge ended because the transfer target hung up.
    BridgeEnded(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegInput {
    Sip(Instant, SipEvent),
    Command(Instant, LegCommand),
    Timeout(Instant),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegOutput {
    /// Mark the session answered and hand the call to the engine.
    Answered,
    /// Send BYE on the dialog.
    SendBye,
    /// Send CANCEL for our unanswered INVITE (outbound).
    SendCancel,
    /// End the session row and tell every watcher.
    End { outcome: Outcome, reason: String },
}

/// Timers and policy for one leg.
#[derive(Debug, Clone, Copy)]
pub struct LegTimers {
    /// RFC 3261 T1; timer H is 64 × T1.
    pub t1: Duration,
    /// Outbound only: how long the callee may ring before we CANCEL.
    pub no_answer: Duration,
}

impl Default for LegTimers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            no_answer: Duration::from_secs(30),
        }
    }
}

/// The state of one call leg (inbound or outbound).
///
/// Contract: feed every event with [`CallLeg::handle_input`], then drain
/// [`CallLeg::poll_output`] until `None`, then wait until
/// [`CallLeg::next_timeout`] (if any) and feed [`LegInput::Timeout`].
#[derive(Debug)]
pub struct CallLeg {
    direction: Direction,
    state: LegState,
    timers: LegTimers,
    ack_deadline: Option<Instant>,
    answer_deadline: Option<Instant>,
    was_bridged: bool,
    outputs: VecDeque<LegOutput>,
}

impl CallLeg {
    /// A new leg whose INVITE arrived (inbound) or was sent (outbound) at `now`.
    pub fn new(direction: Direction, timers: LegTimers, now: Instant) -> Self {
        let answer_deadline = (direction == Direction::Outbound).then(|| now + timers.no_answer);
        Self {
            direction,
            state: LegState::Trying,
            timers,
            ack_deadline: None,
            answer_deadline,
            was_bridged: false,
            outputs: VecDeque::new(),
        }
    }

    pub fn state(&self) -> LegState {
        self.state
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn is_terminated(&self) -> bool {
        self.state == LegState::Terminated
    }

    /// The earliest deadline the driver must wake up for.
    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.ack_deadline, self.answer_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_output(&mut self) -> Option<LegOutput> {
        self.outputs.pop_front()
    }

    pub fn handle_input(&mut self, input: LegInput) {
        if self.is_terminated() {
            return;
        }
        match input {
            LegInput::Sip(now, event) => self.handle_sip(now, event),
            LegInput::Command(_, command) => self.handle_command(command),
            LegInput::Timeout(now) => self.handle_timeout(now),
        }
    }

    fn handle_sip(&mut self, now: Instant, event: SipEvent) {
        use LegState::*;
        match (self.state, event) {
            (Trying, SipEvent::Ringing) => self.state = Ringing,
            (Trying | Ringing, SipEvent::Answered) => match self.direction {
                Direction::Inbound => {
                    self.state = Answered;
                    self.ack_deadline = Some(now + self.timers.t1 * 64);
                }
                Direction::Outbound => {
                    self.answer_deadline = None;
                    self.state = Confirmed;
                    self.outputs.push_back(LegOutput::Answered);
                }
            },
            (Answered, SipEvent::Ack) => {
                self.ack_deadline = None;
                self.state = Confirmed;
                self.outputs.push_back(LegOutput::Answered);
            }
            (Trying | Ringing, SipEvent::Cancelled) => {
                self.end(Outcome::Abandoned, "cancelled");
            }
            (Trying | Ringing, SipEvent::RemoteBye) => self.end(Outcome::Abandoned, "cancelled"),
            (Answered, SipEvent::RemoteBye) => {
                // The caller gave up before its ACK reached us.
                self.end(Outcome::Abandoned, "caller hung up");
            }
            (Confirmed | Transferring | Bridged, SipEvent::RemoteBye) => {
                let outcome = self.answered_outcome();
                let who = match self.direction {
                    Direction::Inbound => "caller hung up",
                    Direction::Outbound => "callee hung up",
                };
                self.end(outcome, who);
            }
            (Trying | Ringing, SipEvent::Rejected { code, reason }) => {
                let words = match code {
                    486 | 600 => "busy".to_string(),
                    480 | 408 => "no answer".to_string(),
                    487 => "cancelled".to_string(),
                    401 | 407 => "trunk credentials rejected (401) — check the trunk's outbound username/password".to_string(),
                    _ => format!("rejected: {code} {reason}"),
                };
                self.end(Outcome::Failed, &words);
            }
            (state, SipEvent::TransportFailed(why)) => {
                if matches!(state, Confirmed | Transferring | Bridged) {
                    self.outputs.push_back(LegOutput::SendBye);
                }
                self.end(Outcome::Failed, &format!("network error: {why}"));
            }
            // Retransmissions and events that do not change this leg.
            _ => {}
        }
    }

    fn handle_command(&mut self, command: LegCommand) {
        use LegState::*;
        match (self.state, command) {
            (Confirmed | Transferring | Bridged | Answered, LegCommand::Hangup(reason)) => {
                self.outputs.push_back(LegOutput::SendBye);
                let outcome = self.answered_outcome();
                self.end(outcome, &reason);
            }
            (Trying | Ringing, LegCommand::Hangup(reason)) => {
                if self.direction == Direction::Outbound {
                    self.outputs.push_back(LegOutput::SendCancel);
                }
                self.end(Outcome::Abandoned, &reason);
            }
            (Confirmed, LegCommand::TransferStarted) => self.state = Transferring,
            (Transferring, LegCommand::TransferBridged) => {
                self.state = Bridged;
                self.was_bridged = true;
            }
            (Transferring, LegCommand::TransferFailed) => self.state = Confirmed,
            (Bridged, LegCommand::BridgeEnded(reason)) => {
                self.outputs.push_back(LegOutput::SendBye);
                self.end(Outcome::LiveTransfer, &reason);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.ack_deadline.is_some_and(|d| now >= d) {
            self.ack_deadline = None;
            // Timer H: the caller never confirmed our 200 OK.
            self.outputs.push_back(LegOutput::SendBye);
            self.end(Outcome::Failed, "no ACK received");
            return;
        }
        if self.answer_deadline.is_some_and(|d| now >= d) {
            self.answer_deadline = None;
            self.outputs.push_back(LegOutput::SendCancel);
            self.end(Outcome::Failed, "no answer");
        }
    }

    fn answered_outcome(&self) -> Outcome {
        if self.was_bridged || self.state == LegState::Bridged {
            Outcome::LiveTransfer
        } else {
            Outcome::Resolved
        }
    }

    fn end(&mut self, outcome: Outcome, reason: &str) {
        self.state = LegState::Terminated;
        self.ack_deadline = None;
        self.answer_deadline = None;
        self.outputs.push_back(LegOutput::End {
            outcome,
            reason: reason.to_string(),
        });
    }
}

// ---------------------------------------------------------------------------
// Trunk authentication

/// One trunk as the inbound check sees it.
#[derive(Debug, Clone)]
pub struct TrunkRule {
    pub id: TrunkId,
    pub allowed_cidrs: Vec<IpNet>,
    /// Inbound digest username, when the trunk requires digest.
    pub digest_username: Option<String>,
}

/// The answer to "may this INVITE come in?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkVerdict {
    Allowed(TrunkId),
    /// Reply 407 with a fresh challenge.
    Challenge,
    /// Reply 403; keep no state.
    Forbidden,
}

/// Decides which trunk an INVITE belongs to.
///
/// A trunk with only `allowed_cidrs` admits its sources. A trunk with inbound
/// credentials requires digest; if it also lists CIDRs, the source must be
/// inside them too (both checks). `digest_ok(trunk)` says whether the request
/// carries a valid response for that trunk's credentials; `has_auth` whether
/// it carries any Proxy-Authorization at all.
pub fn trunk_verdict(
    source: IpAddr,
    trunks: &[TrunkRule],
    has_auth: bool,
    mut digest_ok: impl FnMut(&TrunkRule) -> bool,
) -> TrunkVerdict {
    let mut wants_digest = false;
    for trunk in trunks {
        let ip_listed = trunk.allowed_cidrs.iter().any(|n| n.contains(&source));
        if !trunk.allowed_cidrs.is_empty() && !ip_listed {
            continue;
        }
        match &trunk.digest_username {
            None if ip_listed => return TrunkVerdict::Allowed(trunk.id),
            None => {}
            Some(_) => {
                if has_auth && digest_ok(trunk) {
                    return TrunkVerdict::Allowed(trunk.id);
                }
                wants_digest = true;
            }
        }
    }
    if wants_digest && !has_auth {
        TrunkVerdict::Challenge
    } else {
        TrunkVerdict::Forbidden
    }
}

/// A bounded table that limits how often we answer strangers, so a scanner
/// cannot make us send a flood of 403s (or grow memory).
#[derive(Debug)]
pub struct StrangerLimiter {
    seen: HashMap<IpAddr, (Instant, u32)>,
    capacity: usize,
    window: Duration,
    max_per_window: u32,
}

impl StrangerLimiter {
    pub fn new(capacity: usize, window: Duration, max_per_window: u32) -> Self {
        Self {
            seen: HashMap::new(),
            capacity,
            window,
            max_per_window,
        }
    }

    /// Whether to answer this source now (`false`: drop silently).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.seen.contains_key(&source) && self.seen.len() >= self.capacity {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.seen.len() >= self.capacity {
                return false;
            }
        }
        let entry = self.seen.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.max_per_window
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Number routing

/// Why an INVITE could not be routed to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRefusal {
    /// 404: the called number is not ours (or not bound to an agent).
    UnknownNumber,
    /// 486: the agent is at its concurrent-call limit.
    Busy,
}

impl RouteRefusal {
    pub fn status(&self) -> u16 {
        match self {
            RouteRefusal::UnknownNumber => 404,
            RouteRefusal::Busy => 486,
        }
    }
}

/// The called number of an INVITE: the Request-URI user, else the To user,
/// normalised to E.164. Accepts `+` and digits (`+14155550100`), digits with
/// a country code (`14155550100`), or a national number read in `region`.
pub fn called_number(
    request_user: Option<&str>,
    to_user: Option<&str>,
    region: Region,
) -> Option<E164> {
    [request_user, to_user]
        .into_iter()
        .flatten()
        .find_map(|user| normalise_user(user, region))
}

/// A SIP user part (or `tel:` URI) as an E.164 number, if it is one.
pub fn normalise_user(user: &str, region: Region) -> Option<E164> {
    let user = user.trim();
    let user = user
        .strip_prefix("tel:")
        .or_else(|| user.strip_prefix("sip:"))
        .or_else(|| user.strip_prefix("sips:"))
        .unwrap_or(user);
    let user = user.split(['@', ';', '?']).next().unwrap_or_default();
    let digits: String = user.chars().filter(|c| !"-.() ".contains(*c)).collect();
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    if let Some(rest) = digits.strip_prefix('+') {
        if !rest.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return E164::parse(&digits, region).ok();
    }
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // A long digit string most likely carries its country code; a short one
    // is national. Try the likelier reading first, then the other.
    let international = || E164::parse(&format!("+{digits}"), region).ok();
    let national = || E164::parse(&digits, region).ok();
    if digits.len() > 10 {
        international().or_else(national)
    } else {
        national().or_else(international)
    }
}

/// The effective concurrent-call limit for an agent.
pub fn call_limit(agent_limit: u32, config_limit: u32) -> u32 {
    agent_limit.min(config_limit).max(1)
}

// ---------------------------------------------------------------------------
// Transfer fallback order

/// Why a transfer leg failed, in terms the engine can tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferFailure {
    Busy,
    NoAnswer,
    Rejected(u16),
    Error(String),
}

impl std::fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferFailure::Busy => f.write_str("busy"),
            TransferFailure::NoAnswer => f.write_str("no answer"),
            TransferFailure::Rejected(code) => write!(f, "rejected ({code})"),
            TransferFailure::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The next thing a transfer should try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferStep {
    /// Send REFER to the caller's side (the carrier connects the call).
    Refer,
    /// Dial the target ourselves and bridge media.
    Bridge,
    Done(TransferResult),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferResult {
    Referred,
    Bridged,
    Failed(TransferFailure),
}

/// The fallback order: REFER where the trunk allows it; a refused REFER
/// (403/405/603, or a failing NOTIFY) falls back to a bridge; a failed
/// bridge fails the transfer (the engine then continues as logged escalation).
#[derive(Debug, Clone)]
pub struct TransferPlan {
    refer_allowed: bool,
    refer_tried: bool,
}

impl TransferPlan {
    pub fn new(refer_allowed: bool) -> Self {
        Self {
            refer_allowed,
            refer_tried: false,
        }
    }

    pub fn first_step(&mut self) -> TransferStep {
        if self.refer_allowed {
            self.refer_tried = true;
            TransferStep::Refer
        } else {
            TransferStep::Bridge
        }
    }

    /// After REFER: the final status of the REFER or of the NOTIFY sipfrag.
    pub fn handle_refer_result(&mut self, status: u16) -> TransferStep {
        match status {
            200..=299 => TransferStep::Done(TransferResult::Referred),
            _ => TransferStep::Bridge,
        }
    }

    /// After the bridge leg: `Ok` when answered and bridged.
    pub fn handle_bridge_result(&mut self, result: Result<(), TransferFailure>) -> TransferStep {
        match result {
            Ok(()) => TransferStep::Done(TransferResult::Bridged),
            Err(failure) => TransferStep::Done(TransferResult::Failed(failure)),
        }
    }

    pub fn refer_tried(&self) -> bool {
        self.refer_tried
    }
}

/// When to REGISTER a trunk that asks for it (`register = true`), and what
/// to tell the operator. Sans-IO: the driver sends a REGISTER (rsipstack
/// answers digest challenges with the trunk's outbound credentials) when
/// [`Self::next_timeout`] passes, then feeds the outcome back.
///
/// Refresh at 75 % of the expiry the registrar granted (RFC 3261 §10.2.4:
/// it may grant less than we asked), never sooner than one second; after a
/// failure retry at 1 s doubling to a 60 s cap, so a registrar outage is
/// neither hammered nor waited out for an hour.
#[derive(Debug, Clone)]
pub struct RegistrationTimer {
    requested: Duration,
    next: Instant,
    failures: u32,
    state: RegistrationState,
}

/// What the operator sees about one trunk's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered yet.
    Pending,
    /// Registered until this instant.
    Registered {
        /// When the binding lapses unless refreshed.
        until: Instant,
    },
    /// The last attempt failed; in words.
    Failing(String),
}

impl RegistrationTimer {
    /// Longest retry interval after failures.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

    /// A timer asking for `requested` expiry; the first REGISTER is due now.
    pub fn new(requested: Duration, now: Instant) -> Self {
        RegistrationTimer {
            requested,
            next: now,
            failures: 0,
            state: RegistrationState::Pending,
        }
    }

    /// The expiry to ask for, in seconds.
    pub fn requested_secs(&self) -> u32 {
        self.requested.as_secs().min(u64::from(u32::MAX)) as u32
    }

    /// When the next REGISTER is due.
    pub fn next_timeout(&self) -> Instant {
        self.next
    }

    /// The current state.
    pub fn state(&self) -> &RegistrationState {
        &self.state
    }

    /// The final response to our REGISTER: `granted` is the expiry the
    /// registrar returned (Contact `expires` or `Expires`), if any.
    pub fn handle_response(&mut self, now: Instant, status: u16, granted: Option<Duration>) {
        if (200..300).contains(&status) {
            let granted = granted.unwrap_or(self.requested);
            self.failures = 0;
            self.next = now + (granted * 3 / 4).max(Duration::from_secs(1));
            self.state = RegistrationState::Registered {
                until: now + granted,
            };
            return;
        }
        let reason = match status {
            401 | 407 => format!(
                "registrar rejected the trunk credentials ({status}) — check the trunk's outbound username/password"
            ),
            403 => "registrar refused the registration (403)".to_string(),
            _ => format!("registrar answered {status}"),
        };
        self.fail(now, reason);
    }

    /// No final response (registrar unreachable, transport error).
    pub fn handle_failure(&mut self, now: Instant) {
        self.fail(now, "registrar unreachable".to_string());
    }

    fn fail(&mut self, now: Instant, reason: String) {
        let backoff = Duration::from_secs(1 << self.failures.min(6)).min(Self::MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        self.next = now + backoff;
        self.state = RegistrationState::Failing(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(leg: &mut CallLeg) -> Vec<LegOutput> {
        std::iter::from_fn(|| leg.poll_output()).collect()
    }

    fn ended(outputs: &[LegOutput]) -> Option<(Outcome, String)> {
        outputs.iter().find_map(|o| match o {
            LegOutput::End { outcome, reason } => Some((*outcome, reason.clone())),
            _ => None,
        })
    }

    #[test]
    fn inbound_call_is_handed_over_on_ack_and_ends_when_caller_hangs_up() {
        let t0 = Instant::now();
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ringing));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        assert_eq!(leg.state(), LegState::Answered);
        assert!(drain(&mut leg).is_empty(), "not handed over before the ACK");
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ack));
        assert_eq!(drain(&mut leg), vec![LegOutput::Answered]);
        assert_eq!(leg.next_timeout(), None);
        leg.handle_input(LegInput::Sip(t0, SipEvent::RemoteBye));
        let out = drain(&mut leg);
        assert_eq!(
            ended(&out),
            Some((Outcome::Resolved, "caller hung up".into()))
        );
        assert!(!out.contains(&LegOutput::SendBye), "no BYE back to a BYE");
    }

    #[test]
    fn missing_ack_tears_down_after_64_t1() {
        let t0 = Instant::now();
        let timers = LegTimers {
            t1: Duration::from_millis(500),
            ..Default::default()
        };
        let mut leg = CallLeg::new(Direction::Inbound, timers, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        let deadline = leg.next_timeout().expect("timer H armed");
        assert_eq!(deadline - t0, Duration::from_secs(32));
        leg.handle_input(LegInput::Timeout(t0 + Duration::from_secs(31)));
        assert!(drain(&mut leg).is_empty(), "too early");
        leg.handle_input(LegInput::Timeout(deadline));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::SendBye);
        assert_eq!(
            ended(&out),
            Some((Outcome::Failed, "no ACK received".into()))
        );
        leg.handle_input(LegInput::Sip(deadline, SipEvent::Ack));
        assert!(drain(&mut leg).is_empty(), "a late ACK changes nothing");
    }

    #[test]
    fn cancel_before_answer_ends_as_cancelled() {
        let t0 = Instant::now();
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ringing));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Cancelled));
        assert_eq!(
            ended(&drain(&mut leg)),
            Some((Outcome::Abandoned, "cancelled".into()))
        );
        assert!(leg.is_terminated());
    }

    #[test]
    fn agent_hangup_sends_bye_once() {
        let t0 = Instant::now();
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ack));
        drain(&mut leg);
        leg.handle_input(LegInput::Command(
            t0,
            LegCommand::Hangup("agent hung up".into()),
        ));
        leg.handle_input(LegInput::Command(t0, LegCommand::Hangup("again".into())));
        let out = drain(&mut leg);
        assert_eq!(out.iter().filter(|o| **o == LegOutput::SendBye).count(), 1);
        assert_eq!(ended(&out).map(|e| e.1), Some("agent hung up".into()));
    }

    #[test]
    fn outbound_no_answer_cancels() {
        let t0 = Instant::now();
        let timers = LegTimers {
            no_answer: Duration::from_secs(20),
            ..Default::default()
        };
        let mut leg = CallLeg::new(Direction::Outbound, timers, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ringing));
        assert_eq!(leg.next_timeout(), Some(t0 + Duration::from_secs(20)));
        leg.handle_input(LegInput::Timeout(t0 + Duration::from_secs(20)));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::SendCancel);
        assert_eq!(ended(&out).map(|e| e.1), Some("no answer".into()));
    }

    #[test]
    fn outbound_rejections_are_named() {
        let cases = [
            (486, "Busy Here", "busy"),
            (600, "Busy Everywhere", "busy"),
            (403, "Forbidden", "rejected: 403 Forbidden"),
            (
                401,
                "Unauthorized",
                "trunk credentials rejected (401) — check the trunk's outbound username/password",
            ),
        ];
        for (code, reason, words) in cases {
            let t0 = Instant::now();
            let mut leg = CallLeg::new(Direction::Outbound, LegTimers::default(), t0);
            leg.handle_input(LegInput::Sip(
                t0,
                SipEvent::Rejected {
                    code,
                    reason: reason.into(),
                },
            ));
            assert_eq!(ended(&drain(&mut leg)).map(|e| e.1), Some(words.into()));
        }
    }

    #[test]
    fn bridged_call_ends_as_live_transfer() {
        let t0 = Instant::now();
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ack));
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferStarted));
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferFailed));
        assert_eq!(
            leg.state(),
            LegState::Confirmed,
            "a failed transfer leaves the call"
        );
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferStarted));
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferBridged));
        leg.handle_input(LegInput::Sip(t0, SipEvent::RemoteBye));
        assert_eq!(
            ended(&drain(&mut leg)).map(|e| e.0),
            Some(Outcome::LiveTransfer)
        );
    }

    fn rule(cidrs: &[&str], user: Option<&str>) -> TrunkRule {
        TrunkRule {
            id: TrunkId::new(),
            allowed_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            digest_username: user.map(String::from),
        }
    }

    #[test]
    fn trunk_verdicts() {
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let elsewhere = rule(&["10.0.0.0/8"], None);
        assert_eq!(
            trunk_verdict(local, std::slice::from_ref(&elsewhere), false, |_| true),
            TrunkVerdict::Forbidden
        );
        let here = rule(&["127.0.0.0/8"], None);
        assert_eq!(
            trunk_verdict(local, &[elsewhere.clone(), here.clone()], false, |_| false),
            TrunkVerdict::Allowed(here.id)
        );
        let digest = rule(&[], Some("carrier"));
        assert_eq!(
            trunk_verdict(local, std::slice::from_ref(&digest), false, |_| false),
            TrunkVerdict::Challenge
        );
        assert_eq!(
            trunk_verdict(local, std::slice::from_ref(&digest), true, |_| true),
            TrunkVerdict::Allowed(digest.id)
        );
        assert_eq!(
            trunk_verdict(local, std::slice::from_ref(&digest), true, |_| false),
            TrunkVerdict::Forbidden,
            "a wrong password is refused, not challenged forever"
        );
        let both = rule(&["10.0.0.0/8"], Some("carrier"));
        assert_eq!(
            trunk_verdict(local, &[both], true, |_| true),
            TrunkVerdict::Forbidden,
            "a trunk with CIDRs and digest needs both"
        );
    }

    #[test]
    fn limiter_is_bounded() {
        let t0 = Instant::now();
        let mut lim = StrangerLimiter::new(2, Duration::from_secs(10), 3);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let c: IpAddr = "192.0.2.3".parse().expect("ip");
        assert!((0..3).all(|_| lim.allow(a, t0)));
        assert!(!lim.allow(a, t0), "fourth within the window is dropped");
        assert!(lim.allow(b, t0));
        assert!(!lim.allow(c, t0), "table full");
        assert_eq!(lim.len(), 2);
        let later = t0 + Duration::from_secs(11);
        assert!(lim.allow(c, later), "expired entries make room");
        assert!(lim.allow(a, later), "window resets");
    }

    #[test]
    fn called_numbers_are_normalised() {
        let us = Region::default();
        let n = |r: Option<&str>, t: Option<&str>| called_number(r, t, us).map(|e| e.to_string());
        assert_eq!(n(Some("+14155550100"), None), Some("+14155550100".into()));
        assert_eq!(n(Some("14155550100"), None), Some("+14155550100".into()));
        assert_eq!(n(Some("4155550100"), None), Some("+14155550100".into()));
        assert_eq!(n(Some("+442079460000"), None), Some("+442079460000".into()));
        assert_eq!(
            n(Some("tel:+14155550100;phone-context=x"), None),
            Some("+14155550100".into())
        );
        assert_eq!(
            n(Some("support"), Some("+14155550100")),
            Some("+14155550100".into())
        );
        assert_eq!(n(Some("support"), Some("alice")), None);
        assert_eq!(n(None, None), None);
        assert_eq!(n(Some("+1;;;"), None), None);
    }

    #[test]
    fn transfer_falls_back_from_refer_to_bridge_to_failed() {
        let mut plan = TransferPlan::new(true);
        assert_eq!(plan.first_step(), TransferStep::Refer);
        assert_eq!(plan.handle_refer_result(403), TransferStep::Bridge);
        assert_eq!(
            plan.handle_bridge_result(Err(TransferFailure::Busy)),
            TransferStep::Done(TransferResult::Failed(TransferFailure::Busy))
        );
        let mut plan = TransferPlan::new(false);
        assert_eq!(plan.first_step(), TransferStep::Bridge);
        assert!(!plan.refer_tried());
        let mut plan = TransferPlan::new(true);
        plan.first_step();
        assert_eq!(
            plan.handle_refer_result(202),
            TransferStep::Done(TransferResult::Referred)
        );
    }

    #[test]
    fn registration_refreshes_at_three_quarters_of_the_granted_expiry() {
        let t0 = Instant::now();
        let mut r = RegistrationTimer::new(Duration::from_secs(3600), t0);
        assert_eq!(r.next_timeout(), t0, "first REGISTER at once");
        assert_eq!(r.requested_secs(), 3600);
        // The registrar grants less than asked: follow it.
        r.handle_response(t0, 200, Some(Duration::from_secs(600)));
        assert_eq!(r.next_timeout(), t0 + Duration::from_secs(450));
        assert_eq!(
            r.state(),
            &RegistrationState::Registered {
                until: t0 + Duration::from_secs(600)
            }
        );
        // No expiry in the answer: what we asked for.
        let t1 = t0 + Duration::from_secs(450);
        r.handle_response(t1, 200, None);
        assert_eq!(r.next_timeout(), t1 + Duration::from_secs(2700));
        // A silly one-second grant still waits at least a second.
        r.handle_response(t1, 200, Some(Duration::from_secs(1)));
        assert_eq!(r.next_timeout(), t1 + Duration::from_secs(1));
    }

    #[test]
    fn registration_failures_back_off_and_say_why() {
        let t0 = Instant::now();
        let mut r = RegistrationTimer::new(Duration::from_secs(300), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            r.handle_failure(now);
            waits.push(r.next_timeout() - now);
            now = r.next_timeout();
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            r.state(),
            &RegistrationState::Failing("registrar unreachable".into())
        );
        r.handle_response(now, 401, None);
        assert!(matches!(r.state(), RegistrationState::Failing(m) if m.contains("credentials")));
        // Success resets the back-off.
        r.handle_response(now, 200, Some(Duration::from_secs(300)));
        r.handle_failure(now);
        assert_eq!(r.next_timeout() - now, Duration::from_secs(1));
    }
}
