//! A call through an impaired network: a namespace pair joined by a veth,
//! `tc netem loss 5% delay 40ms 40ms` on the caller's side, our `Telephony`
//! in the root namespace on the veth address, and the caller — this test
//! binary re-run under `ip netns exec` with `SB_NETEM_TARGET` set, so
//! `netem_caller_role` dials with `dial_uri` from inside the namespace.
//!
//! Needs root and `ip netns`; without them the test prints why and passes,
//! unless `CI` is set. Kernels without `sch_netem` (some containers) fall
//! back to a `tbf` rate limit just under the G.711 bit rate, which also
//! drops and queues packets; the test says which one it used.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::{harness, tone_frame, wav_peaks, Behaviour, NUMBER};
use switchboard_rtp::{MediaConfig, MediaEngine, MediaEvent, PortRange};
use switchboard_telephony::{dial_uri, DialUriOptions};

const TARGET_ENV: &str = "SB_NETEM_TARGET";
const BIND_ENV: &str = "SB_NETEM_BIND";

/// Removes the namespace and the veth pair, whatever happens to the test.
struct Netns {
    name: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn skip(reason: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("netem test cannot run in CI: {reason}");
    }
    eprintln!("note: netem test skipped: {reason}");
    true
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Creates the pair and impairs the caller's side; returns the guard,
/// (our address, the caller's address) and what impairment is applied.
fn setup() -> Result<(Netns, IpAddr, IpAddr, &'static str)> {
    let id = std::process::id();
    let name = format!("sbnetem{id}");
    let (host_if, ns_if) = (
        format!("sbh{}", id % 1_000_000),
        format!("sbn{}", id % 1_000_000),
    );
    let subnet = 10 + id % 240;
    let ours: IpAddr = format!("10.99.{subnet}.1").parse()?;
    let theirs: IpAddr = format!("10.99.{subnet}.2").parse()?;
    run(&["ip", "netns", "add", &name])?;
    let guard = Netns {
        name: name.clone(),
        host_if: host_if.clone(),
    };
    run(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
    ])?;
    run(&["ip", "link", "set", &ns_if, "netns", &name])?;
    run(&["ip", "addr", "add", &format!("{ours}/24"), "dev", &host_if])?;
    run(&["ip", "link", "set", &host_if, "up"])?;
    let ns = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    };
    ns(&["ip", "addr", "add", &format!("{theirs}/24"), "dev", &ns_if])?;
    ns(&["ip", "link", "set", &ns_if, "up"])?;
    ns(&["ip", "link", "set", "lo", "up"])?;
    let netem = ns(&[
        "tc", "qdisc", "add", "dev", &ns_if, "root", "netem", "loss", "5%", "delay", "40ms", "40ms",
    ]);
    let impairment = match netem {
        Ok(()) => "netem loss 5% delay 40ms 40ms",
        Err(e) => {
            eprintln!("note: {e}; falling back to tbf");
            // G.711 RTP is ~86 kbit/s on the wire: once the small bucket
            // is spent (about 1.5 s), 78 kbit/s drops ~9 % and queues up
            // to 80 ms.
            ns(&[
                "tc", "qdisc", "add", "dev", &ns_if, "root", "tbf", "rate", "78kbit", "burst",
                "1600", "latency", "80ms",
            ])?;
            "tbf rate 78kbit burst 1600 latency 80ms (no sch_netem in this kernel)"
        }
    };
    Ok((guard, ours, theirs, impairment))
}

