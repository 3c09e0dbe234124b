//! Real-process tests: sipp calls our SIP endpoint on 127.0.0.1.
//!
//! Each test starts its own `Telephony` on an ephemeral port with a fresh
//! SQLite store, runs one sipp scenario from `tests/sipp/`, and checks what a
//! user would see: the SIP outcome (sipp's exit code) and the session rows.
//! Without `sipp` the tests print why and pass, unless `CI` is set.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchboard_model::{
    Agent, AgentInput, ContactInput, Direction, Outcome, Region, Session, SessionStatus,
    TrunkInput, TrunkTransfer, E164,
};
use switchboard_rtp::{MediaConfig, MediaEvent, PortRange};
use switchboard_store::{testing::sqlite_store, SessionFilter, Store};
use switchboard_telephony::{
    dial_uri, ActiveCall, CallHandler, DialUriOptions, SipConfig, Telephony, TransferFailure,
    TransferOptions, TransferOutcome, TrunkReload,
};
use tokio::sync::mpsc;

mod common;

const NUMBER: &str = "+14155550100";
const SERVICE: &str = "14155550100";

/// What the test handler saw of one call.
#[derive(Debug)]
struct Report {
    frames: u64,
    packets_in: u64,
    rejected: u64,
    ended: Option<String>,
    transfer: Option<TransferOutcome>,
}

#[derive(Clone)]
enum Mode {
    /// Transfer to this target at once; hang up if that fails.
    Transfer(String),
    /// Listen until the caller hangs up.
    Listen,
    /// Hang up after this long.
    HangupAfter(Duration),
}

struct TestHandler {
    mode: Mode,
    reports: mpsc::UnboundedSender<Report>,
}

