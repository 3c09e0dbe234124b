//! Call control without IO: the per-leg state machine, the routing verdicts,
//! the transfer fallback order (REFER → bridge → failed) and RFC 4028
//! session timers.
//!
//! Everything here takes `now: Instant` as an input and returns what to do;
//! nothing owns a socket, spawns a task or reads the clock. The driver
//! (`call`, `server`) turns SIP stack events into
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
    /// The final response to our REFER (202 accepted; 403/405/501/603…).
    ReferAnswered(u16),
    /// A NOTIFY about our REFER: the status line of its `message/sipfrag`.
    ReferNotify(u16),
    /// Our REFER got no final response (timer F, socket error).
    ReferFailed(String),
    /// A session refresh: the peer's re-INVITE/UPDATE (which we answered
    /// 200), or a 2xx to ours. `timer` carries new parameters when the
    /// refresh renegotiated them.
    SessionRefreshed(Option<SessionTimer>),
    /// Our session refresh failed (481/408 or no response).
    RefreshFailed(String),
}

/// A command from the engine or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCommand {
    /// Hang up with a reason in words ("agent hung up").
    Hangup(String),
    /// A live transfer starts: REFER first when `refer` (the call's trunk
    /// says `transfer = refer`), else dial the target and bridge.
    Transfer { refer: bool },
    /// The transfer target answered and media is bridged.
    TransferBridged,
    /// The bridge leg failed; the original call goes on.
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
    /// Send REFER in the caller's dialog (Refer-To: the transfer target).
    SendRefer,
    /// Dial the transfer target and bridge it when it answers (the REFER
    /// was refused, or the trunk bridges).
    DialTransfer,
    /// The carrier took the call over after our REFER: tell the engine.
    Referred,
    /// Send a session refresh (re-INVITE with our SDP and Session-Expires).
    SendRefresh,
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
    /// How long an accepted REFER may take to report its outcome (the final
    /// NOTIFY) before we fall back to a bridge.
    pub refer: Duration,
}

