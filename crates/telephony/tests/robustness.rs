//! What a public SIP port receives besides calls: the RFC 4475 torture
//! messages (`tests/data/rfc4475/*.sip`), datagrams past 64 KiB, and random
//! garbage, over UDP and TCP, to a running `Telephony` on 127.0.0.1.
//!
//! Asserts what an operator would notice: no panic or hang (the server
//! answers a normal call afterwards), invalid messages get a 4xx or nothing
//! (never a 2xx), and memory stays bounded under a garbage flood.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::{harness, Behaviour, NUMBER};
use switchboard_telephony::{dial_uri, DialUriOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// RFC 4475 §3.1.2 and §3.3: messages a receiver must reject (or, for the
/// unparseable ones, may drop). `clerr` (Content-Length past the end) and
/// `ncl` (negative) are here too. Not listed: `badaspec` and `baddn`, where
/// the RFC lets a receiver be liberal; rsipstack parses both and we answer
/// those OPTIONS 200, which harms nobody.
const INVALID: &[&str] = &[
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "escruri",
    "badvers",
    "mismatch01",
    "mismatch02",
    "multi01",
    "insuf",
];

fn torture_messages() -> Result<BTreeMap<String, Vec<u8>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sip") {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.insert(name, std::fs::read(&path)?);
        }
    }
    Ok(out)
}

/// The status codes of every response that arrives within `wait`.
async fn udp_responses(sock: &UdpSocket, wait: Duration) -> Vec<u16> {
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok((n, _))) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        codes.extend(status_code(&buf[..n]));
    }
    codes
}

fn status_code(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response).ok()?;
    let rest = text.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

async fn tcp_exchange(to: SocketAddr, message: &[u8], wait: Duration) -> Vec<u16> {
    let Ok(Ok(mut stream)) = tokio::time::timeout(wait, TcpStream::connect(to)).await else {
        return Vec::new();
    };
    if stream.write_all(message).await.is_err() {
        return Vec::new();
    }
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16_384];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    text.match_indices("SIP/2.0 ")
        .filter_map(|(i, _)| status_code(&received[i..]))
        .collect()
}

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// xorshift64*, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn garbage(&mut self, samples: &[Vec<u8>]) -> Vec<u8> {
        let len = (self.next() % 1_400) as usize;
        match self.next() % 3 {
            // Pure noise.
            0 => (0..len).map(|_| self.next() as u8).collect(),
            // A torture message with bytes flipped.
            1 => {
                let mut m = samples[(self.next() as usize) % samples.len()].clone();
                for _ in 0..1 + self.next() % 8 {
                    if !m.is_empty() {
                        let at = (self.next() as usize) % m.len();
                        m[at] = self.next() as u8;
                    }
                }
                m
            }
            // A plausible start, then noise.
            _ => {
                let mut m = b"INVITE sip:+14155550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK".to_vec();
                m.extend((0..len).map(|_| self.next() as u8));
                m
            }
        }
    }
}

async fn a_normal_call_still_works(h: &mut common::Harness) -> Result<()> {
    let target = format!("sip:{NUMBER}@{}", h.tel.local_addr());
    let call = tokio::time::timeout(
        Duration::from_secs(20),
        dial_uri(
            &target,
            h.tel.engine(),
            DialUriOptions {
                from: "+14155550199".into(),
                ..Default::default()
            },
        ),
    )
    .await
    .context("dial did not finish")??;
    let mut ended = call.control.ended();
    tokio::time::timeout(Duration::from_secs(20), ended.wait_for(|e| e.is_some()))
        .await
        .context("the call after the torture did not end")??;
    let report = h.next_report(Duration::from_secs(20)).await?;
    assert_eq!(report.ended.as_deref(), Some("agent hung up"));
    Ok(())
}

#[tokio::test]
async fn rfc4475_torture_oversized_and_garbage_leave_the_server_answering() -> Result<()> {
    let behaviour = Behaviour {
        hangup_after: Some(Duration::from_millis(300)),
        play_tone: false,
    };
    let mut h = harness("127.0.0.1".parse()?, "127.0.0.0/8", behaviour).await?;
    let to = h.tel.local_addr();
    let messages = torture_messages()?;
    assert!(messages.len() >= 30, "torture corpus present");

    // Each message over UDP from its own socket, then over TCP.
    let mut summary = Vec::new();
    let mut violations = Vec::new();
    for (name, message) in &messages {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        sock.send_to(message, to).await?;
        let udp = udp_responses(&sock, Duration::from_millis(150)).await;
        let tcp = tcp_exchange(to, message, Duration::from_millis(150)).await;
        let accepted = udp.iter().chain(&tcp).any(|c| !(400..500).contains(c));
        if INVALID.contains(&name.as_str()) && accepted {
            violations.push(format!("{name}: udp {udp:?} tcp {tcp:?}"));
        }
        summary.push(format!("{name}: udp {udp:?} tcp {tcp:?}"));
    }
    eprintln!("rfc 4475 responses:\n{}", summary.join("\n"));
    assert!(
        violations.is_empty(),
        "invalid messages accepted: {violations:#?}"
    );

    // Oversized: the largest UDP datagram there is, and 100 KiB over TCP.
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut big = b"INVITE sip:+14155550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbig\r\nX-Pad: ".to_vec();
    big.resize(65_000, b'a');
    sock.send_to(&big, to).await?;
    big.resize(100 * 1024, b'a');
    let tcp = tcp_exchange(to, &big, Duration::from_millis(500)).await;
    assert!(
        tcp.iter().all(|c| (400..500).contains(c)),
        "oversized over tcp: {tcp:?}"
    );

    // A garbage flood: memory must stay bounded.
    let samples: Vec<Vec<u8>> = messages.values().cloned().collect();
    let mut rng = Rng(0x7011_7011);
    let before = vm_rss_kib();
    for i in 0..2_000 {
        let datagram = rng.garbage(&samples);
        sock.send_to(&datagram, to).await?;
        if i % 100 == 0 {
            // Let the server keep up instead of measuring kernel drops.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for _ in 0..50 {
        let datagram = rng.garbage(&samples);
        tcp_exchange(to, &datagram, Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib();
    eprintln!("VmRSS before {before:?} KiB, after 2000 garbage datagrams {after:?} KiB");
    if let (Some(before), Some(after)) = (before, after) {
        assert!(
            after < before + 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
    }

    a_normal_call_still_works(&mut h).await
}