impl CallHandler for TestHandler {
    fn handle(
        &self,
        mut call: ActiveCall,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let mode = self.mode.clone();
        let reports = self.reports.clone();
        Box::pin(async move {
            let media = call.media.handle();
            let mut ended = call.control.ended();
            let start = tokio::time::Instant::now();
            let hangup_at = match mode {
                Mode::HangupAfter(d) => start + d,
                Mode::Listen | Mode::Transfer(_) => start + Duration::from_secs(3600),
            };
            let mut transfer = None;
            if let Mode::Transfer(target) = &mode {
                let (outcome, back) = call
                    .control
                    .transfer(target, call.media, TransferOptions::default())
                    .await;
                transfer = Some(outcome.clone());
                // Failed: the leg is ours again; say goodbye.
                if let Some(media) = back {
                    call.control.hangup("agent hung up");
                    drop(media);
                }
                let mut ended = call.control.ended();
                tokio::time::timeout(Duration::from_secs(30), ended.wait_for(|e| e.is_some()))
                    .await
                    .ok();
                let ended = call.control.ended().borrow().clone();
                reports
                    .send(Report {
                        frames: 0,
                        packets_in: 0,
                        rejected: 0,
                        ended,
                        transfer,
                    })
                    .ok();
                return;
            }
            let give_up = start + Duration::from_secs(60);
            let mut frames = 0u64;
            let mut hung_up = false;
            loop {
                tokio::select! {
                    ev = call.media.events.recv() => match ev {
                        Some(MediaEvent::Audio(_)) => frames += 1,
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::time::sleep_until(hangup_at), if !hung_up => {
                        hung_up = true;
                        call.control.hangup("agent hung up");
                    }
                    r = ended.changed() => {
                        if r.is_err() || ended.borrow().is_some() { break }
                    }
                    _ = tokio::time::sleep_until(give_up) => break,
                }
            }
            let stats = media.stats();
            let (packets_in, rejected) = (stats.packets_in, stats.rejected);
            let ended = call.control.ended().borrow().clone();
            reports
                .send(Report {
                    frames,
                    packets_in,
                    rejected,
                    ended,
                    transfer,
                })
                .ok();
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    tel: Telephony,
    agent: Agent,
    reports: mpsc::UnboundedReceiver<Report>,
}

fn sipp_available() -> bool {
    let found = std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("sipp is required in CI (apt-get install sip-tester)");
        }
        eprintln!("note: sipp not found; sipp tests skipped (apt-get install sip-tester)");
    }
    found
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A media port for sipp: even, with the next three free too.
fn free_media_port() -> u16 {
    for _ in 0..50 {
        let p = free_udp_port();
        let p = p - p % 2;
        if p > 1024 && (0..4).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            return p;
        }
    }
    40000
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

async fn harness_with(mode: Mode, tweak: impl FnOnce(&mut SipConfig)) -> Result<Harness> {
    harness_full(mode, TrunkTransfer::Bridge, tweak).await
}

/// As [`harness_with`], with the loopback trunk's transfer method.
async fn harness_full(
    mode: Mode,
    transfer: TrunkTransfer,
    tweak: impl FnOnce(&mut SipConfig),
) -> Result<Harness> {
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let agent = store
        .create_agent(
            &AgentInput {
                name: "Support".into(),
                max_concurrent_calls: Some(500),
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    let number = E164::parse_strict(NUMBER)?;
    store.add_number(&number, Some(agent.id), "main").await?;
    store
        .create_trunk(
            &TrunkInput {
                name: "local".into(),
                host: "127.0.0.1".into(),
                allowed_cidrs: vec!["127.0.0.0/8".into()],
                transfer,
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    store
        .create_contact(
            &ContactInput {
                phone: "+14155550199".into(),
                name: "Ana".into(),
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    let mut cfg = SipConfig {
        listen: "127.0.0.1:0".parse()?,
        media: MediaConfig {
            bind_ip: "127.0.0.1".parse()?,
            ports: PortRange::new(20_000, 29_999),
            ..Default::default()
        },
        recordings_dir: dir.path().join("recordings"),
        ..Default::default()
    };
    tweak(&mut cfg);
    let (tx, reports) = mpsc::unbounded_channel();
    let handler = Arc::new(TestHandler { mode, reports: tx });
    let tel = Telephony::start(store.clone(), cfg, handler).await?;
    Ok(Harness {
        _dir: dir,
        store,
        tel,
        agent,
        reports,
    })
}

async fn harness(mode: Mode) -> Result<Harness> {
    harness_with(mode, |_| {}).await
}

/// Runs sipp against `target`; Ok(()) when every call succeeded.
async fn sipp(scenario_name: &str, target: SocketAddr, extra: &[&str]) -> Result<()> {
    let port = free_udp_port().to_string();
    let media_port = free_media_port().to_string();
    let path = scenario(scenario_name);
    let mut args: Vec<String> = vec![
        target.to_string(),
        "-sf".into(),
        path.display().to_string(),
        "-s".into(),
        SERVICE.into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port,
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        media_port,
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
        "-nostdin".into(),
    ];
    if !extra.contains(&"-m") {
        args.extend(["-m".into(), "1".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("sipp")
            .args(&args)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .context("sipp did not finish in 90 s")??;
    if !out.status.success() {
        bail!(
            "sipp {scenario_name} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn sessions(store: &Store) -> Result<Vec<Session>> {
    Ok(store
        .list_sessions(&SessionFilter {
            limit: 500,
            ..Default::default()
        })
        .await?)
}

/// Waits (bounded) until every session has ended.
async fn ended_sessions(store: &Store, expected: usize) -> Result<Vec<Session>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = sessions(store).await?;
        if all.len() >= expected && all.iter().all(|s| s.status == SessionStatus::Ended) {
            return Ok(all);
        }
        if Instant::now() > deadline {
            bail!("sessions did not end: {all:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_report(h: &mut Harness) -> Result<Report> {
    tokio::time::timeout(Duration::from_secs(30), h.reports.recv())
        .await
        .context("no call reached the handler")?
        .context("handler channel closed")
}

#[tokio::test]
async fn basic_call_is_answered_with_g711_audio_and_caller_hangs_up() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::Listen).await?;
    sipp("uac_caller_hangup.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert!(
        report.packets_in > 10,
        "RTP from sipp reached us: {report:?}"
    );
    assert!(
        report.frames > 10,
        "the engine got audio frames: {report:?}"
    );
    assert_eq!(
        report.rejected, 0,
        "every 20 ms packet accepted: {report:?}"
    );
    assert_eq!(report.ended.as_deref(), Some("caller hung up"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].direction, Direction::Inbound);
    assert_eq!(s[0].agent_id, Some(h.agent.id));
    assert_eq!(s[0].from, "+14155550199");
    assert_eq!(s[0].to, NUMBER);
    assert!(s[0].contact_id.is_some(), "caller matched to the contact");
    assert!(s[0].answered_at.is_some());
    assert_eq!(s[0].end_reason.as_deref(), Some("caller hung up"));
    assert_eq!(s[0].outcome, Some(Outcome::Resolved));
    Ok(())
}

/// Debian sipp's stock sample sends 30 ms PCMA packets: every one must be
/// accepted and re-framed into 20 ms frames for the engine.
#[tokio::test]
async fn stock_g711a_pcap_with_30ms_packets_reaches_the_handler() -> Result<()> {
    const STOCK_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
    if !sipp_available() {
        return Ok(());
    }
    if !Path::new(STOCK_PCAP).exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{STOCK_PCAP} is required in CI (apt-get install sip-tester)");
        }
        eprintln!("note: {STOCK_PCAP} not found; test skipped");
        return Ok(());
    }
    let mut h = harness(Mode::Listen).await?;
    sipp("uac_stock_g711a_30ms.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    // 236 packets of 30 ms = 7.08 s = 354 frames; allow for the jitter
    // buffer's start and the BYE racing the last packets.
    assert!(
        report.packets_in >= 200,
        "30 ms RTP from sipp accepted: {report:?}"
    );
    assert!(
        report.frames >= 300,
        "the engine got 20 ms frames: {report:?}"
    );
    assert_eq!(report.rejected, 0, "no 30 ms packet rejected: {report:?}");
    assert_eq!(report.ended.as_deref(), Some("caller hung up"));
    let s = ended_sessions(&h.store, 1).await?;
    assert!(s[0].answered_at.is_some());
    Ok(())
}

#[tokio::test]
async fn agent_hangup_sends_bye() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::HangupAfter(Duration::from_millis(800))).await?;
    sipp("uac_agent_hangup.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("agent hung up"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("agent hung up"));
    Ok(())
}

#[tokio::test]
async fn cancel_before_answer_ends_the_session_as_cancelled() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness_with(Mode::Listen, |c| {
        c.ringing = true;
        c.answer_delay = Duration::from_secs(20);
    })
    .await?;
    sipp("uac_cancel.xml", h.tel.local_addr(), &[]).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("cancelled"));
    assert_eq!(s[0].outcome, Some(Outcome::Abandoned));
    assert!(s[0].answered_at.is_none());
    Ok(())
}

#[tokio::test]
async fn invite_from_outside_the_trunk_cidrs_gets_403_and_no_session() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    let local = h.store.find_trunk("local").await?;
    h.store.delete_trunk(local.id).await?;
    h.store
        .create_trunk(
            &TrunkInput {
                name: "carrier".into(),
                host: "192.0.2.10".into(),
                allowed_cidrs: vec!["10.0.0.0/8".into()],
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    sipp("uac_expect_403.xml", h.tel.local_addr(), &[]).await?;
    assert!(
        sessions(&h.store).await?.is_empty(),
        "no per-call state kept"
    );
    Ok(())
}

#[tokio::test]
async fn digest_only_trunk_challenges_then_accepts_right_credentials() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::Listen).await?;
    let local = h.store.find_trunk("local").await?;
    h.store.delete_trunk(local.id).await?;
    h.store
        .create_trunk(
            &TrunkInput {
                name: "pbx".into(),
                host: "127.0.0.1".into(),
                inbound_username: Some("pbxuser".into()),
                inbound_password: Some("s3cret".into()),
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    sipp(
        "uac_digest.xml",
        h.tel.local_addr(),
        &["-au", "pbxuser", "-ap", "s3cret"],
    )
    .await?;
    next_report(&mut h).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s.len(), 1, "the challenged INVITE made no session");
    assert_eq!(s[0].end_reason.as_deref(), Some("caller hung up"));
    // Wrong password: 407 again is not offered; the retry is refused.
    let err = sipp(
        "uac_digest.xml",
        h.tel.local_addr(),
        &["-au", "pbxuser", "-ap", "wrong"],
    )
    .await;
    assert!(err.is_err(), "wrong credentials must not be answered");
    assert_eq!(sessions(&h.store).await?.len(), 1);
    Ok(())
}

/// Admission keeps trunks for a moment (`directory_ttl`); `reload_trunks`
/// makes the next INVITE see a replaced trunk at once.
#[tokio::test]
async fn trunk_replaced_at_run_time_refuses_the_next_invite_after_reload() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness_with(Mode::Listen, |c| {
        c.directory_ttl = Duration::from_secs(3600)
    })
    .await?;
    sipp("uac_caller_hangup.xml", h.tel.local_addr(), &[]).await?;
    next_report(&mut h).await?;
    let local = h.store.find_trunk("local").await?;
    h.store.delete_trunk(local.id).await?;
    h.store
        .create_trunk(
            &TrunkInput {
                name: "carrier".into(),
                host: "192.0.2.10".into(),
                allowed_cidrs: vec!["10.0.0.0/8".into()],
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    h.tel.reload_trunks().await?;
    sipp("uac_expect_403.xml", h.tel.local_addr(), &[]).await?;
    assert_eq!(
        sessions(&h.store).await?.len(),
        1,
        "the refused INVITE made no session"
    );
    Ok(())
}

/// A number unbound at run time stops routing once the directory's TTL
/// has passed, without any reload.
#[tokio::test]
async fn number_deleted_at_run_time_gets_404_after_the_directory_ttl() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let ttl = Duration::from_millis(200);
    let mut h = harness_with(Mode::Listen, |c| c.directory_ttl = ttl).await?;
    sipp("uac_caller_hangup.xml", h.tel.local_addr(), &[]).await?;
    next_report(&mut h).await?;
    h.store.delete_number(&E164::parse_strict(NUMBER)?).await?;
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    sipp("uac_expect_404.xml", h.tel.local_addr(), &[]).await?;
    assert_eq!(sessions(&h.store).await?.len(), 1, "no session for the 404");
    Ok(())
}

#[tokio::test]
async fn unknown_number_gets_404() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    h.store.delete_number(&E164::parse_strict(NUMBER)?).await?;
    sipp("uac_expect_404.xml", h.tel.local_addr(), &[]).await?;
    assert!(sessions(&h.store).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn offer_without_g711_gets_488() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    sipp("uac_expect_488.xml", h.tel.local_addr(), &[]).await?;
    assert!(sessions(&h.store).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn agent_at_its_limit_gets_486() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    // A limit of one: the first call holds the slot while a second comes in.
    let mut h = harness_with(Mode::HangupAfter(Duration::from_secs(4)), |c| {
        c.max_calls_per_agent = 1;
    })
    .await?;
    let target = h.tel.local_addr();
    let first = tokio::spawn(async move { sipp("uac_agent_hangup.xml", target, &[]).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.tel.live_calls() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sipp("uac_expect_486.xml", h.tel.local_addr(), &[]).await?;
    first.await??;
    next_report(&mut h).await?;
    assert_eq!(
        sessions(&h.store).await?.len(),
        1,
        "the refused call left no row"
    );
    Ok(())
}

#[tokio::test]
async fn missing_ack_ends_the_session_with_no_ack_received() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    // T1 = 20 ms makes timer H (64 × T1) 1.28 s.
    let h = harness_with(Mode::Listen, |c| c.t1 = Duration::from_millis(20)).await?;
    sipp("uac_no_ack.xml", h.tel.local_addr(), &[]).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("no ACK received"));
    assert_eq!(s[0].outcome, Some(Outcome::Failed));
    Ok(())
}

#[tokio::test]
async fn reinvite_hold_and_in_dialog_options_are_answered() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::Listen).await?;
    sipp("uac_reinvite.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("caller hung up"));
    Ok(())
}

#[tokio::test]
async fn bye_for_an_unknown_dialog_gets_481() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    sipp("uac_unknown_bye.xml", h.tel.local_addr(), &[]).await?;
    Ok(())
}

#[tokio::test]
async fn hundred_calls_at_twenty_per_second_are_all_answered() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness_with(Mode::Listen, |c| c.max_calls_per_agent = 200).await?;
    let started = Instant::now();
    sipp(
        "uac_load.xml",
        h.tel.local_addr(),
        &["-m", "100", "-r", "20", "-l", "100"],
    )
    .await?;
    let s = ended_sessions(&h.store, 100).await?;
    eprintln!("100 calls at 20 cps took {:?}", started.elapsed());
    assert_eq!(s.len(), 100);
    assert!(s
        .iter()
        .all(|s| s.answered_at.is_some() && s.end_reason.as_deref() == Some("caller hung up")));
    Ok(())
}

#[tokio::test]
async fn test_caller_dials_our_own_endpoint() -> Result<()> {
    let mut h = harness(Mode::HangupAfter(Duration::from_millis(600))).await?;
    let engine = h.tel.engine().clone();
    let target = format!("sip:{NUMBER}@{}", h.tel.local_addr());
    let call = dial_uri(
        &target,
        &engine,
        DialUriOptions {
            from: "+14155550199".into(),
            ..Default::default()
        },
    )
    .await?;
    let mut ended = call.control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the test call did not end")??;
    assert_eq!(
        call.control.ended().borrow().as_deref(),
        Some("callee hung up")
    );
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("agent hung up"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("agent hung up"));
    Ok(())
}

async fn call_in(h: &Harness) -> Result<ActiveCall> {
    let engine = h.tel.engine().clone();
    let target = format!("sip:{NUMBER}@{}", h.tel.local_addr());
    Ok(dial_uri(
        &target,
        &engine,
        DialUriOptions {
            from: "+14155550199".into(),
            ..Default::default()
        },
    )
    .await?)
}

#[tokio::test]
async fn live_transfer_bridges_and_ends_when_the_target_hangs_up() -> Result<()> {
    let mut target = harness(Mode::HangupAfter(Duration::from_millis(800))).await?;
    let to = format!("sip:{NUMBER}@{}", target.tel.local_addr());
    let mut h = harness(Mode::Transfer(to)).await?;
    let caller = call_in(&h).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.transfer, Some(TransferOutcome::Bridged));
    assert_eq!(report.ended.as_deref(), Some("transfer target hung up"));
    let mut ended = caller.control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the caller was not hung up")??;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(s[0].end_reason.as_deref(), Some("transfer target hung up"));
    assert_eq!(
        next_report(&mut target).await?.ended.as_deref(),
        Some("agent hung up")
    );
    Ok(())
}

#[tokio::test]
async fn failed_transfer_leaves_the_call_with_the_engine() -> Result<()> {
    let target = harness(Mode::Listen).await?;
    target
        .store
        .delete_number(&E164::parse_strict(NUMBER)?)
        .await?;
    let to = format!("sip:{NUMBER}@{}", target.tel.local_addr());
    let mut h = harness(Mode::Transfer(to)).await?;
    let _caller = call_in(&h).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(
        report.transfer,
        Some(TransferOutcome::Failed(TransferFailure::Rejected(404)))
    );
    assert_eq!(
        report.ended.as_deref(),
        Some("agent hung up"),
        "the engine kept the call and ended it"
    );
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::Resolved));
    Ok(())
}

/// Starts sipp as a UAS on a free port; returns the child and the port.
fn sipp_uas(scenario_name: &str) -> Result<(tokio::process::Child, u16)> {
    sipp_uas_with(scenario_name, &[])
}

/// As [`sipp_uas`], with extra sipp arguments (e.g. `-rtp_echo`).
fn sipp_uas_with(scenario_name: &str, extra: &[&str]) -> Result<(tokio::process::Child, u16)> {
    let port = free_udp_port();
    let media_port = free_media_port();
    let child = tokio::process::Command::new("sipp")
        .args([
            "-sf",
            &scenario(scenario_name).display().to_string(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &media_port.to_string(),
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, port))
}

async fn uas_trunk(h: &Harness, port: u16) -> Result<()> {
    h.store
        .create_trunk(
            &TrunkInput {
                name: "carrier".into(),
                host: "127.0.0.1".into(),
                port: Some(port),
                allowed_cidrs: vec!["127.0.0.1".into()],
                outbound_username: Some("trunkuser".into()),
                outbound_password: Some("trunkpw".into()),
                outbound_caller_id: Some("+14155550100".into()),
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    Ok(())
}

async fn uas_finished(child: tokio::process::Child) -> Result<()> {
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .context("sipp uas did not finish")??;
    if !out.status.success() {
        bail!(
            "sipp uas failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn dial_req(timeout: Duration) -> switchboard_telephony::DialRequest {
    switchboard_telephony::DialRequest {
        to: "+14155550123".into(),
        trunk: Some("carrier".into()),
        no_answer_timeout: Some(timeout),
        ..Default::default()
    }
}

/// A trunk with `register = true`: we REGISTER, answer the registrar's
/// digest challenge with the trunk's outbound credentials, and refresh
/// before the granted 2 s expire.
#[tokio::test]
async fn trunk_registers_with_digest_and_refreshes_before_expiry() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    let (child, port) = sipp_uas("uas_registrar.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.store
        .create_trunk(
            &TrunkInput {
                name: "registrar".into(),
                host: "127.0.0.1".into(),
                port: Some(port),
                allowed_cidrs: vec!["127.0.0.1".into()],
                outbound_username: Some("trunkuser".into()),
                outbound_password: Some("trunkpw".into()),
                register: true,
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    assert_eq!(h.tel.register_trunks().await?, 1);
    assert_eq!(h.tel.register_trunks().await?, 0, "one keeper per trunk");
    uas_finished(child).await
}

/// Trunks added and removed at run time: `reload_trunks` starts a keeper
/// for a new registering trunk, stops the keeper of a removed one, and
/// changes nothing when called again. (Nobody listens on the registrar's
/// port; the keepers back off meanwhile.)
#[tokio::test]
async fn reload_trunks_follows_trunks_added_and_removed_at_run_time() -> Result<()> {
    let h = harness(Mode::Listen).await?;
    let port = free_udp_port();
    let spec = |name: &str| {
        TrunkInput {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: Some(port),
            allowed_cidrs: vec!["127.0.0.1".into()],
            outbound_username: Some("trunkuser".into()),
            outbound_password: Some("trunkpw".into()),
            register: true,
            ..Default::default()
        }
        .validate(Region::default())
    };
    let first = h.store.create_trunk(&spec("first")?).await?;
    let started = TrunkReload {
        started: 1,
        stopped: 0,
    };
    assert_eq!(h.tel.reload_trunks().await?, started);
    assert_eq!(h.tel.reload_trunks().await?, TrunkReload::default());
    h.store.delete_trunk(first.id).await?;
    h.store.create_trunk(&spec("second")?).await?;
    assert_eq!(
        h.tel.reload_trunks().await?,
        TrunkReload {
            started: 1,
            stopped: 1
        }
    );
    assert_eq!(h.tel.reload_trunks().await?, TrunkReload::default());
    Ok(())
}

#[tokio::test]
async fn outbound_call_through_a_trunk_answers_after_digest_retry() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    let (uas, port) = sipp_uas("uas_answer_with_auth.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    uas_trunk(&h, port).await?;
    let call = h.tel.dial(dial_req(Duration::from_secs(10))).await?;
    assert_eq!(call.info.direction, Direction::Outbound);
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.control.hangup("agent hung up");
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].direction, Direction::Outbound);
    assert_eq!(s[0].to, "+14155550123");
    assert_eq!(s[0].from, "+14155550100", "the trunk's caller id");
    assert!(s[0].answered_at.is_some());
    assert_eq!(s[0].end_reason.as_deref(), Some("agent hung up"));
    Ok(())
}

#[tokio::test]
async fn outbound_busy_is_reported_in_words() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    let (uas, port) = sipp_uas("uas_busy.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    uas_trunk(&h, port).await?;
    let err = h
        .tel
        .dial(dial_req(Duration::from_secs(10)))
        .await
        .err()
        .context("a busy callee must not connect")?;
    assert!(
        matches!(err, switchboard_telephony::DialError::Busy),
        "{err}"
    );
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("busy"));
    assert_eq!(s[0].outcome, Some(Outcome::Failed));
    Ok(())
}

#[tokio::test]
async fn outbound_no_answer_sends_cancel() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    let (uas, port) = sipp_uas("uas_no_answer.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    uas_trunk(&h, port).await?;
    let err = h
        .tel
        .dial(dial_req(Duration::from_millis(1500)))
        .await
        .err()
        .context("nobody answers")?;
    assert!(
        matches!(err, switchboard_telephony::DialError::NoAnswer),
        "{err}"
    );
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("no answer"));
    Ok(())
}

#[tokio::test]
async fn call_over_tcp_is_answered() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::HangupAfter(Duration::from_millis(500))).await?;
    sipp("uac_agent_hangup.xml", h.tel.local_addr(), &["-t", "t1"]).await?;
    assert_eq!(
        next_report(&mut h).await?.ended.as_deref(),
        Some("agent hung up")
    );
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("agent hung up"));
    Ok(())
}

#[tokio::test]
async fn malformed_sip_is_dropped_and_calls_still_work() -> Result<()> {
    let mut h = harness(Mode::HangupAfter(Duration::from_millis(300))).await?;
    let junk: [&[u8]; 6] = [
        b"",
        b"\x00\xff\xfe garbage",
        b"INVITE sip:+14155550100@127.0.0.1 SIP/2.0\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\nFrom: <>\r\nTo: <>\r\nCall-ID: 1\r\nCSeq: x INVITE\r\nContent-Length: 99999\r\n\r\nv=0",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: zz\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
    ];
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for msg in junk {
        sock.send_to(msg, h.tel.local_addr()).await?;
    }
    let mut tcp = tokio::net::TcpStream::connect(h.tel.local_addr()).await?;
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"\x16\x03\x01 not sip at all\r\n\r\n").await?;
    drop(tcp);
    let call = call_in(&h).await?;
    let mut ended = call.control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the call after the junk did not end")??;
    assert_eq!(
        next_report(&mut h).await?.ended.as_deref(),
        Some("agent hung up")
    );
    Ok(())
}

/// A measurement, not a gate: `cargo test -p switchboard-telephony --test
/// sipp -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "load measurement; run by hand"]
async fn measure_500_calls_at_100_per_second() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness_with(Mode::Listen, |c| c.max_calls_per_agent = 500).await?;
    let started = Instant::now();
    sipp(
        "uac_load.xml",
        h.tel.local_addr(),
        &["-m", "500", "-r", "100", "-l", "500"],
    )
    .await?;
    let s = ended_sessions(&h.store, 500).await?;
    eprintln!("500 calls at 100 cps took {:?}", started.elapsed());
    assert!(s.iter().all(|s| s.answered_at.is_some()));
    Ok(())
}

// ---------------------------------------------------------------------------
// Blind transfer by REFER (trunk `transfer = refer`)

/// A carrier that honours REFER: 202, NOTIFY `SIP/2.0 200 OK`; we hang up
/// our leg and the session ends as a live transfer "transferred by REFER".
/// The scenario checks Refer-To (the number on the trunk) and Referred-By.
#[tokio::test]
async fn refer_accepted_by_the_carrier_ends_our_leg_as_transferred() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness_full(
        Mode::Transfer("+14155550123".into()),
        TrunkTransfer::Refer,
        |_| {},
    )
    .await?;
    sipp("uac_refer_accepted.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.transfer, Some(TransferOutcome::Referred));
    assert_eq!(report.ended.as_deref(), Some("transferred by REFER"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(s[0].end_reason.as_deref(), Some("transferred by REFER"));
    Ok(())
}

/// A second server that answers as the transfer target and hangs up after
/// `after`; returns it and its SIP URI.
async fn bridge_target(after: Duration) -> Result<(Harness, String)> {
    let target = harness(Mode::HangupAfter(after)).await?;
    let uri = format!("sip:{NUMBER}@{}", target.tel.local_addr());
    Ok((target, uri))
}

async fn refused_refer_falls_back_to_the_bridge(scenario_name: &str) -> Result<()> {
    let (mut target, uri) = bridge_target(Duration::from_millis(800)).await?;
    let mut h = harness_full(Mode::Transfer(uri), TrunkTransfer::Refer, |_| {}).await?;
    sipp(scenario_name, h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.transfer, Some(TransferOutcome::Bridged));
    assert_eq!(report.ended.as_deref(), Some("transfer target hung up"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(
        next_report(&mut target).await?.ended.as_deref(),
        Some("agent hung up"),
        "the bridge really reached the target"
    );
    Ok(())
}

/// 603 to our REFER: we dial the target ourselves and bridge.
#[tokio::test]
async fn refer_declined_by_the_carrier_falls_back_to_a_bridge() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    refused_refer_falls_back_to_the_bridge("uac_refer_declined.xml").await
}

/// 202, then the carrier's attempt fails (NOTIFY `SIP/2.0 486 Busy Here`):
/// we bridge.
#[tokio::test]
async fn refer_whose_notify_reports_failure_falls_back_to_a_bridge() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    refused_refer_falls_back_to_the_bridge("uac_refer_notify_busy.xml").await
}

// ---------------------------------------------------------------------------
// Session timers (RFC 4028)

/// Session-Expires: 90 with the caller refreshing: the 200 and the answer
/// to the refresh re-INVITE carry Session-Expires and Require: timer (the
/// scenario checks both); the call goes on until the caller hangs up.
#[tokio::test]
async fn session_timer_is_granted_and_a_refresh_reinvite_is_answered() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness(Mode::Listen).await?;
    sipp("uac_session_timer_refresh.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("caller hung up"));
    Ok(())
}

/// A caller that never refreshes is hung up when the interval runs out.
/// Min-SE is lowered to 1 s so the 3 s timer expires quickly.
#[tokio::test]
async fn caller_that_never_refreshes_is_hung_up_when_the_session_timer_expires() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness_with(Mode::Listen, |c| {
        c.min_session_expires = Duration::from_secs(1);
    })
    .await?;
    sipp("uac_session_timer_expires.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("session timer expired"));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("session timer expired"));
    Ok(())
}

/// A caller that does not support timers (a proxy asked for one): we are
/// the refresher and send a refresh re-INVITE at half the interval, which
/// the scenario checks for `refresher=uas` and answers; the call goes on
/// until the caller hangs up.
#[tokio::test]
async fn we_refresh_the_session_when_the_caller_cannot() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let mut h = harness_with(Mode::Listen, |c| {
        c.min_session_expires = Duration::from_secs(1);
    })
    .await?;
    sipp("uac_session_timer_we_refresh.xml", h.tel.local_addr(), &[]).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.ended.as_deref(), Some("caller hung up"));
    Ok(())
}

/// Session-Expires: 30 is below our Min-SE: 422 with Min-SE: 90, no row.
#[tokio::test]
async fn session_interval_below_min_se_gets_422() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let h = harness(Mode::Listen).await?;
    sipp("uac_session_timer_too_small.xml", h.tel.local_addr(), &[]).await?;
    assert!(sessions(&h.store).await?.is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------
// Session timers and REFER on calls we place (sipp is the callee's UAS)

/// A trunk named "carrier" to a sipp UAS on `port` (no digest).
async fn callee_trunk(h: &Harness, port: u16, transfer: TrunkTransfer) -> Result<()> {
    h.store
        .create_trunk(
            &TrunkInput {
                name: "carrier".into(),
                host: "127.0.0.1".into(),
                port: Some(port),
                allowed_cidrs: vec!["127.0.0.1".into()],
                outbound_caller_id: Some("+14155550100".into()),
                transfer,
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    Ok(())
}

/// Dials the sipp UAS running `scenario_name` through a "carrier" trunk;
/// Min-SE is lowered to 1 s so the scenarios can grant short intervals.
async fn dial_sipp(
    scenario_name: &str,
    transfer: TrunkTransfer,
) -> Result<(Harness, tokio::process::Child, ActiveCall)> {
    let h = harness_with(Mode::Listen, |c| {
        c.min_session_expires = Duration::from_secs(1);
    })
    .await?;
    let (uas, port) = sipp_uas(scenario_name)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    callee_trunk(&h, port, transfer).await?;
    let call = h.tel.dial(dial_req(Duration::from_secs(10))).await?;
    Ok((h, uas, call))
}

/// Waits (bounded) for the call to end; its end reason.
async fn end_reason(control: &switchboard_telephony::CallControl) -> Result<String> {
    let mut ended = control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the call did not end")??;
    let reason = control.ended().borrow().clone();
    reason.context("ended without a reason")
}

/// Our INVITE asks for a timer (Session-Expires, Supported: timer, Min-SE;
/// the scenario checks them); the callee answers `Session-Expires:
/// 4;refresher=uac`, so we refresh by re-INVITE every 2 s (it checks
/// refresher=uac on two of them), and the call is still up past the 4 s
/// interval when the callee hangs up.
#[tokio::test]
async fn calls_we_place_refresh_the_session_when_the_callee_makes_us_the_refresher() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (h, uas, call) =
        dial_sipp("uas_session_timer_we_refresh.xml", TrunkTransfer::Bridge).await?;
    let answered = Instant::now();
    assert_eq!(end_reason(&call.control).await?, "callee hung up");
    assert!(
        answered.elapsed() > Duration::from_secs(4),
        "the call outlived the session interval"
    );
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("callee hung up"));
    Ok(())
}

/// The callee takes the refresher role (`Session-Expires: 3;refresher=uas`)
/// and never refreshes: we hang up when the session expires (3 s − 1 s).
#[tokio::test]
async fn calls_we_place_end_when_the_refreshing_callee_goes_silent() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (h, uas, call) = dial_sipp(
        "uas_session_timer_never_refreshes.xml",
        TrunkTransfer::Bridge,
    )
    .await?;
    let answered = Instant::now();
    assert_eq!(end_reason(&call.control).await?, "session timer expired");
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
        "BYE at the expiry, not before or long after: {after:?}"
    );
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].end_reason.as_deref(), Some("session timer expired"));
    Ok(())
}