impl Default for LegTimers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            no_answer: Duration::from_secs(30),
            refer: Duration::from_secs(45),
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
    transfer: Option<TransferPlan>,
    session_timer: Option<SessionTimer>,
    /// When the session timer next fires: our refresh is due, or the
    /// peer's refresh is overdue.
    session_deadline: Option<Instant>,
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
            transfer: None,
            session_timer: None,
            session_deadline: None,
            outputs: VecDeque::new(),
        }
    }

    /// Runs RFC 4028 session timers on this leg from the answer on (set
    /// before the 200 OK is sent; see [`negotiate_session_timer`]).
    pub fn set_session_timer(&mut self, timer: SessionTimer) {
        self.session_timer = Some(timer);
    }

    /// The session timer in force, if any.
    pub fn session_timer(&self) -> Option<SessionTimer> {
        self.session_timer
    }

    /// Whether a REFER is out and its outcome unknown.
    pub fn refer_pending(&self) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(TransferPlan::refer_pending)
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
        [
            self.ack_deadline,
            self.answer_deadline,
            self.session_deadline,
            self.transfer.as_ref().and_then(TransferPlan::next_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
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
            LegInput::Command(now, command) => self.handle_command(now, command),
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
                    // RFC 4028 §10: the session interval runs from the 2xx.
                    self.arm_session_timer(now);
                }
                Direction::Outbound => {
                    self.answer_deadline = None;
                    self.state = Confirmed;
                    self.outputs.push_back(LegOutput::Answered);
                    self.arm_session_timer(now);
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
            (Transferring, SipEvent::RemoteBye) if self.refer_accepted() => {
                // The carrier connected the caller elsewhere and released
                // our leg, with or without the final NOTIFY first.
                self.refer_succeeded(false);
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
            (Transferring, SipEvent::ReferAnswered(code)) => {
                let step = self
                    .transfer
                    .as_mut()
                    .and_then(|p| p.handle_refer_response(code));
                self.follow(step);
            }
            (Transferring, SipEvent::ReferNotify(code)) => {
                let step = self.transfer.as_mut().and_then(|p| p.handle_notify(code));
                self.follow(step);
            }
            (Transferring, SipEvent::ReferFailed(_)) => {
                let step = self
                    .transfer
                    .as_mut()
                    .and_then(TransferPlan::handle_refer_failure);
                self.follow(step);
            }
            (Confirmed | Transferring | Bridged, SipEvent::SessionRefreshed(timer)) => {
                if let Some(timer) = timer {
                    self.session_timer = Some(timer);
                }
                self.arm_session_timer(now);
            }
            (Confirmed | Transferring | Bridged, SipEvent::RefreshFailed(why)) => {
                self.outputs.push_back(LegOutput::SendBye);
                let outcome = self.answered_outcome();
                self.end(outcome, &format!("session refresh failed: {why}"));
            }
            // Retransmissions and events that do not change this leg.
            _ => {}
        }
    }

    /// Executes the transfer plan's next step.
    fn follow(&mut self, step: Option<TransferStep>) {
        match step {
            None => {}
            Some(TransferStep::Refer) => self.outputs.push_back(LegOutput::SendRefer),
            Some(TransferStep::Bridge) => self.outputs.push_back(LegOutput::DialTransfer),
            Some(TransferStep::Done(TransferResult::Referred)) => self.refer_succeeded(true),
            // Bridge outcomes arrive as commands from the driver.
            Some(TransferStep::Done(_)) => {}
        }
    }

    fn refer_accepted(&self) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(TransferPlan::refer_accepted)
    }

    /// The carrier has the caller: our leg is done. `send_bye` when the
    /// carrier has not released it yet (RFC 5589 §6.1: the transferor
    /// hangs up after the successful NOTIFY).
    fn refer_succeeded(&mut self, send_bye: bool) {
        self.outputs.push_back(LegOutput::Referred);
        if send_bye {
            self.outputs.push_back(LegOutput::SendBye);
        }
        self.end(Outcome::LiveTransfer, "transferred by REFER");
    }

    fn arm_session_timer(&mut self, now: Instant) {
        self.session_deadline = self.session_timer.map(|t| now + t.next_wait());
    }

    fn handle_command(&mut self, now: Instant, command: LegCommand) {
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
            (Confirmed, LegCommand::Transfer { refer }) => {
                self.state = Transferring;
                let mut plan = TransferPlan::new(refer, self.timers.refer);
                let step = plan.start(now);
                self.transfer = Some(plan);
                self.follow(Some(step));
            }
            (Transferring, LegCommand::TransferBridged) => {
                self.state = Bridged;
                self.was_bridged = true;
                self.transfer = None;
            }
            (Transferring, LegCommand::TransferFailed) => {
                self.state = Confirmed;
                self.transfer = None;
            }
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
            return;
        }
        let step = self.transfer.as_mut().and_then(|p| p.handle_timeout(now));
        self.follow(step);
        if self.is_terminated() {
            return;
        }
        if let (Some(deadline), Some(timer)) = (self.session_deadline, self.session_timer) {
            if now < deadline {
                return;
            }
            if timer.we_refresh() {
                self.outputs.push_back(LegOutput::SendRefresh);
                self.arm_session_timer(now);
            } else {
                // RFC 4028 §10: no refresh within the interval; the session
                // is over as far as the network is concerned.
                self.outputs.push_back(LegOutput::SendBye);
                let outcome = self.answered_outcome();
                self.end(outcome, "session timer expired");
            }
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
        self.session_deadline = None;
        self.transfer = None;
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
    let plain = digits.strip_prefix('+').unwrap_or(&digits);
    if !plain.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    parsed_memo(digits, region)
}

/// How many digit strings [`parsed_memo`] remembers before starting over.
const PARSED_MEMO_CAP: usize = 4096;

/// Remembered readings of digit strings: the called numbers (our own DIDs)
/// repeat on every call, and `phonenumber`'s regex-driven parse was ~3 % of
/// a call setup's CPU. Bounded; cleared when full or when the region changes.
static PARSED: std::sync::Mutex<Option<(Region, Readings)>> = std::sync::Mutex::new(None);

/// Digit string → its E.164 reading (or none), for one region.
type Readings = HashMap<String, Option<E164>>;

