//! Bridged G.711 calls on loopback, against a trivial in-process UDP relay.
//!
//! `cargo bench -p switchboard-rtp --bench relay`
//!
//! For each call count N (default 100, 250, 500, 1000; `RELAY_CALLS=50,100`)
//! and for `RELAY_SECS` seconds (default 8) each of:
//!
//! - **bridge**: per call, a synthetic caller and a synthetic rep (a 20 ms
//!   PCMU packet each way every tick; one peer task, one caller socket and
//!   one rep socket per 25 calls, so the peers stay cheap) talk through two
//!   switchboard legs joined by [`bridge`] (one task per bridged call
//!   forwarding each packet as it arrives, header rewritten, recording off;
//!   `RELAY_RECORD=1` records each call's first leg, both directions, to
//!   WAV files in a temporary directory);
//! - **baseline**: the same peers through a plain relay (one task per call
//!   and direction doing `recv_from` → `send_to`, no decoding).
//!
//! The relay under test (bridge or baseline) runs on its own tokio runtime
//! with **one** worker thread (`sb-relay`; `RELAY_THREADS`), the peers on
//! another runtime with one (`RELAY_PEER_THREADS`), so "calls per core" is measured rather than inferred: the relay
//! thread's CPU time (`/proc/self/task/*/stat`) over the run gives its share
//! of one core, and calls ÷ share is the calls one core would carry at that
//! cost. Relay CPU per packet is that CPU time divided by packets delivered;
//! process CPU per packet (peers included) is reported too.
//!
//! Each payload carries its send time (µs since the run started) in
//! nibble-coded bytes that survive µ-law decode/encode, so the receiving
//! peer measures one-way delay; lost packets are those that never arrive
//! intact. RSS per idle leg is the growth of VmRSS over 200 started legs
//! with no incoming RTP; RSS per idle bridged call the same over 200
//! bridged calls (two legs each).
//!
//! Prints a table and writes `$CARGO_TARGET_DIR/bench/rtp-relay.json`.

#![allow(clippy::unwrap_used)] // reason: a benchmark aborts on setup failure

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use switchboard_media::rtp::{RtpHeader, RtpPacket};
use switchboard_rtp::{bridge, BridgeHandle, MediaConfig, MediaEngine, PortRange};
use tokio::net::UdpSocket;
use tokio::runtime::Handle;

const TAG: u8 = 0x99;
const IDLE_LEGS: usize = 200;

#[derive(Debug, Default, Clone)]
struct Outcome {
    calls: usize,
    seconds: f64,
    sent: u64,
    delivered: u64,
    loss_pct: f64,
    cpu_us_per_packet: f64,
    relay_cpu_us_per_packet: f64,
    /// The relay thread's busy share of one core over the run.
    relay_core_share: f64,
    delay_p50_ms: f64,
    delay_p99_ms: f64,
}