/// 422 with Min-SE: 3600 to our INVITE: we try again once, asking for
/// 3600 s (the scenario checks it), and the call connects.
#[tokio::test]
async fn calls_we_place_retry_once_after_422_with_the_callees_min_se() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (h, uas, call) = dial_sipp("uas_session_timer_422.xml", TrunkTransfer::Bridge).await?;
    assert_eq!(end_reason(&call.control).await?, "callee hung up");
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert!(s[0].answered_at.is_some());
    Ok(())
}

/// A call we placed through a `transfer = refer` trunk: REFER to the
/// callee's side (the scenario checks Refer-To and Referred-By), 202, NOTIFY
/// `SIP/2.0 200 OK`; we hang up and the session ends "transferred by REFER".
#[tokio::test]
async fn calls_we_place_transfer_by_refer_on_a_refer_trunk() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (h, uas, call) = dial_sipp("uas_refer_accepted.xml", TrunkTransfer::Refer).await?;
    let ActiveCall { control, media, .. } = call;
    let (outcome, back) = tokio::time::timeout(
        Duration::from_secs(20),
        control.transfer("+14155550123", media, TransferOptions::default()),
    )
    .await
    .context("the transfer did not finish")?;
    assert_eq!(outcome, TransferOutcome::Referred);
    assert!(back.is_none(), "the leg is the carrier's now");
    assert_eq!(end_reason(&control).await?, "transferred by REFER");
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(s[0].end_reason.as_deref(), Some("transferred by REFER"));
    Ok(())
}