fn parsed_memo(digits: String, region: Region) -> Option<E164> {
    let lock = || {
        PARSED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((r, map)) = lock().as_ref() {
        if *r == region {
            if let Some(hit) = map.get(&digits) {
                return hit.clone();
            }
        }
    }
    let parsed = parse_digits(&digits, region);
    let mut memo = lock();
    let (r, map) = memo.get_or_insert_with(|| (region, HashMap::new()));
    if *r != region || map.len() >= PARSED_MEMO_CAP {
        *r = region;
        map.clear();
    }
    map.insert(digits, parsed.clone());
    parsed
}

fn parse_digits(digits: &str, region: Region) -> Option<E164> {
    if digits.starts_with('+') {
        return E164::parse(digits, region).ok();
    }
    // A long digit string most likely carries its country code; a short one
    // is national. Try the likelier reading first, then the other.
    let international = || E164::parse(&format!("+{digits}"), region).ok();
    let national = || E164::parse(digits, region).ok();
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
/// (403/405/501/603…, no response, a NOTIFY whose sipfrag is a final
/// failure, or no final NOTIFY within the REFER timeout) falls back to a
/// bridge; a failed bridge fails the transfer (the engine then continues as
/// logged escalation).
///
/// Sans-IO: feed the REFER's response, the NOTIFYs and timeouts; each
/// `handle_*` returns the next step, or `None` to keep waiting.
#[derive(Debug, Clone)]
pub struct TransferPlan {
    refer_allowed: bool,
    refer_timeout: Duration,
    phase: ReferPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReferPhase {
    NotTried,
    /// REFER sent, no final response yet.
    Sent {
        deadline: Instant,
    },
    /// 202 received; waiting for the NOTIFY with the final status.
    Accepted {
        deadline: Instant,
    },
    /// The REFER is behind us (succeeded or fell back).
    Over,
}

impl TransferPlan {
    /// `refer_allowed`: the call's trunk says `transfer = refer`.
    /// `refer_timeout`: how long the REFER may take to report its outcome.
    pub fn new(refer_allowed: bool, refer_timeout: Duration) -> Self {
        Self {
            refer_allowed,
            refer_timeout,
            phase: ReferPhase::NotTried,
        }
    }

    /// The first step, at `now`.
    pub fn start(&mut self, now: Instant) -> TransferStep {
        if self.refer_allowed && self.phase == ReferPhase::NotTried {
            self.phase = ReferPhase::Sent {
                deadline: now + self.refer_timeout,
            };
            TransferStep::Refer
        } else {
            self.phase = ReferPhase::Over;
            TransferStep::Bridge
        }
    }

    /// The final response to the REFER. 2xx: wait for the NOTIFY.
    pub fn handle_refer_response(&mut self, status: u16) -> Option<TransferStep> {
        match (self.phase, status) {
            (ReferPhase::Sent { deadline }, 200..=299) => {
                self.phase = ReferPhase::Accepted { deadline };
                None
            }
            (ReferPhase::Sent { .. }, 300..) => self.fall_back(),
            _ => None,
        }
    }

    /// A NOTIFY's sipfrag status: 1xx is progress, 2xx success, ≥ 300 a
    /// failure. A NOTIFY may overtake the 202 (UDP), so it counts while the
    /// REFER is still unanswered too.
    pub fn handle_notify(&mut self, sipfrag_status: u16) -> Option<TransferStep> {
        if !self.refer_pending() {
            return None;
        }
        match sipfrag_status {
            200..=299 => {
                self.phase = ReferPhase::Over;
                Some(TransferStep::Done(TransferResult::Referred))
            }
            300.. => self.fall_back(),
            _ => None,
        }
    }

    /// The REFER got no final response at all.
    pub fn handle_refer_failure(&mut self) -> Option<TransferStep> {
        match self.phase {
            ReferPhase::Sent { .. } => self.fall_back(),
            _ => None,
        }
    }

    /// The REFER's outcome did not arrive in time.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TransferStep> {
        match self.next_timeout() {
            Some(deadline) if now >= deadline => self.fall_back(),
            _ => None,
        }
    }

    /// After the bridge leg: `Ok` when answered and bridged.
    pub fn handle_bridge_result(&mut self, result: Result<(), TransferFailure>) -> TransferStep {
        self.phase = ReferPhase::Over;
        match result {
            Ok(()) => TransferStep::Done(TransferResult::Bridged),
            Err(failure) => TransferStep::Done(TransferResult::Failed(failure)),
        }
    }

    /// When the REFER's outcome is overdue.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.phase {
            ReferPhase::Sent { deadline } | ReferPhase::Accepted { deadline } => Some(deadline),
            ReferPhase::NotTried | ReferPhase::Over => None,
        }
    }

    /// Whether the REFER is out and its outcome unknown.
    pub fn refer_pending(&self) -> bool {
        matches!(
            self.phase,
            ReferPhase::Sent { .. } | ReferPhase::Accepted { .. }
        )
    }

    /// Whether the carrier answered the REFER with 2xx and has not failed it.
    pub fn refer_accepted(&self) -> bool {
        matches!(self.phase, ReferPhase::Accepted { .. })
    }

    pub fn refer_tried(&self) -> bool {
        self.phase != ReferPhase::NotTried
    }

    fn fall_back(&mut self) -> Option<TransferStep> {
        self.phase = ReferPhase::Over;
        Some(TransferStep::Bridge)
    }
}

/// The status code of a `message/sipfrag` body (`SIP/2.0 200 OK`), as a
/// NOTIFY about a REFER carries it. `None` for anything else.
pub fn sipfrag_status(body: &str) -> Option<u16> {
    let line = body.trim_start().lines().next()?;
    let mut words = line.split_whitespace();
    let version = words.next()?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code: u16 = words.next()?.parse().ok()?;
    (100..700).contains(&code).then_some(code)
}

// ---------------------------------------------------------------------------
// Session timers (RFC 4028)

