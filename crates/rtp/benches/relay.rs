//! Bridged G.711 calls on loopback, against a trivial in-process UDP relay.
//!
//! `cargo bench -p switchboard-rtp --bench relay`
//!
//! For each call count N (default 100, 250, 500; `RELAY_CALLS=50,100`) and
//! for `RELAY_SECS` seconds (default 8) each of:
//!
//! - **bridge**: per call, a synthetic caller and a synthetic rep (one task
//!   per call sends a 20 ms PCMU packet each way every tick) talk through two
//!   switchboard legs joined by [`bridge`]: decode, jitter buffer, pacing,
//!   re-encode;
//! - **baseline**: the same peers through a plain relay (one task per call
//!   and direction doing `recv_from` → `send_to`, no decoding).
//!
//! Each payload carries its send time (µs since the run started) in
//! nibble-coded bytes that survive µ-law decode/encode, so the receiving
//! peer measures one-way delay; lost packets are those that never arrive
//! intact (concealed frames do not carry the tag). CPU per packet is the
//! process CPU time (`/proc/self/stat` utime + stime, both peers included in
//! both variants) divided by packets delivered. RSS per idle leg is the
//! growth of VmRSS over 200 started legs with no incoming RTP.
//!
//! Prints a table and writes `$CARGO_TARGET_DIR/bench/rtp-relay.json`.

#![allow(clippy::unwrap_used)] // reason: a benchmark aborts on setup failure

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_media::rtp::{RtpHeader, RtpPacket};
use switchboard_rtp::{bridge, BridgeHandle, MediaConfig, MediaEngine, PortRange};
use tokio::net::UdpSocket;

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
    delay_p50_ms: f64,
    delay_p99_ms: f64,
}

fn main() {
    let calls: Vec<usize> = std::env::var("RELAY_CALLS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 250, 500]);
    let secs: u64 = std::env::var("RELAY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let epoch = Instant::now();
        let rss_per_idle_leg_kib = idle_leg_rss(epoch).await;
        let mut rows = Vec::new();
        for &n in &calls {
            let baseline = run_baseline(n, secs, epoch).await;
            let bridged = run_bridge(n, secs, epoch).await;
            rows.push((baseline, bridged));
        }
        report(&rows, rss_per_idle_leg_kib);
    });
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

async fn idle_leg_rss(_epoch: Instant) -> f64 {
    let engine = engine();
    let sink = bind().await;
    let offer = offer_for(sink.local_addr().unwrap().port());
    // Warm up allocators and the runtime with a few legs first.
    let warm: Vec<_> = futures_legs(&engine, &offer, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let legs = futures_legs(&engine, &offer, IDLE_LEGS).await;
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

async fn futures_legs(
    engine: &MediaEngine,
    offer: &str,
    n: usize,
) -> Vec<switchboard_rtp::MediaLeg> {
    let mut legs = Vec::with_capacity(n);
    for _ in 0..n {
        let (endpoint, _) = engine.answer(offer).await.unwrap();
        legs.push(endpoint.start(None));
    }
    // Keep the event channels drained so the legs stay alive and idle.
    legs
}

/// One synthetic call: two peer sockets, each sending to `to_*`.
struct Call {
    a: UdpSocket,
    b: UdpSocket,
    a_to: SocketAddr,
    b_to: SocketAddr,
}

#[derive(Default)]
struct PeerResult {
    sent: u64,
    delivered: u64,
    delays_us: Vec<u32>,
}

async fn run_peers(calls: Vec<Call>, secs: u64, epoch: Instant) -> (PeerResult, f64) {
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| tokio::spawn(peer_task(call, secs, epoch, i as u32)))
        .collect();
    let mut total = PeerResult::default();
    for task in tasks {
        let r = task.await.unwrap();
        total.sent += r.sent;
        total.delivered += r.delivered;
        total.delays_us.extend(r.delays_us);
    }
    let cpu = cpu_seconds() - cpu_before;
    let _ = started;
    (total, cpu)
}

async fn peer_task(call: Call, secs: u64, epoch: Instant, id: u32) -> PeerResult {
    let mut result = PeerResult::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end_send = tokio::time::Instant::now() + Duration::from_secs(secs);
    let end = end_send + Duration::from_millis(400);
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut buf_a = [0u8; 512];
    let mut buf_b = [0u8; 512];
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if now >= end { break; }
                if now < end_send {
                    let payload = tagged_payload(epoch);
                    let packet = RtpHeader { marker: false, payload_type: 0, sequence: seq, timestamp: ts, ssrc: id }.to_packet(&payload);
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(160);
                    if call.a.send_to(&packet, call.a_to).await.is_ok() { result.sent += 1; }
                    if call.b.send_to(&packet, call.b_to).await.is_ok() { result.sent += 1; }
                }
            }
            Ok((len, _)) = call.a.recv_from(&mut buf_a) => record(&buf_a[..len], epoch, &mut result),
            Ok((len, _)) = call.b.recv_from(&mut buf_b) => record(&buf_b[..len], epoch, &mut result),
        }
    }
    result
}