/// The callee's side answers our REFER 403: we dial the target ourselves
/// and bridge it; the target hangs up and we release the callee.
#[tokio::test]
async fn calls_we_place_fall_back_to_the_bridge_when_refer_is_refused() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (mut target, uri) = bridge_target(Duration::from_millis(800)).await?;
    let (h, uas, call) = dial_sipp("uas_refer_refused.xml", TrunkTransfer::Refer).await?;
    let ActiveCall { control, media, .. } = call;
    let (outcome, back) = tokio::time::timeout(
        Duration::from_secs(20),
        control.transfer(&uri, media, TransferOptions::default()),
    )
    .await
    .context("the transfer did not finish")?;
    assert_eq!(outcome, TransferOutcome::Bridged);
    assert!(back.is_none());
    assert_eq!(end_reason(&control).await?, "transfer target hung up");
    uas_finished(uas).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(
        next_report(&mut target).await?.ended.as_deref(),
        Some("agent hung up"),
        "the bridge really reached the target"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Live transfer to a real rep (a sipp UAS that echoes RTP)

/// What the test caller heard while talking.
#[derive(Debug, Default)]
struct Heard {
    /// Frames louder than -40 dBFS (our own tone, echoed by the rep).
    loud: u64,
    packets_in: u64,
    packets_out: u64,
}

/// The test caller sends a 1 kHz tone (one frame per frame heard) until it
/// has heard `enough` loud frames, its call ends, or 20 s pass.
async fn talk(caller: &mut ActiveCall, enough: u64) -> Heard {
    let media = caller.media.handle();
    let ended = caller.control.ended();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut heard = Heard::default();
    let mut sent = 0u64;
    while heard.loud < enough && ended.borrow().is_none() {
        tokio::select! {
            ev = caller.media.events.recv() => match ev {
                Some(MediaEvent::Audio(frame)) => {
                    if switchboard_media::Level::of(&frame).is_above(-40.0) {
                        heard.loud += 1;
                    }
                    if caller.media.audio_out.try_send(common::tone_frame(sent)).is_ok() {
                        sent += 1;
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
    let stats = media.stats();
    heard.packets_in = stats.packets_in;
    heard.packets_out = stats.packets_out;
    heard
}

/// The caller's tone crosses the bridge to the rep and comes back (the rep
/// echoes it), so audio flows both ways; the rep's BYE ends both legs.
#[tokio::test]
async fn live_transfer_to_a_rep_carries_audio_both_ways_and_the_reps_bye_ends_both_legs(
) -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (rep, port) = sipp_uas_with("uas_rep_hangs_up.xml", &["-rtp_echo"])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut h = harness(Mode::Transfer(format!("sip:rep@127.0.0.1:{port}"))).await?;
    let mut caller = call_in(&h).await?;
    let heard = talk(&mut caller, 50).await;
    assert!(
        heard.loud >= 50,
        "the caller heard its tone back through the rep: {heard:?}"
    );
    assert!(
        heard.packets_out >= 50 && heard.packets_in >= 50,
        "{heard:?}"
    );
    let mut ended = caller.control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the rep's BYE did not end the caller's leg")??;
    assert_eq!(
        caller.control.ended().borrow().as_deref(),
        Some("callee hung up")
    );
    uas_finished(rep).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.transfer, Some(TransferOutcome::Bridged));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(s[0].end_reason.as_deref(), Some("transfer target hung up"));
    Ok(())
}

/// The caller's BYE ends the rep's leg too.
#[tokio::test]
async fn live_transfer_to_a_rep_ends_both_legs_when_the_caller_hangs_up() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (rep, port) = sipp_uas_with("uas_rep_answers.xml", &["-rtp_echo"])?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut h = harness(Mode::Transfer(format!("sip:rep@127.0.0.1:{port}"))).await?;
    let mut caller = call_in(&h).await?;
    let heard = talk(&mut caller, 25).await;
    assert!(heard.loud >= 25, "bridged with audio: {heard:?}");
    caller.control.hangup("caller hung up");
    uas_finished(rep).await.context("the rep got no BYE")?;
    let report = next_report(&mut h).await?;
    assert_eq!(report.transfer, Some(TransferOutcome::Bridged));
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::LiveTransfer));
    assert_eq!(s[0].end_reason.as_deref(), Some("caller hung up"));
    Ok(())
}

/// A busy rep (486): the transfer fails with `Busy` and the engine keeps
/// the caller (the binary turns this into logged escalation).
#[tokio::test]
async fn transfer_to_a_busy_rep_fails_and_the_engine_keeps_the_call() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (rep, port) = sipp_uas("uas_busy.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut h = harness(Mode::Transfer(format!("sip:rep@127.0.0.1:{port}"))).await?;
    let _caller = call_in(&h).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(
        report.transfer,
        Some(TransferOutcome::Failed(TransferFailure::Busy))
    );
    assert_eq!(report.ended.as_deref(), Some("agent hung up"));
    uas_finished(rep).await?;
    let s = ended_sessions(&h.store, 1).await?;
    assert_eq!(s[0].outcome, Some(Outcome::Resolved));
    Ok(())
}

/// A rep who never answers: CANCEL after the no-answer timeout, `NoAnswer`.
#[tokio::test]
async fn transfer_to_a_rep_who_never_answers_fails_with_no_answer() -> Result<()> {
    if !sipp_available() {
        return Ok(());
    }
    let (rep, port) = sipp_uas("uas_no_answer.xml")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut h = harness_with(Mode::Transfer(format!("sip:rep@127.0.0.1:{port}")), |c| {
        c.no_answer_timeout = Duration::from_secs(2);
    })
    .await?;
    let _caller = call_in(&h).await?;
    let report = next_report(&mut h).await?;
    assert_eq!(
        report.transfer,
        Some(TransferOutcome::Failed(TransferFailure::NoAnswer))
    );
    uas_finished(rep).await?;
    Ok(())
}