/// Who sends the session refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// The session timer agreed for one dialog. We are the UAS of an inbound
/// call and the UAC of one we place; `refresher` says whether the caller
/// (uac) or the callee (uas) refreshes, `we_are` which of them we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: Duration,
    pub refresher: Refresher,
    /// Our role in the dialog: `Uas` for inbound calls, `Uac` for outbound.
    pub we_are: Refresher,
}

impl SessionTimer {
    /// Whether we send the refreshes.
    pub fn we_refresh(&self) -> bool {
        self.refresher == self.we_are
    }

    /// How long after a refresh (or the 2xx) the timer fires: our next
    /// refresh at half the interval, or — when the peer refreshes — the
    /// expiry at the interval minus min(32 s, interval / 3) (RFC 4028 §10,
    /// so a refresh that is still in flight is not cut off).
    pub fn next_wait(&self) -> Duration {
        if self.we_refresh() {
            self.interval / 2
        } else {
            self.interval - (self.interval / 3).min(Duration::from_secs(32))
        }
    }

    /// The `Session-Expires` value we send: `1800;refresher=uac`.
    pub fn header_value(&self) -> String {
        format!(
            "{};refresher={}",
            self.interval.as_secs(),
            self.refresher.as_str()
        )
    }

    /// Whether our 2xx must carry `Require: timer` (we are the UAS and the
    /// caller refreshes, RFC 4028 §9). Never for requests we send: a
    /// `Require` there would only earn a 420 from a peer behind a proxy that
    /// asked for the timer on its behalf.
    pub fn requires_timer(&self) -> bool {
        self.we_are == Refresher::Uas && self.refresher == Refresher::Uac
    }
}

/// The Session-Expires we ask for on the INVITEs we send, unless our Min-SE
/// is higher: RFC 4028 §4 recommends 1800 s.
pub const UAC_SESSION_EXPIRES: Duration = Duration::from_secs(1800);

/// The longest Min-SE from a 422 we retry with (RFC 4028 gives no upper
/// bound; a day is beyond any carrier's and keeps a hostile peer from
/// asking for a timer that never fires).
const MAX_RETRY_MIN_SE: Duration = Duration::from_secs(86_400);

/// RFC 4028 as a UAC, for the INVITEs we send (outbound calls): what to ask
/// for, the one retry a 422 earns (§7.4), and the timer the 2xx grants
/// (§7.2).
///
/// Sans-IO: put [`Self::session_expires`] and [`Self::min_se`] in the
/// INVITE; feed a 422's `Min-SE` to [`Self::handle_too_small`] (a new
/// interval: send the INVITE again with it; `None`: give up); feed the 2xx's
/// `Session-Expires` to [`Self::handle_answer`] and run the timer it returns
/// with [`CallLeg::set_session_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UacSessionTimer {
    interval: Duration,
    min_se: Duration,
    retried: bool,
}

impl UacSessionTimer {
    /// Asks for [`UAC_SESSION_EXPIRES`], or `min_se` (our own floor) when
    /// that is higher.
    pub fn new(min_se: Duration) -> Self {
        Self {
            interval: UAC_SESSION_EXPIRES.max(min_se),
            min_se,
            retried: false,
        }
    }

    /// The interval we ask for now.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Our `Session-Expires` value: seconds only, so the UAS picks the
    /// refresher (§7.1).
    pub fn session_expires(&self) -> String {
        self.interval.as_secs().to_string()
    }

    /// Our `Min-SE` value: the UAS must not grant less.
    pub fn min_se(&self) -> String {
        self.min_se.as_secs().to_string()
    }

    /// A 422 Session Interval Too Small with this `Min-SE` value: the
    /// interval to retry with, once (§7.4). `None` when we retried already,
    /// the value does not parse, or it asks for no more than we did (the
    /// peer is confused and a retry would get the same answer).
    pub fn handle_too_small(&mut self, min_se: Option<&str>) -> Option<Duration> {
        if self.retried {
            return None;
        }
        self.retried = true;
        let asked = parse_delta_seconds(min_se?)?;
        if asked <= self.interval || asked > MAX_RETRY_MIN_SE {
            return None;
        }
        self.interval = asked;
        self.min_se = self.min_se.max(asked);
        Some(asked)
    }

    /// The 2xx's `Session-Expires`, if any: the timer to run (§7.2). No
    /// header: no timer. Without a `refresher` parameter we refresh — a
    /// 2xx should always name one, and a UAC that refreshes unasked keeps
    /// the call up where the opposite guess would let it lapse. A zero or
    /// unreadable interval runs no timer rather than refresh in a loop.
    pub fn handle_answer(&self, session_expires: Option<&str>) -> Option<SessionTimer> {
        answered_session_timer(session_expires)
    }
}

