//! SIP over TLS on 127.0.0.1: a carrier-side client that trusts only a CA
//! made for the test connects to our TLS listener, is answered OPTIONS,
//! places a call (INVITE → 200 with SDP → ACK → BYE) on the same
//! connection, and the call leaves an answered and ended session row. A
//! client that does not trust our certificate gets no SIP at all.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::{harness_with, Behaviour, NUMBER};
use switchboard_model::{Region, Transport, TrunkInput};
use switchboard_telephony::SipTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A CA and a server certificate it signed for 127.0.0.1: (CA PEM, leaf
/// PEM, leaf key PEM). Made fresh for every run; nothing is committed.
fn pki() -> Result<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchboard test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    leaf_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(LOCALHOST));
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
    Ok((ca.pem(), leaf.pem(), leaf_key.serialize_pem()))
}

/// A server on 127.0.0.1 with a TLS listener on a free port, `cert`/`key`
/// for it, and `ca` (if any) trusted for TLS trunks it dials.
async fn tls_server(
    behaviour: Behaviour,
    cert: String,
    key: String,
    ca: Option<String>,
    tweak: impl FnOnce(&mut switchboard_telephony::SipConfig),
) -> Result<common::Harness> {
    harness_with(LOCALHOST, "127.0.0.0/8", behaviour, |cfg| {
        cfg.tls = Some(SipTls {
            listen: Some(SocketAddr::new(LOCALHOST, 0)),
            cert_pem: Some(cert.into_bytes()),
            key_pem: Some(key.into_bytes()),
            ca_pem: ca.map(String::into_bytes),
        });
        tweak(cfg);
    })
    .await
}

/// A server that listens and never hangs up first.
const LISTEN: Behaviour = Behaviour {
    hangup_after: None,
    play_tone: false,
};

fn connector(trusted: &str) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile_certs(trusted)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn rustls_pemfile_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// Reads one SIP message (headers and the Content-Length body) from `s`.
async fn read_message<S: AsyncReadExt + Unpin>(s: &mut S, pending: &mut Vec<u8>) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let body_len = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    let name = name.trim().to_ascii_lowercase();
                    (name == "content-length" || name == "l").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if pending.len() >= end + 4 + body_len {
                let message: Vec<u8> = pending.drain(..end + 4 + body_len).collect();
                return Ok(String::from_utf8_lossy(&message).into_owned());
            }
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .context("no SIP message within 10 s")??;
        if n == 0 {
            bail!(
                "connection closed; had {:?}",
                String::from_utf8_lossy(pending)
            );
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// The responses to one request, up to and including its final one.
async fn final_response<S: AsyncReadExt + Unpin>(
    s: &mut S,
    pending: &mut Vec<u8>,
) -> Result<String> {
    for _ in 0..10 {
        let message = read_message(s, pending).await?;
        let code: u16 = message
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if message.starts_with("SIP/2.0 ") && code >= 200 {
            return Ok(message);
        }
    }
    bail!("no final response in 10 messages")
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn request(
    method: &str,
    uri: &str,
    local: SocketAddr,
    to_tag: Option<&str>,
    cseq: u32,
    body: &str,
) -> String {
    let to = match to_tag {
        Some(tag) => format!("<sip:{NUMBER}@127.0.0.1>;tag={tag}"),
        None => format!("<sip:{NUMBER}@127.0.0.1>"),
    };
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{cseq}-{method}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+14155550199@127.0.0.1>;tag=carrier1\r\n\
         To: {to}\r\n\
         Call-ID: tls-call-1@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:carrier@{local};transport=tls>\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_call_over_tls_is_answered_and_leaves_a_session() -> Result<()> {
    let (ca, cert, key) = pki()?;
    let h = tls_server(LISTEN, cert, key, None, |_| {}).await?;
    let addr = h.tel.tls_addr().context("a TLS listener")?;
    assert_ne!(addr.port(), 0);

    // Someone who does not trust our CA gets no SIP: the handshake fails.
    let (other_ca, _, _) = pki()?;
    let tcp = TcpStream::connect(addr).await?;
    let refused = connector(&other_ca)?
        .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
        .await;
    assert!(refused.is_err(), "a client trusting another CA must fail");

    let tcp = TcpStream::connect(addr).await?;
    let local = tcp.local_addr()?;
    let mut tls = connector(&ca)?
        .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
        .await?;
    let mut pending = Vec::new();
    let uri = format!("sip:{NUMBER}@{addr};transport=tls");

    tls.write_all(request("OPTIONS", &uri, local, None, 1, "").as_bytes())
        .await?;
    let options = final_response(&mut tls, &mut pending).await?;
    assert!(options.starts_with("SIP/2.0 200"), "{options}");

    let rtp = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await?;
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        rtp.local_addr()?.port()
    );
    tls.write_all(request("INVITE", &uri, local, None, 2, &sdp).as_bytes())
        .await?;
    let ok = final_response(&mut tls, &mut pending).await?;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains("m=audio "),
        "the 200 carries our SDP answer: {ok}"
    );
    let to_tag = header(&ok, "To")
        .and_then(|t| t.split(";tag=").nth(1))
        .map(|t| t.split(';').next().unwrap_or(t).to_string())
        .context("a To tag")?;
    let contact = header(&ok, "Contact")
        .and_then(|c| c.split('<').nth(1))
        .and_then(|c| c.split('>').next())
        .context("a Contact")?
        .to_string();
    tls.write_all(request("ACK", &contact, local, Some(&to_tag), 2, "").as_bytes())
        .await?;

    // Our media answers: RTP reaches the carrier's port.
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), rtp.recv_from(&mut buf))
        .await
        .context("no RTP from the answered call")??;
    assert!(n >= 12);

    tls.write_all(request("BYE", &contact, local, Some(&to_tag), 3, "").as_bytes())
        .await?;
    let bye = final_response(&mut tls, &mut pending).await?;
    assert!(bye.starts_with("SIP/2.0 200"), "{bye}");

    let sessions = h.ended_sessions(1).await?;
    let session = sessions.first().context("one session")?;
    assert!(session.answered_at.is_some(), "{session:?}");
    assert_eq!(session.from, "+14155550199");
    assert_eq!(session.to, NUMBER);
    Ok(())
}