/// `RELAY_THREADS` (default 1): worker threads of the relay runtime. Calls
/// per core stay N ÷ the threads' summed core share.
fn relay_threads() -> usize {
    std::env::var("RELAY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// `RELAY_PEER_THREADS` (default 1): worker threads of the synthetic peers.
/// One carries 1,000 calls' peers (~0.7 of a core) and leaves the second
/// core to the relay thread instead of three busy threads sharing two.
fn peer_threads() -> usize {
    std::env::var("RELAY_PEER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// Thread name of the relay runtime's workers.
const RELAY_THREAD: &str = "sb-relay";

fn main() {
    let calls: Vec<usize> = std::env::var("RELAY_CALLS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 250, 500, 1000]);
    let secs: u64 = std::env::var("RELAY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    // Kept until the end of the run: the recordings' directory.
    let record = std::env::var("RELAY_RECORD")
        .is_ok_and(|v| v == "1")
        .then(|| tempfile::tempdir().unwrap());
    let record_dir = record.as_ref().map(|d| d.path().to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(peer_threads())
        .thread_name("sb-peers")
        .enable_all()
        .build()
        .unwrap();
    let relay_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(relay_threads())
        .thread_name(RELAY_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let relay = relay_runtime.handle().clone();
    runtime.block_on(async move {
        let rss_per_idle_leg_kib = idle_leg_rss(&relay).await;
        let rss_per_idle_bridge_kib = idle_bridge_rss(&relay).await;
        let mut rows = Vec::new();
        for &n in &calls {
            let baseline = run_baseline(&relay, n, secs).await;
            let bridged = run_bridge(&relay, n, secs, record_dir.as_deref()).await;
            rows.push((baseline, bridged));
        }
        if record_dir.is_some() {
            println!("recording on: each bridged call's first leg, both directions");
        }
        report(&rows, rss_per_idle_leg_kib, rss_per_idle_bridge_kib);
    });
    drop(relay_runtime);
}

fn engine() -> MediaEngine {
    MediaEngine::new(MediaConfig {
        bind_ip: [127, 0, 0, 1].into(),
        ports: PortRange::new(20_000, 29_999),
        no_rtp_timeout: Duration::from_secs(600),
        ..MediaConfig::default()
    })
}

fn offer_for(port: u16) -> String {
    format!(
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

async fn bind() -> UdpSocket {
    UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

async fn idle_leg_rss(relay: &Handle) -> f64 {
    let engine = engine();
    let sink = bind().await;
    let offer = offer_for(sink.local_addr().unwrap().port());
    // Warm up allocators and the runtime with a few legs first.
    let warm: Vec<_> = futures_legs(relay, &engine, &offer, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let legs = futures_legs(relay, &engine, &offer, IDLE_LEGS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    for leg in warm.iter().chain(legs.iter()) {
        leg.handle().stop();
    }
    for leg in warm.iter().chain(legs.iter()) {
        leg.handle().closed().await;
    }
    drop(sink);
    (after - before) / IDLE_LEGS as f64
}

/// Bridged calls with no traffic: two legs and a bridge each.
async fn idle_bridge_rss(relay: &Handle) -> f64 {
    let engine = engine();
    let (warm, _peers) = bridged_calls(relay, &engine, 10, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let (bridges, _more_peers) = bridged_calls(relay, &engine, IDLE_LEGS, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    for b in warm.iter().chain(bridges.iter()) {
        b.stop();
    }
    for b in warm.iter().chain(bridges.iter()) {
        b.wait().await;
    }
    (after - before) / IDLE_LEGS as f64
}

async fn futures_legs(
    relay: &Handle,
    engine: &MediaEngine,
    offer: &str,
    n: usize,
) -> Vec<switchboard_rtp::MediaLeg> {
    let mut legs = Vec::with_capacity(n);
    for _ in 0..n {
        let (endpoint, _) = engine.answer(offer).await.unwrap();
        let _relay = relay.enter();
        legs.push(endpoint.start(None));
    }
    // Keep the event channels drained so the legs stay alive and idle.
    legs
}

/// Calls whose callers share one socket and whose reps share another, so
/// the synthetic peers cost little next to the relay under test.
const PEER_GROUP: usize = 25;

/// Where one synthetic call's caller and rep send.
struct Call {
    a_to: SocketAddr,
    b_to: SocketAddr,
}

/// Up to [`PEER_GROUP`] calls driven by one task: one caller-side and one
/// rep-side socket, one 20 ms ticker.
struct Group {
    a: UdpSocket,
    b: UdpSocket,
    calls: Vec<Call>,
}

impl Group {
    async fn bind() -> Group {
        Group {
            a: bind().await,
            b: bind().await,
            calls: Vec::with_capacity(PEER_GROUP),
        }
    }

    fn ports(&self) -> (u16, u16) {
        (
            self.a.local_addr().unwrap().port(),
            self.b.local_addr().unwrap().port(),
        )
    }
}

#[derive(Default)]
struct PeerResult {
    sent: u64,
    delivered: u64,
    delays_us: Vec<u32>,
}

async fn run_peers(groups: Vec<Group>, secs: u64) -> (PeerResult, f64, f64) {
    let cpu_before = cpu_seconds();
    let relay_before = relay_cpu_seconds();
    // Independent callers' packets arrive at independent phases of the
    // 20 ms clock: spread the groups' ticks evenly over one period rather
    // than sending every call's packet in one burst.
    let count = groups.len().max(1) as u32;
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let tasks: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| {
            let first_tick = start + Duration::from_millis(20) * i as u32 / count;
            tokio::spawn(peer_task(group, secs, first_tick, (i * PEER_GROUP) as u32))
        })
        .collect();
    let mut total = PeerResult::default();
    for task in tasks {
        let r = task.await.unwrap();
        total.sent += r.sent;
        total.delivered += r.delivered;
        total.delays_us.extend(r.delays_us);
    }
    let cpu = cpu_seconds() - cpu_before;
    let relay_cpu = relay_cpu_seconds() - relay_before;
    (total, cpu, relay_cpu)
}

async fn peer_task(
    group: Group,
    secs: u64,
    first_tick: tokio::time::Instant,
    first_id: u32,
) -> PeerResult {
    let mut result = PeerResult::default();
    let mut ticker = tokio::time::interval_at(first_tick, Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end_send = first_tick + Duration::from_secs(secs);
    let end = end_send + Duration::from_millis(400);
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut buf_a = [0u8; 512];
    let mut buf_b = [0u8; 512];
    let mut packet = Vec::with_capacity(200);
    for sock in [&group.a, &group.b] {
        // The kernel stamps each datagram as it is queued on the peer's
        // socket, so the peer's own wake-up delay stays out of the figure.
        setsockopt(sock, sockopt::ReceiveTimestampns, &true).unwrap();
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if now >= end { break; }
                if now < end_send {
                    for (i, call) in group.calls.iter().enumerate() {
                        for (sock, to) in [(&group.a, call.a_to), (&group.b, call.b_to)] {
                            // Stamped just before its own send.
                            packet.clear();
                            RtpHeader { marker: false, payload_type: 0, sequence: seq, timestamp: ts, ssrc: first_id + i as u32 }
                                .write(&tagged_payload(), &mut packet);
                            if sock.send_to(&packet, to).await.is_ok() { result.sent += 1; }
                        }
                    }
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(160);
                }
            }
            Ok((len, at)) = recv_stamped(&group.a, &mut buf_a) => record(&buf_a[..len], at, &mut result),
            Ok((len, at)) = recv_stamped(&group.b, &mut buf_b) => record(&buf_b[..len], at, &mut result),
        }
    }
    result
}

/// Receives one datagram and the kernel's receive time (µs of the
/// realtime clock, wrapping), if the kernel gave one.
async fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<u32>)> {
    let fd = sock.as_raw_fd();
    sock.async_io(tokio::io::Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(TimeSpec);
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT)
            .map_err(std::io::Error::from)?;
        let at = msg.cmsgs().ok().and_then(|mut cmsgs| {
            cmsgs.find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(t) => {
                    Some((t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000) as u32)
                }
                _ => None,
            })
        });
        Ok((msg.bytes, at))
    })
    .await
}

/// Microseconds of the realtime clock (the kernel's receive stamps use it),
/// wrapping at 32 bits.
fn realtime_us() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u32)
}

fn tagged_payload() -> [u8; 160] {
    // A loud-ish µ-law pattern; bytes 0x80..=0x8F and 0x99 round-trip
    // through decode/encode unchanged.
    let mut payload = [0xA0u8; 160];
    let us = realtime_us();
    payload[0] = TAG;
    for i in 0..8 {
        payload[1 + i] = 0x80 | ((us >> (28 - 4 * i)) & 0xF) as u8;
    }
    payload[9] = TAG;
    payload
}

fn record(datagram: &[u8], at: Option<u32>, result: &mut PeerResult) {
    let Ok(packet) = RtpPacket::parse(datagram) else {
        return;
    };
    let p = packet.payload();
    if p.len() != 160 || p[0] != TAG || p[9] != TAG {
        return;
    }
    let mut us = 0u32;
    for &b in &p[1..9] {
        if b & 0xF0 != 0x80 {
            return;
        }
        us = (us << 4) | u32::from(b & 0xF);
    }
    let now = at.unwrap_or_else(realtime_us);
    result.delivered += 1;
    result.delays_us.push(now.wrapping_sub(us));
}

async fn run_baseline(relay_rt: &Handle, n: usize, secs: u64) -> Outcome {
    let mut groups: Vec<Group> = Vec::with_capacity(n.div_ceil(PEER_GROUP));
    let mut relays = Vec::with_capacity(2 * n);
    for i in 0..n {
        if i % PEER_GROUP == 0 {
            groups.push(Group::bind().await);
        }
        let group = groups.last_mut().unwrap();
        let (a_addr, b_addr) = (group.a.local_addr().unwrap(), group.b.local_addr().unwrap());
        let bind_std = || {
            let s = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let (ra, rb) = (bind_std(), bind_std());
        group.calls.push(Call {
            a_to: ra.local_addr().unwrap(),
            b_to: rb.local_addr().unwrap(),
        });
        // On the relay runtime: recv on one side, send from the other.
        let _relay = relay_rt.enter();
        let ra = Arc::new(UdpSocket::from_std(ra).unwrap());
        let rb = Arc::new(UdpSocket::from_std(rb).unwrap());
        relays.push(tokio::spawn(relay(
            Arc::clone(&ra),
            Arc::clone(&rb),
            b_addr,
        )));
        relays.push(tokio::spawn(relay(rb, ra, a_addr)));
    }
    let (result, cpu, relay_cpu) = run_peers(groups, secs).await;
    for r in relays {
        r.abort();
    }
    outcome(n, secs, result, cpu, relay_cpu)
}

async fn relay(from: Arc<UdpSocket>, out: Arc<UdpSocket>, to: SocketAddr) {
    let mut buf = [0u8; 2048];
    while let Ok((len, _)) = from.recv_from(&mut buf).await {
        let _ = out.send_to(&buf[..len], to).await;
    }
}

async fn run_bridge(relay: &Handle, n: usize, secs: u64, record: Option<&Path>) -> Outcome {
    let engine = engine();
    let (bridges, groups) = bridged_calls(relay, &engine, n, record).await;
    // Let the legs' handover to their bridges finish before measuring.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (result, cpu, relay_cpu) = run_peers(groups, secs).await;
    for b in &bridges {
        b.stop();
    }
    for b in &bridges {
        b.wait().await;
    }
    outcome(n, secs, result, cpu, relay_cpu)
}

/// `n` bridged calls on the relay runtime, with their peers' sockets.
async fn bridged_calls(
    relay: &Handle,
    engine: &MediaEngine,
    n: usize,
    record: Option<&Path>,
) -> (Vec<BridgeHandle>, Vec<Group>) {
    let mut groups: Vec<Group> = Vec::with_capacity(n.div_ceil(PEER_GROUP));
    let mut bridges: Vec<BridgeHandle> = Vec::with_capacity(n);
    for i in 0..n {
        if i % PEER_GROUP == 0 {
            groups.push(Group::bind().await);
        }
        let group = groups.last_mut().unwrap();
        let (a_port, b_port) = group.ports();
        let (endpoint_a, _) = engine.answer(&offer_for(a_port)).await.unwrap();
        let (pending, _) = engine.offer().await.unwrap();
        let endpoint_b = pending.accept_answer(&offer_for(b_port)).unwrap();
        group.calls.push(Call {
            a_to: endpoint_a.local_addr(),
            b_to: endpoint_b.local_addr(),
        });
        let _relay = relay.enter();
        let wav = record.map(|dir| dir.join(format!("{n}-{i}.wav")));
        bridges.push(bridge(endpoint_a.start(wav), endpoint_b.start(None)));
    }
    (bridges, groups)
}

fn outcome(calls: usize, secs: u64, mut r: PeerResult, cpu: f64, relay_cpu: f64) -> Outcome {
    r.delays_us.sort_unstable();
    let pct = |p: f64| {
        r.delays_us
            .get(((r.delays_us.len() as f64 - 1.0) * p) as usize)
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    Outcome {
        calls,
        seconds: secs as f64,
        sent: r.sent,
        delivered: r.delivered,
        loss_pct: 100.0 * (1.0 - r.delivered as f64 / r.sent.max(1) as f64),
        cpu_us_per_packet: cpu * 1e6 / r.delivered.max(1) as f64,
        relay_cpu_us_per_packet: relay_cpu * 1e6 / r.delivered.max(1) as f64,
        relay_core_share: relay_cpu / secs as f64,
        delay_p50_ms: pct(0.5),
        delay_p99_ms: pct(0.99),
    }
}

fn report(rows: &[(Outcome, Outcome)], rss_per_idle_leg_kib: f64, rss_per_idle_bridge_kib: f64) {
    println!();
    println!(
        "rtp relay bench: bridged G.711 calls vs a plain UDP relay \
         (loopback, relay on {} worker thread(s), peers on {})",
        relay_threads(),
        peer_threads()
    );
    println!(
        "{:>6} {:>9} | {:>7} {:>8} {:>8} | {:>11} {:>10} {:>10} {:>10}",
        "calls",
        "variant",
        "loss %",
        "p50 ms",
        "p99 ms",
        "relay µs/pkt",
        "core share",
        "calls/core",
        "proc µs/pkt"
    );
    let mut json_rows = Vec::new();
    for (base, bridged) in rows {
        for (name, o) in [("baseline", base), ("bridge", bridged)] {
            println!(
                "{:>6} {:>9} | {:>7.3} {:>8.2} {:>8.2} | {:>11.2} {:>10.2} {:>10.0} {:>10.2}",
                o.calls,
                name,
                o.loss_pct,
                o.delay_p50_ms,
                o.delay_p99_ms,
                o.relay_cpu_us_per_packet,
                o.relay_core_share,
                o.calls as f64 / o.relay_core_share.max(1e-9),
                o.cpu_us_per_packet,
            );
        }
        let relay_ratio = bridged.relay_cpu_us_per_packet / base.relay_cpu_us_per_packet.max(1e-9);
        let ratio = bridged.cpu_us_per_packet / base.cpu_us_per_packet.max(1e-9);
        let added_p50 = bridged.delay_p50_ms - base.delay_p50_ms;
        let added_p99 = bridged.delay_p99_ms - base.delay_p99_ms;
        println!(
            "{:>6} {:>9} | relay cpu per packet {relay_ratio:.2}× baseline (process {ratio:.2}×), \
             added delay p50 {added_p50:.2} ms, p99 {added_p99:.2} ms",
            bridged.calls, "ratio",
        );
        json_rows.push(serde_json::json!({
            "calls": bridged.calls,
            "seconds": bridged.seconds,
            "baseline": to_json(base),
            "bridge": to_json(bridged),
            "relay_cpu_ratio": relay_ratio,
            "cpu_ratio": ratio,
            "added_delay_p50_ms": added_p50,
            "added_delay_p99_ms": added_p99,
        }));
    }
    println!("rss per idle leg: {rss_per_idle_leg_kib:.1} KiB ({IDLE_LEGS} legs)");
    println!(
        "rss per idle bridged call: {rss_per_idle_bridge_kib:.1} KiB ({IDLE_LEGS} calls, two legs each)"
    );
    let json = serde_json::json!({
        "bench": "rtp-relay",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "relay_worker_threads": relay_threads(),
        "rss_per_idle_leg_kib": rss_per_idle_leg_kib,
        "rss_per_idle_bridged_call_kib": rss_per_idle_bridge_kib,
        "runs": json_rows,
    });
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from("target"))
        .join("bench");
    let path = dir.join("rtp-relay.json");
    match std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap_or_default()))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn to_json(o: &Outcome) -> serde_json::Value {
    serde_json::json!({
        "sent": o.sent,
        "delivered": o.delivered,
        "loss_pct": o.loss_pct,
        "cpu_us_per_packet": o.cpu_us_per_packet,
        "relay_cpu_us_per_packet": o.relay_cpu_us_per_packet,
        "relay_core_share": o.relay_core_share,
        "delay_p50_ms": o.delay_p50_ms,
        "delay_p99_ms": o.delay_p99_ms,
    })
}

/// CPU time (user + system) of the relay runtime's threads, in seconds.
fn relay_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .is_some_and(|(comm, _)| comm.starts_with(RELAY_THREAD))
        })
        .map(|stat| stat_cpu_seconds(&stat))
        .sum()
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .map(|stat| stat_cpu_seconds(&stat))
        .unwrap_or(0.0)
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may contain spaces) start at ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall: 11 and 12 after ')'.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}