/// The timer a 2xx to a request we sent as the dialog's UAC grants (the
/// initial INVITE, or a refresh of it): see [`UacSessionTimer::handle_answer`].
pub fn answered_session_timer(session_expires: Option<&str>) -> Option<SessionTimer> {
    let value = session_expires?;
    let mut parts = value.split(';');
    let interval = parse_delta_seconds(parts.next()?)?;
    if interval.is_zero() {
        return None;
    }
    let refresher = parse_refresher(parts).unwrap_or(Refresher::Uac);
    Some(SessionTimer {
        interval,
        refresher,
        we_are: Refresher::Uac,
    })
}

/// `1800` (and nothing else) as a duration.
fn parse_delta_seconds(value: &str) -> Option<Duration> {
    value
        .split(';')
        .next()?
        .trim()
        .parse::<u32>()
        .ok()
        .map(|secs| Duration::from_secs(u64::from(secs)))
}

/// The `refresher` parameter among `;`-separated parameters, if valid.
fn parse_refresher<'a>(mut params: impl Iterator<Item = &'a str>) -> Option<Refresher> {
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    })
}

/// What to do with an incoming INVITE's session timer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimerVerdict {
    /// The INVITE asks for no session timer; run none.
    None,
    /// Run this timer; put its Session-Expires in the 2xx.
    Use(SessionTimer),
    /// Reply 422 Session Interval Too Small with `Min-SE: min_se`.
    TooSmall { min_se: Duration },
}

/// RFC 4028 §9 for a UAS: `session_expires` is the INVITE's
/// `Session-Expires` value (`1800;refresher=uac`), `uac_supports_timer`
/// whether its `Supported` lists `timer`, and `min_se` the smallest interval
/// we accept (90 s in production; the floor of RFC 4028). An interval below
/// it gets 422; without a `refresher` parameter the caller refreshes when it
/// supports timers, else we do. A value that does not parse is ignored (no
/// timer), never a reason to fail a call.
pub fn negotiate_session_timer(
    session_expires: Option<&str>,
    uac_supports_timer: bool,
    min_se: Duration,
) -> SessionTimerVerdict {
    let Some(value) = session_expires else {
        return SessionTimerVerdict::None;
    };
    let mut parts = value.split(';');
    let Some(interval) = parts
        .next()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(|secs| Duration::from_secs(u64::from(secs)))
    else {
        return SessionTimerVerdict::None;
    };
    if interval < min_se {
        return SessionTimerVerdict::TooSmall { min_se };
    }
    let asked = parse_refresher(parts);
    let refresher = match asked {
        // A caller without timer support cannot be asked to refresh.
        Some(Refresher::Uac) | None if uac_supports_timer => Refresher::Uac,
        _ => Refresher::Uas,
    };
    SessionTimerVerdict::Use(SessionTimer {
        interval,
        refresher,
        we_are: Refresher::Uas,
    })
}