#[tokio::test]
async fn call_through_lossy_jittery_namespace_completes_and_records() -> Result<()> {
    if std::env::var_os(TARGET_ENV).is_some() {
        return Ok(()); // we are the caller process; see netem_caller_role
    }
    if !is_root() {
        skip("not root");
        return Ok(());
    }
    if Command::new("ip").args(["netns", "list"]).output().is_err() {
        skip("`ip netns` unavailable");
        return Ok(());
    }
    let (_guard, ours, theirs, impairment) = match setup() {
        Ok(v) => v,
        Err(e) => {
            skip(&format!("cannot create the namespace pair: {e}"));
            return Ok(());
        }
    };
    let behaviour = Behaviour {
        hangup_after: Some(Duration::from_secs(6)),
        play_tone: true,
    };
    let mut h = harness(ours, &format!("{theirs}/32"), behaviour).await?;
    let target = format!("sip:{NUMBER}@{}", h.tel.local_addr());
    let exe = std::env::current_exe()?;
    let caller = tokio::process::Command::new("ip")
        .args(["netns", "exec", &_guard.name])
        .arg(&exe)
        .args([
            "--exact",
            "netem_caller_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(TARGET_ENV, &target)
        .env(BIND_ENV, theirs.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), caller)
        .await
        .context("the caller did not finish in 60 s")??;
    let caller_log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "caller failed:\n{caller_log}");
    assert!(
        caller_log.contains("1 passed"),
        "the caller role ran:\n{caller_log}"
    );
    let report = h.next_report(Duration::from_secs(20)).await?;
    eprintln!("impairment: {impairment}\nserver side: {report:?}");
    eprintln!(
        "caller side: {}",
        caller_log
            .lines()
            .find_map(|l| l.find("caller stats").map(|i| &l[i..]))
            .unwrap_or("?")
    );
    assert_eq!(report.ended.as_deref(), Some("agent hung up"));
    assert!(
        report.frames >= 250,
        "frames reached the handler: {report:?}"
    );
    assert!(
        report.loud_frames >= 150,
        "the caller's tone arrived: {report:?}"
    );
    assert!(
        report.lost > 0 && report.concealed > 0,
        "the impairment was felt (loss concealed): {report:?}"
    );
    let sessions = h.ended_sessions(1).await?;
    assert!(sessions[0].answered_at.is_some());
    let path = report.recording.context("no recording path")?;
    let (left, right, frames) = wav_peaks(&path)?;
    assert!(
        frames >= 8_000 * 5,
        "about 6 s recorded, got {frames} samples"
    );
    assert!(left > 1_000, "caller audio recorded (peak {left})");
    assert!(right > 1_000, "our tone recorded (peak {right})");
    Ok(())
}

/// The caller, inside the namespace: dials, sends a tone, waits for our
/// BYE. A no-op unless run by the test above.
#[tokio::test]
async fn netem_caller_role() -> Result<()> {
    let Ok(target) = std::env::var(TARGET_ENV) else {
        return Ok(());
    };
    let bind: IpAddr = std::env::var(BIND_ENV)?.parse()?;
    let engine = MediaEngine::new(MediaConfig {
        bind_ip: bind,
        ports: PortRange::new(40_000, 40_999),
        ..Default::default()
    });
    let mut call = dial_uri(
        &target,
        &engine,
        DialUriOptions {
            bind: SocketAddr::new(bind, 0),
            from: "+14155550199".into(),
            ..Default::default()
        },
    )
    .await?;
    let media = call.media.handle();
    let mut ended = call.control.ended();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut sent, mut heard) = (0u64, 0u64);
    loop {
        tokio::select! {
            ev = call.media.events.recv() => match ev {
                Some(MediaEvent::Audio(frame)) => {
                    if !frame.is_silence() {
                        heard += 1;
                    }
                    if call.media.audio_out.try_send(tone_frame(sent)).is_ok() {
                        sent += 1;
                    }
                }
                Some(_) => {}
                None => break,
            },
            r = ended.changed() => if r.is_err() || ended.borrow().is_some() { break },
            _ = tokio::time::sleep_until(give_up) => bail!("the call was not ended by the callee in 30 s"),
        }
    }
    let stats = media.stats();
    println!(
        "caller stats: sent {sent} frames, heard {heard} non-silent, packets in {} lost {} concealed {}",
        stats.packets_in, stats.lost, stats.concealed
    );
    assert_eq!(
        call.control.ended().borrow().as_deref(),
        Some("callee hung up")
    );
    assert!(heard > 100, "the caller heard our tone");
    // Our 200 to the BYE may be the packet the network drops: stay up to
    // answer its retransmissions (timer E) instead of leaving the server
    // waiting out timer F.
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(call);
    Ok(())
}
