//! Behind NAT: with `public_addr` set, the Contact of our answers and the
//! Via/Contact of our requests name the public address, so a carrier sends
//! the ACK, BYE and re-INVITEs somewhere it can reach.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::{harness_with, Behaviour, NUMBER};
use tokio::net::UdpSocket;

const PUBLIC: &str = "203.0.113.7";

/// Reads datagrams until one contains `needle` (bounded).
async fn wait_for(sock: &UdpSocket, needle: &str) -> Result<String> {
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .with_context(|| format!("no message with {needle:?}"))??;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains(needle) {
            return Ok(text);
        }
    }
}

fn contact(message: &str) -> Option<&str> {
    message
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("contact:") || l.starts_with("m:"))
}

#[tokio::test]
async fn public_addr_is_our_contact_in_answers_and_via_in_requests() -> Result<()> {
    let behaviour = Behaviour {
        hangup_after: Some(Duration::from_millis(300)),
        play_tone: false,
    };
    let h = harness_with("127.0.0.1".parse()?, "127.0.0.0/8", behaviour, |c| {
        c.public_addr = PUBLIC.parse().ok();
    })
    .await?;
    let server = h.tel.local_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let me = sock.local_addr()?;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:{NUMBER}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKnat1\r\n\
         From: <sip:+14155550199@{me}>;tag=nat\r\n\
         To: <sip:{NUMBER}@{server}>\r\n\
         Call-ID: public-addr-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{me}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(invite.as_bytes(), server).await?;
    let ok = wait_for(&sock, "SIP/2.0 200").await?;
    let ours = format!("{PUBLIC}:{}", server.port());
    let c = contact(&ok).context("200 OK without Contact")?;
    assert!(c.contains(&ours), "answer Contact names {ours}: {c}");
    let to_tag = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .context("no To")?
        .to_string();
    let ack = format!(
        "ACK sip:{NUMBER}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKnat2\r\n\
         From: <sip:+14155550199@{me}>;tag=nat\r\n\
         {to_tag}\r\n\
         Call-ID: public-addr-1\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(ack.as_bytes(), server).await?;
    // The handler hangs up: our BYE is a request of ours.
    let bye = wait_for(&sock, "BYE ").await?;
    let via = bye
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("via:") || l.starts_with("v:"))
        .context("BYE without Via")?;
    assert!(via.contains(&ours), "BYE Via names {ours}: {via}");
    Ok(())
}