/// Whether a `Supported`/`Require` header value lists `timer`.
pub fn lists_timer(value: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("timer"))
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
        leg.handle_input(LegInput::Command(t0, LegCommand::Transfer { refer: false }));
        assert_eq!(drain(&mut leg).last(), Some(&LegOutput::DialTransfer));
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferFailed));
        assert_eq!(
            leg.state(),
            LegState::Confirmed,
            "a failed transfer leaves the call"
        );
        leg.handle_input(LegInput::Command(t0, LegCommand::Transfer { refer: false }));
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
    fn remembered_readings_follow_the_region() {
        let us = Region::default();
        let gb: Region = "GB".parse().unwrap();
        for _ in 0..2 {
            // The second round is answered from the memo: same readings.
            assert_eq!(
                normalise_user("4155550100", us).map(|e| e.to_string()),
                Some("+14155550100".into())
            );
            assert_eq!(
                normalise_user("02079460000", gb).map(|e| e.to_string()),
                Some("+442079460000".into())
            );
            assert_eq!(
                normalise_user("02079460000", us).map(|e| e.to_string()),
                None,
                "a UK national number is not a US one"
            );
        }
    }

    #[test]
    fn transfer_falls_back_from_refer_to_bridge_to_failed() {
        let t0 = Instant::now();
        let mut plan = TransferPlan::new(true, Duration::from_secs(45));
        assert_eq!(plan.start(t0), TransferStep::Refer);
        assert_eq!(plan.handle_refer_response(403), Some(TransferStep::Bridge));
        assert!(!plan.refer_pending());
        assert_eq!(
            plan.handle_bridge_result(Err(TransferFailure::Busy)),
            TransferStep::Done(TransferResult::Failed(TransferFailure::Busy))
        );
        let mut plan = TransferPlan::new(false, Duration::from_secs(45));
        assert_eq!(plan.start(t0), TransferStep::Bridge);
        assert_eq!(plan.next_timeout(), None);
        let mut plan = TransferPlan::new(true, Duration::from_secs(45));
        plan.start(t0);
        assert_eq!(
            plan.handle_refer_response(202),
            None,
            "202 waits for NOTIFY"
        );
        assert_eq!(plan.handle_notify(100), None, "progress");
        assert_eq!(
            plan.handle_notify(200),
            Some(TransferStep::Done(TransferResult::Referred))
        );
        assert_eq!(plan.handle_notify(503), None, "nothing after the outcome");
    }

    /// A leg answered and confirmed at `t0`.
    fn confirmed(t0: Instant) -> CallLeg {
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ack));
        drain(&mut leg);
        leg
    }

    fn refer(leg: &mut CallLeg, now: Instant) {
        leg.handle_input(LegInput::Command(now, LegCommand::Transfer { refer: true }));
        assert_eq!(drain(leg), vec![LegOutput::SendRefer]);
    }

    #[test]
    fn refer_with_202_and_notify_200_ends_our_leg_as_transferred() {
        let t0 = Instant::now();
        let mut leg = confirmed(t0);
        refer(&mut leg, t0);
        assert!(leg.refer_pending());
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(202)));
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferNotify(100)));
        assert!(drain(&mut leg).is_empty(), "still waiting for the outcome");
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferNotify(200)));
        let out = drain(&mut leg);
        assert_eq!(&out[..2], &[LegOutput::Referred, LegOutput::SendBye]);
        assert_eq!(
            ended(&out),
            Some((Outcome::LiveTransfer, "transferred by REFER".into()))
        );
    }

    #[test]
    fn bye_after_an_accepted_refer_is_the_carrier_releasing_us() {
        let t0 = Instant::now();
        let mut leg = confirmed(t0);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(202)));
        leg.handle_input(LegInput::Sip(t0, SipEvent::RemoteBye));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::Referred);
        assert!(!out.contains(&LegOutput::SendBye), "no BYE back to a BYE");
        assert_eq!(
            ended(&out).map(|e| e.1),
            Some("transferred by REFER".into())
        );
    }

    #[test]
    fn refused_refer_falls_back_to_the_bridge() {
        let t0 = Instant::now();
        for code in [403, 405, 501, 603] {
            let mut leg = confirmed(t0);
            refer(&mut leg, t0);
            leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(code)));
            assert_eq!(drain(&mut leg), vec![LegOutput::DialTransfer], "{code}");
            assert_eq!(leg.state(), LegState::Transferring);
            leg.handle_input(LegInput::Command(t0, LegCommand::TransferBridged));
            assert_eq!(leg.state(), LegState::Bridged);
        }
        // Accepted, then the carrier's own attempt fails: bridge.
        let mut leg = confirmed(t0);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(202)));
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferNotify(486)));
        assert_eq!(drain(&mut leg), vec![LegOutput::DialTransfer]);
        // No final response at all: bridge.
        let mut leg = confirmed(t0);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferFailed("timeout".into())));
        assert_eq!(drain(&mut leg), vec![LegOutput::DialTransfer]);
        // And a failed bridge leaves the call with the engine.
        leg.handle_input(LegInput::Command(t0, LegCommand::TransferFailed));
        assert_eq!(leg.state(), LegState::Confirmed);
        assert!(drain(&mut leg).is_empty());
    }

    #[test]
    fn refer_without_a_final_notify_falls_back_when_the_timeout_passes() {
        let t0 = Instant::now();
        let mut leg = confirmed(t0);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(202)));
        let deadline = leg.next_timeout().expect("refer timeout armed");
        assert_eq!(deadline - t0, LegTimers::default().refer);
        leg.handle_input(LegInput::Timeout(deadline - Duration::from_secs(1)));
        assert!(drain(&mut leg).is_empty());
        leg.handle_input(LegInput::Timeout(deadline));
        assert_eq!(drain(&mut leg), vec![LegOutput::DialTransfer]);
        assert_eq!(leg.next_timeout(), None);
        leg.handle_input(LegInput::Sip(deadline, SipEvent::ReferNotify(200)));
        assert!(drain(&mut leg).is_empty(), "a late NOTIFY changes nothing");
    }

    #[test]
    fn sipfrag_status_lines_are_read() {
        assert_eq!(sipfrag_status("SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status("  SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status("sip/2.0 603 Declined"), Some(603));
        assert_eq!(sipfrag_status("HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status("SIP/2.0 9999 x"), None);
        assert_eq!(sipfrag_status(""), None);
    }

    #[test]
    fn session_timer_negotiation_follows_rfc_4028() {
        let min = Duration::from_secs(90);
        let n = |se: Option<&str>, supported| negotiate_session_timer(se, supported, min);
        assert_eq!(n(None, true), SessionTimerVerdict::None);
        assert_eq!(n(Some("garbage"), true), SessionTimerVerdict::None);
        assert_eq!(
            n(Some("60;refresher=uac"), true),
            SessionTimerVerdict::TooSmall { min_se: min }
        );
        let timer = |secs, refresher| {
            SessionTimerVerdict::Use(SessionTimer {
                interval: Duration::from_secs(secs),
                refresher,
                we_are: Refresher::Uas,
            })
        };
        assert_eq!(n(Some("90"), true), timer(90, Refresher::Uac));
        assert_eq!(n(Some("1800"), false), timer(1800, Refresher::Uas));
        assert_eq!(
            n(Some("1800;refresher=uac"), false),
            timer(1800, Refresher::Uas),
            "a caller without timer support cannot refresh"
        );
        assert_eq!(
            n(Some("600; refresher=UAS"), true),
            timer(600, Refresher::Uas)
        );
        let SessionTimerVerdict::Use(t) = n(Some("90"), true) else {
            panic!("a timer")
        };
        assert_eq!(t.header_value(), "90;refresher=uac");
        assert!(t.requires_timer());
        assert!(lists_timer("100rel, Timer"));
        assert!(!lists_timer("100rel"));
    }

    fn timed_leg(t0: Instant, refresher: Refresher) -> CallLeg {
        let mut leg = CallLeg::new(Direction::Inbound, LegTimers::default(), t0);
        leg.set_session_timer(SessionTimer {
            interval: Duration::from_secs(90),
            refresher,
            we_are: Refresher::Uas,
        });
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        leg.handle_input(LegInput::Sip(t0, SipEvent::Ack));
        drain(&mut leg);
        leg
    }

    #[test]
    fn caller_refreshes_keep_the_call_and_a_missing_one_ends_it() {
        let t0 = Instant::now();
        let mut leg = timed_leg(t0, Refresher::Uac);
        // 90 s interval: BYE at 90 − min(32, 30) = 60 s without a refresh.
        assert_eq!(leg.next_timeout(), Some(t0 + Duration::from_secs(60)));
        let t1 = t0 + Duration::from_secs(45);
        leg.handle_input(LegInput::Sip(t1, SipEvent::SessionRefreshed(None)));
        assert_eq!(leg.next_timeout(), Some(t1 + Duration::from_secs(60)));
        leg.handle_input(LegInput::Timeout(t0 + Duration::from_secs(60)));
        assert!(drain(&mut leg).is_empty(), "the refresh moved the deadline");
        leg.handle_input(LegInput::Timeout(t1 + Duration::from_secs(60)));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::SendBye);
        assert_eq!(
            ended(&out),
            Some((Outcome::Resolved, "session timer expired".into()))
        );
    }

    #[test]
    fn we_refresh_at_half_the_interval_and_end_when_a_refresh_fails() {
        let t0 = Instant::now();
        let mut leg = timed_leg(t0, Refresher::Uas);
        let half = t0 + Duration::from_secs(45);
        assert_eq!(leg.next_timeout(), Some(half));
        leg.handle_input(LegInput::Timeout(half));
        assert_eq!(drain(&mut leg), vec![LegOutput::SendRefresh]);
        leg.handle_input(LegInput::Sip(half, SipEvent::SessionRefreshed(None)));
        assert_eq!(leg.next_timeout(), Some(half + Duration::from_secs(45)));
        leg.handle_input(LegInput::Sip(half, SipEvent::RefreshFailed("481".into())));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::SendBye);
        assert_eq!(
            ended(&out).map(|e| e.1),
            Some("session refresh failed: 481".into())
        );
        assert_eq!(leg.next_timeout(), None);
    }

    #[test]
    fn a_refresh_may_renegotiate_the_interval() {
        let t0 = Instant::now();
        let mut leg = timed_leg(t0, Refresher::Uac);
        let longer = SessionTimer {
            interval: Duration::from_secs(1800),
            refresher: Refresher::Uac,
            we_are: Refresher::Uas,
        };
        leg.handle_input(LegInput::Sip(t0, SipEvent::SessionRefreshed(Some(longer))));
        assert_eq!(leg.session_timer(), Some(longer));
        assert_eq!(
            leg.next_timeout(),
            Some(t0 + Duration::from_secs(1800 - 32))
        );
    }

    #[test]
    fn our_invite_asks_for_a_timer_and_the_2xx_decides_who_refreshes() {
        let st = UacSessionTimer::new(Duration::from_secs(90));
        assert_eq!(st.interval(), UAC_SESSION_EXPIRES);
        assert_eq!(st.session_expires(), "1800");
        assert_eq!(st.min_se(), "90");
        assert_eq!(
            UacSessionTimer::new(Duration::from_secs(3600)).interval(),
            Duration::from_secs(3600),
            "never below our own Min-SE"
        );
        let timer = |secs, refresher| {
            Some(SessionTimer {
                interval: Duration::from_secs(secs),
                refresher,
                we_are: Refresher::Uac,
            })
        };
        assert_eq!(st.handle_answer(None), None, "no Session-Expires: no timer");
        assert_eq!(
            st.handle_answer(Some("90;refresher=uac")),
            timer(90, Refresher::Uac)
        );
        assert_eq!(
            st.handle_answer(Some("600; Refresher=UAS")),
            timer(600, Refresher::Uas)
        );
        assert_eq!(
            st.handle_answer(Some("1800")),
            timer(1800, Refresher::Uac),
            "no refresher in the 2xx: we refresh"
        );
        assert_eq!(st.handle_answer(Some("0;refresher=uac")), None);
        assert_eq!(st.handle_answer(Some("soon")), None);
        let ours = st.handle_answer(Some("90;refresher=uac"));
        assert_eq!(
            ours.map(|t| t.header_value()),
            Some("90;refresher=uac".into())
        );
        assert!(
            ours.is_some_and(|t| t.we_refresh() && !t.requires_timer()),
            "our refresh requests carry no Require: timer"
        );
    }

    #[test]
    fn a_422_earns_one_retry_with_its_min_se() {
        let mut st = UacSessionTimer::new(Duration::from_secs(90));
        assert_eq!(
            st.handle_too_small(Some("3600")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(st.session_expires(), "3600");
        assert_eq!(st.min_se(), "3600");
        assert_eq!(st.handle_too_small(Some("7200")), None, "only once");
        for silly in [None, Some("x"), Some("60"), Some("1800"), Some("4000000")] {
            let mut st = UacSessionTimer::new(Duration::from_secs(90));
            assert_eq!(st.handle_too_small(silly), None, "{silly:?}");
        }
    }

    fn outbound_timed_leg(t0: Instant, refresher: Refresher) -> CallLeg {
        let mut leg = CallLeg::new(Direction::Outbound, LegTimers::default(), t0);
        leg.set_session_timer(SessionTimer {
            interval: Duration::from_secs(90),
            refresher,
            we_are: Refresher::Uac,
        });
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        assert_eq!(drain(&mut leg), vec![LegOutput::Answered]);
        leg
    }

    #[test]
    fn on_calls_we_place_we_refresh_when_the_callee_says_uac() {
        let t0 = Instant::now();
        let mut leg = outbound_timed_leg(t0, Refresher::Uac);
        let half = t0 + Duration::from_secs(45);
        assert_eq!(leg.next_timeout(), Some(half));
        leg.handle_input(LegInput::Timeout(half));
        assert_eq!(drain(&mut leg), vec![LegOutput::SendRefresh]);
        let answered = half + Duration::from_millis(20);
        leg.handle_input(LegInput::Sip(answered, SipEvent::SessionRefreshed(None)));
        assert_eq!(leg.next_timeout(), Some(answered + Duration::from_secs(45)));
        assert_eq!(leg.state(), LegState::Confirmed, "the call stays up");
    }

    #[test]
    fn on_calls_we_place_a_callee_that_stops_refreshing_is_hung_up() {
        let t0 = Instant::now();
        let mut leg = outbound_timed_leg(t0, Refresher::Uas);
        // 90 s interval: BYE at 90 − min(32, 30) = 60 s without a refresh.
        let expiry = t0 + Duration::from_secs(60);
        assert_eq!(leg.next_timeout(), Some(expiry));
        let t1 = t0 + Duration::from_secs(40);
        leg.handle_input(LegInput::Sip(t1, SipEvent::SessionRefreshed(None)));
        leg.handle_input(LegInput::Timeout(expiry));
        assert!(drain(&mut leg).is_empty(), "the callee's refresh counted");
        leg.handle_input(LegInput::Timeout(t1 + Duration::from_secs(60)));
        let out = drain(&mut leg);
        assert_eq!(out[0], LegOutput::SendBye);
        assert_eq!(
            ended(&out),
            Some((Outcome::Resolved, "session timer expired".into()))
        );
    }

    #[test]
    fn calls_we_place_transfer_by_refer_too() {
        let t0 = Instant::now();
        let mut leg = CallLeg::new(Direction::Outbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        drain(&mut leg);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(202)));
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferNotify(200)));
        let out = drain(&mut leg);
        assert_eq!(&out[..2], &[LegOutput::Referred, LegOutput::SendBye]);
        assert_eq!(
            ended(&out),
            Some((Outcome::LiveTransfer, "transferred by REFER".into()))
        );
        let mut leg = CallLeg::new(Direction::Outbound, LegTimers::default(), t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::Answered));
        drain(&mut leg);
        refer(&mut leg, t0);
        leg.handle_input(LegInput::Sip(t0, SipEvent::ReferAnswered(403)));
        assert_eq!(drain(&mut leg), vec![LegOutput::DialTransfer]);
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