fn tagged_payload(epoch: Instant) -> [u8; 160] {
    // A loud-ish µ-law pattern; bytes 0x80..=0x8F and 0x99 round-trip
    // through decode/encode unchanged.
    let mut payload = [0xA0u8; 160];
    let us = epoch.elapsed().as_micros() as u32;
    payload[0] = TAG;
    for i in 0..8 {
        payload[1 + i] = 0x80 | ((us >> (28 - 4 * i)) & 0xF) as u8;
    }
    payload[9] = TAG;
    payload
}

fn record(datagram: &[u8], epoch: Instant, result: &mut PeerResult) {
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
    let now = epoch.elapsed().as_micros() as u32;
    result.delivered += 1;
    result.delays_us.push(now.wrapping_sub(us));
}

async fn run_baseline(n: usize, secs: u64, epoch: Instant) -> Outcome {
    let mut calls = Vec::with_capacity(n);
    let mut relays = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (bind().await, bind().await);
        let (ra, rb) = (Arc::new(bind().await), Arc::new(bind().await));
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        calls.push(Call {
            a_to: ra.local_addr().unwrap(),
            b_to: rb.local_addr().unwrap(),
            a,
            b,
        });
        // recv on one side, send from the other, like a media relay.
        relays.push(tokio::spawn(relay(
            Arc::clone(&ra),
            Arc::clone(&rb),
            b_addr,
        )));
        relays.push(tokio::spawn(relay(rb, ra, a_addr)));
    }
    let (result, cpu) = run_peers(calls, secs, epoch).await;
    for r in relays {
        r.abort();
    }
    outcome(n, secs, result, cpu)
}

async fn relay(from: Arc<UdpSocket>, out: Arc<UdpSocket>, to: SocketAddr) {
    let mut buf = [0u8; 2048];
    while let Ok((len, _)) = from.recv_from(&mut buf).await {
        let _ = out.send_to(&buf[..len], to).await;
    }
}

async fn run_bridge(n: usize, secs: u64, epoch: Instant) -> Outcome {
    let engine = engine();
    let mut calls = Vec::with_capacity(n);
    let mut bridges: Vec<BridgeHandle> = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (bind().await, bind().await);
        let (endpoint_a, _) = engine
            .answer(&offer_for(a.local_addr().unwrap().port()))
            .await
            .unwrap();
        let (pending, _) = engine.offer().await.unwrap();
        let endpoint_b = pending
            .accept_answer(&offer_for(b.local_addr().unwrap().port()))
            .unwrap();
        calls.push(Call {
            a_to: endpoint_a.local_addr(),
            b_to: endpoint_b.local_addr(),
            a,
            b,
        });
        bridges.push(bridge(endpoint_a.start(None), endpoint_b.start(None)));
    }
    let (result, cpu) = run_peers(calls, secs, epoch).await;
    for b in &bridges {
        b.stop();
    }
    for b in &bridges {
        b.wait().await;
    }
    outcome(n, secs, result, cpu)
}

fn outcome(calls: usize, secs: u64, mut r: PeerResult, cpu: f64) -> Outcome {
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
        delay_p50_ms: pct(0.5),
        delay_p99_ms: pct(0.99),
    }
}

fn report(rows: &[(Outcome, Outcome)], rss_per_idle_leg_kib: f64) {
    println!();
    println!("rtp relay bench: bridged G.711 calls vs a plain UDP relay (loopback, both peers in-process)");
    println!(
        "{:>6} {:>9} | {:>8} {:>10} {:>9} {:>9} | {:>8} {:>10} {:>9} {:>9} | {:>8}",
        "calls", "variant", "loss %", "cpu µs/pkt", "p50 ms", "p99 ms", "", "", "", "", "cpu ×"
    );
    let mut json_rows = Vec::new();
    for (base, bridged) in rows {
        for (name, o) in [("baseline", base), ("bridge", bridged)] {
            println!(
                "{:>6} {:>9} | {:>8.3} {:>10.2} {:>9.2} {:>9.2} |",
                o.calls, name, o.loss_pct, o.cpu_us_per_packet, o.delay_p50_ms, o.delay_p99_ms
            );
        }
        let ratio = bridged.cpu_us_per_packet / base.cpu_us_per_packet.max(1e-9);
        println!(
            "{:>6} {:>9} | cpu per packet {ratio:.2}× baseline, added p50 delay {:.2} ms",
            bridged.calls,
            "ratio",
            bridged.delay_p50_ms - base.delay_p50_ms
        );
        json_rows.push(serde_json::json!({
            "calls": bridged.calls,
            "seconds": bridged.seconds,
            "baseline": to_json(base),
            "bridge": to_json(bridged),
            "cpu_ratio": ratio,
            "added_delay_p50_ms": bridged.delay_p50_ms - base.delay_p50_ms,
            "added_delay_p99_ms": bridged.delay_p99_ms - base.delay_p99_ms,
        }));
    }
    println!("rss per idle leg: {rss_per_idle_leg_kib:.1} KiB ({IDLE_LEGS} legs)");
    let json = serde_json::json!({
        "bench": "rtp-relay",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rss_per_idle_leg_kib": rss_per_idle_leg_kib,
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
        "delay_p50_ms": o.delay_p50_ms,
        "delay_p99_ms": o.delay_p99_ms,
    })
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
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