#[tokio::test]
async fn a_listener_without_a_matching_key_does_not_start() -> Result<()> {
    let (_, cert, _) = pki()?;
    let (_, _, other_key) = pki()?;
    let started = tls_server(LISTEN, cert, other_key, None, |_| {}).await;
    let error = match started {
        Ok(_) => bail!("telephony started with a key that does not match"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("cannot be used together"), "{error}");
    Ok(())
}

/// Our side as the TLS client: the test caller dials a `;transport=tls`
/// URI, verifying the server against the CA it was given; then a second
/// server dials through a trunk whose transport is tls.
#[tokio::test]
async fn calls_we_place_go_over_tls_to_a_verified_server() -> Result<()> {
    let (ca, cert, key) = pki()?;
    let behaviour = Behaviour {
        hangup_after: Some(Duration::from_millis(600)),
        play_tone: true,
    };
    let mut server = tls_server(behaviour, cert, key, None, |_| {}).await?;
    let tls_addr = server.tel.tls_addr().context("a TLS listener")?;
    let target = format!("sip:{NUMBER}@{tls_addr};transport=tls");
    let engine = switchboard_telephony::MediaEngine::new(switchboard_telephony::MediaConfig {
        bind_ip: LOCALHOST,
        ports: switchboard_rtp::PortRange::new(41_000, 41_999),
        ..Default::default()
    });

    // Without our CA the handshake fails at once, in words, and the INVITE
    // never reaches the server.
    let untrusted = switchboard_telephony::dial_uri(
        &target,
        &engine,
        switchboard_telephony::DialUriOptions {
            no_answer_timeout: Duration::from_secs(20),
            tls_ca: Some(pki()?.0.into_bytes()),
            ..Default::default()
        },
    )
    .await;
    match untrusted {
        Err(switchboard_telephony::DialError::Network(why)) => {
            assert!(why.contains("TLS connection to"), "{why}");
            assert!(why.contains("sip.tls_ca"), "{why}");
        }
        other => bail!("expected a TLS error, got {:?}", other.as_ref().err()),
    }
    assert!(
        server
            .store
            .list_sessions(&Default::default())
            .await?
            .is_empty(),
        "an unverified server must not have been sent the INVITE"
    );

    let mut call = switchboard_telephony::dial_uri(
        &target,
        &engine,
        switchboard_telephony::DialUriOptions {
            no_answer_timeout: Duration::from_secs(5),
            tls_ca: Some(ca.clone().into_bytes()),
            ..Default::default()
        },
    )
    .await?;
    // The server's tone reaches us; the server hangs up after 600 ms.
    let mut loud = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, call.media.events.recv()).await {
            Ok(Some(switchboard_rtp::MediaEvent::Audio(frame))) => {
                if frame.samples().iter().any(|s| s.unsigned_abs() > 2000) {
                    loud += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        if call.control.is_ended() {
            break;
        }
    }
    assert!(
        loud >= 5,
        "the tone came through the TLS-signalled call ({loud} frames)"
    );
    let report = server.next_report(Duration::from_secs(10)).await?;
    assert!(report.packets_in > 0, "{report:?}");
    server.ended_sessions(1).await?;

    // A second server dials the number through a trunk whose transport is
    // tls, trusting our CA (its own TLS listener goes in its Contact).
    let (_, cert_b, key_b) = pki()?;
    let caller = tls_server(LISTEN, cert_b, key_b, Some(ca), |cfg| {
        cfg.media.ports = switchboard_rtp::PortRange::new(42_000, 42_999);
    })
    .await?;
    caller
        .store
        .create_trunk(
            &TrunkInput {
                name: "secure".into(),
                host: "127.0.0.1".into(),
                port: Some(tls_addr.port()),
                transport: Some(Transport::Tls),
                allowed_cidrs: vec!["127.0.0.0/8".into()],
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    let call = caller
        .tel
        .dial(switchboard_telephony::DialRequest {
            to: NUMBER.into(),
            trunk: Some("secure".into()),
            no_answer_timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        })
        .await?;
    // The answering server hangs up after 600 ms; the BYE reaches us.
    let mut ended = call.control.ended();
    tokio::time::timeout(Duration::from_secs(10), ended.wait_for(Option::is_some))
        .await
        .context("the TLS trunk call did not end")??;
    let sessions = server.ended_sessions(2).await?;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let placed = caller.ended_sessions(1).await?;
    assert!(placed[0].answered_at.is_some(), "{placed:?}");
    Ok(())
}
