//! One media leg against a hand-written RTP peer on loopback.

mod common;

use std::time::Duration;

use common::*;
use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::Codec;
use switchboard_rtp::sdp::SessionDescription;
use switchboard_rtp::{Direction, MediaEvent, RtpError};

const SECOND: Duration = Duration::from_secs(1);

fn answer_port(answer: &str) -> u16 {
    let sdp = SessionDescription::parse(answer).expect("our answer parses");
    sdp.media[0].port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_an_offer_and_exchanges_audio() {
    let engine = engine(22_000, 4);
    let mut peer = Peer::bind().await;
    let (endpoint, answer) = engine
        .answer(&peer.offer("0 8 101", "a=ptime:20\r\n"))
        .await
        .expect("answer");
    let parsed = SessionDescription::parse(&answer).expect("answer parses");
    assert_eq!(parsed.media[0].formats, ["0", "101"], "{answer}");
    assert_eq!(parsed.media[0].ptime, Some(20));
    assert_eq!(parsed.connection, Some([127, 0, 0, 1].into()));
    assert_eq!(endpoint.codec(), Codec::Pcmu);
    let ours = endpoint.local_addr();
    assert_eq!(ours.port(), answer_port(&answer));

    let mut leg = endpoint.start(None);
    let sender = tokio::spawn(async move {
        peer.stream(ours, 0, Codec::Pcmu, 50, |i| tone(1000.0, 12_000.0, i))
            .await;
        peer
    });
    let (frames, _) = drain_events(&mut leg, Duration::from_millis(1500)).await;
    let peer = sender.await.expect("peer task");
    // ~75 ticks in 1.5 s; be generous about a loaded machine.
    assert!(frames.len() >= 30, "only {} audio events", frames.len());
    let loud = frames.iter().filter(|f| dbfs(f) > -12.0).count();
    assert!(
        loud >= 30,
        "{loud} of {} frames carry the tone",
        frames.len()
    );
    // 1 kHz: ~40 zero crossings per 20 ms frame.
    let tonal = frames
        .iter()
        .filter(|f| dbfs(f) > -12.0)
        .filter(|f| (36..=44).contains(&crossings(f.samples())))
        .count();
    assert!(tonal >= 25, "{tonal} frames look like 1 kHz");

    // Our output: frames out → PCMU packets to the peer.
    let audio_out = leg.audio_out.clone();
    let writer = tokio::spawn(async move {
        for i in 0..25 {
            audio_out
                .send(tone(500.0, 8000.0, i))
                .await
                .expect("leg accepts audio");
        }
    });
    let packets = peer.collect(SECOND).await;
    writer.await.expect("writer");
    assert!(packets.iter().all(|p| p.payload_type == 0));
    let decoded: Vec<_> = packets
        .iter()
        .filter_map(|p| Codec::Pcmu.decode(&p.payload).ok())
        .collect();
    let ours_loud = decoded.iter().filter(|f| dbfs(f) > -16.0).count();
    assert!(
        ours_loud >= 20,
        "{ours_loud} loud packets out of {}",
        decoded.len()
    );
    assert!(decoded
        .iter()
        .filter(|f| dbfs(f) > -16.0)
        .all(|f| (16..=24).contains(&crossings(f.samples()))));
    // The first packet of the talkspurt carries the marker bit.
    let first_loud = packets
        .iter()
        .find(|p| {
            Codec::Pcmu
                .decode(&p.payload)
                .is_ok_and(|f| dbfs(&f) > -16.0)
        })
        .expect("a loud packet");
    assert!(first_loud.marker);
    // Timestamps advance by 160 per packet.
    for w in packets.windows(2) {
        assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 160);
        assert_eq!(w[1].sequence.wrapping_sub(w[0].sequence), 1);
    }

    let stats = leg.handle().stats();
    assert!(stats.packets_in >= 40, "{stats:?}");
    assert!(stats.packets_out >= 20);
    assert_eq!(stats.latched, Some(peer.addr()));
    leg.handle().stop();
    leg.handle().closed().await;
    assert_eq!(engine.ports_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_pcma_when_offered_first() {
    let engine = engine(22_100, 2);
    let mut peer = Peer::bind().await;
    let (endpoint, answer) = engine
        .answer(&peer.offer("8 0 101", ""))
        .await
        .expect("answer");
    assert_eq!(endpoint.codec(), Codec::Pcma);
    assert!(answer.contains("a=rtpmap:8 PCMA/8000"), "{answer}");
    let ours = endpoint.local_addr();
    let mut leg = endpoint.start(None);
    let sender = tokio::spawn(async move {
        peer.stream(ours, 8, Codec::Pcma, 40, |i| tone(1000.0, 12_000.0, i))
            .await;
        peer
    });
    let (frames, _) = drain_events(&mut leg, SECOND).await;
    let peer = sender.await.expect("peer");
    assert!(frames.iter().filter(|f| dbfs(f) > -12.0).count() >= 20);
    let packets = peer.collect(Duration::from_millis(300)).await;
    assert!(!packets.is_empty());
    assert!(packets.iter().all(|p| p.payload_type == 8));
    leg.handle().stop();
}

#[tokio::test]
async fn no_common_codec_is_488_and_holds_no_port() {
    let engine = engine(22_200, 2);
    let offer = Peer::offer_for(5000, "9 18", "a=rtpmap:9 G722/8000\r\n");
    let err = engine.answer(&offer).await.expect_err("no common codec");
    assert!(matches!(err, RtpError::NoCommonCodec));
    assert!(err.is_not_acceptable());
    let garbage = engine
        .answer("INVITE sip:x SIP/2.0")
        .await
        .expect_err("bad");
    assert!(matches!(garbage, RtpError::InvalidSdp { .. }));
    assert!(garbage.is_not_acceptable());
    assert_eq!(engine.ports_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_unhold_by_re_offer() {
    let engine = engine(22_300, 2);
    let peer = Peer::bind().await;
    let (endpoint, first) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let v0 = SessionDescription::parse(&first)
        .expect("ok")
        .origin
        .version;
    let leg = endpoint.start(None);
    let handle = leg.handle();
    assert!(!peer.collect(Duration::from_millis(300)).await.is_empty());

    // Hold: the peer sends only (music on hold); we receive only.
    let held = handle
        .update_remote(&peer.offer("0 101", "a=sendonly\r\n"))
        .expect("hold");
    let held_sdp = SessionDescription::parse(&held).expect("ok");
    assert_eq!(
        held_sdp.direction_of(&held_sdp.media[0]),
        Direction::RecvOnly
    );
    assert_eq!(held_sdp.origin.version, v0 + 1);
    // Once a tick has run with the new direction, nothing more is sent;
    // drain what was already in flight.
    for _ in 0..250 {
        if handle.stats().direction == Direction::RecvOnly {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = peer.collect(Duration::from_millis(100)).await;
    let during = peer.collect(Duration::from_millis(400)).await;
    assert!(during.is_empty(), "{} packets sent on hold", during.len());

    // Both sides on hold.
    let inactive = handle
        .update_remote(&peer.offer("0 101", "a=inactive\r\n"))
        .expect("inactive");
    assert!(inactive.contains("a=inactive"));

    // Unhold.
    let resumed = handle
        .update_remote(&peer.offer("0 101", "a=sendrecv\r\n"))
        .expect("unhold");
    let resumed_sdp = SessionDescription::parse(&resumed).expect("ok");
    assert_eq!(
        resumed_sdp.direction_of(&resumed_sdp.media[0]),
        Direction::SendRecv
    );
    assert_eq!(resumed_sdp.origin.version, v0 + 3);
    assert_eq!(
        resumed_sdp.media[0].port,
        SessionDescription::parse(&first).expect("ok").media[0].port
    );
    let after = peer.collect(Duration::from_millis(400)).await;
    assert!(after.len() >= 5, "{} packets after unhold", after.len());
    assert!(
        after[0].marker,
        "the first packet after hold starts a talkspurt"
    );

    // A re-offer we cannot accept leaves the leg as it was.
    let refused = handle.update_remote(&Peer::offer_for(peer.addr().port(), "9", ""));
    assert!(matches!(refused, Err(RtpError::NoCommonCodec)));
    drop(leg);
    handle.closed().await;
    assert!(matches!(
        handle.update_remote(&peer.offer("0", "")),
        Err(RtpError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latches_to_the_source_address_not_the_sdp_one() {
    let engine = engine(22_400, 2);
    let decoy = Peer::bind().await; // what the SDP says
    let mut actual = Peer::bind().await; // where packets really come from (NAT)
    let (endpoint, _) = engine
        .answer(&decoy.offer("0 101", ""))
        .await
        .expect("answer");
    let ours = endpoint.local_addr();
    let leg = endpoint.start(None);
    // Before any packet: to the SDP address.
    assert!(!decoy.collect(Duration::from_millis(200)).await.is_empty());
    let actual_addr = actual.addr();
    let sender = tokio::spawn(async move {
        actual
            .stream(ours, 0, Codec::Pcmu, 30, |i| tone(800.0, 9000.0, i))
            .await;
        actual
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = decoy.collect(Duration::from_millis(60)).await;
    let actual = sender.await.expect("sender");
    let to_actual = actual.collect(Duration::from_millis(300)).await;
    assert!(
        to_actual.len() >= 5,
        "latched source got {}",
        to_actual.len()
    );
    let to_decoy = decoy.collect(Duration::from_millis(100)).await;
    assert!(to_decoy.is_empty(), "still sending to the sdp address");
    assert_eq!(leg.handle().stats().latched, Some(actual_addr));

    // A third party spraying packets while the peer is live is ignored.
    let mut intruder = Peer::bind().await;
    intruder.ssrc = 99;
    let mut actual = actual;
    tokio::join!(
        intruder.stream(ours, 0, Codec::Pcmu, 10, |_| tone(300.0, 9000.0, 0)),
        actual.stream(ours, 0, Codec::Pcmu, 10, |i| tone(800.0, 9000.0, i)),
    );
    assert_eq!(leg.handle().stats().latched, Some(actual_addr));
    assert!(leg.handle().stats().rejected >= 5);
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_in_without_marker_and_out_with_end_packets() {
    let engine = engine(22_500, 2);
    let mut peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let ours = endpoint.local_addr();
    let mut leg = endpoint.start(None);
    let sender = tokio::spawn(async move {
        peer.stream(ours, 0, Codec::Pcmu, 5, |i| tone(800.0, 5000.0, i))
            .await;
        peer.send_digit_without_marker(ours, 5).await;
        peer.stream(ours, 0, Codec::Pcmu, 5, |i| tone(800.0, 5000.0, i))
            .await;
        peer.send_digit_without_marker(ours, 11).await; // '#'
        peer
    });
    let mut digits = String::new();
    for _ in 0..2 {
        match wait_for_event(&mut leg, 3 * SECOND, |e| matches!(e, MediaEvent::Dtmf(_))).await {
            Some(MediaEvent::Dtmf(c)) => digits.push(c),
            other => panic!("no dtmf: {other:?}"),
        }
    }
    assert_eq!(digits, "5#");
    let peer = sender.await.expect("peer");
    assert_eq!(leg.handle().stats().dtmf_in, 2);

    leg.handle().send_dtmf("1x*");
    let packets = peer.collect(Duration::from_millis(1500)).await;
    let events: Vec<(u32, TelephoneEvent, bool)> = packets
        .iter()
        .filter(|p| p.payload_type == 101)
        .filter_map(|p| {
            Some((
                p.timestamp,
                TelephoneEvent::parse(&p.payload).ok()?,
                p.marker,
            ))
        })
        .collect();
    for (code, name) in [(1u8, "1"), (10, "*")] {
        let of: Vec<_> = events.iter().filter(|(_, e, _)| e.event == code).collect();
        assert!(of.len() >= 5, "{name}: {} packets", of.len());
        assert!(of[0].2, "{name}: the first packet carries the marker");
        assert!(
            of.iter().all(|(ts, _, _)| *ts == of[0].0),
            "{name}: one timestamp"
        );
        assert_eq!(
            of.iter().filter(|(_, e, _)| e.end).count(),
            3,
            "{name}: three end packets"
        );
    }
    assert!(events.iter().all(|(_, e, _)| e.event == 1 || e.event == 10));
    assert_eq!(leg.handle().stats().dtmf_out, 2);
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_rtp_timeout_once_and_keeps_running() {
    let engine = engine_with(22_600, 2, |c| c.no_rtp_timeout = Duration::from_millis(300));
    let peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let mut leg = endpoint.start(None);
    let (frames, others) = drain_events(&mut leg, Duration::from_millis(1200)).await;
    assert_eq!(others, [MediaEvent::RtpTimeout]);
    assert!(frames.len() >= 20, "audio keeps flowing: {}", frames.len());
    assert!(frames.iter().all(|f| f.is_silence()));
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_timeout_while_the_peer_is_on_hold_and_silent() {
    let engine = engine_with(22_650, 2, |c| c.no_rtp_timeout = Duration::from_millis(300));
    let peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", "a=recvonly\r\n"))
        .await
        .expect("answer");
    assert_eq!(endpoint.direction(), Direction::SendOnly);
    let mut leg = endpoint.start(None);
    let (_, others) = drain_events(&mut leg, SECOND).await;
    assert!(others.is_empty(), "{others:?}");
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_stereo_wav_peer_left_ours_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("call.wav");
    let engine = engine(22_700, 2);
    let mut peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let ours = endpoint.local_addr();
    let leg = endpoint.start(Some(path.clone()));
    let audio_out = leg.audio_out.clone();
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            if audio_out.send(tone(1000.0, 8000.0, i)).await.is_err() {
                break;
            }
        }
    });
    peer.stream(ours, 0, Codec::Pcmu, 50, |i| tone(250.0, 12_000.0, i))
        .await;
    writer.await.expect("writer");
    assert!(leg.handle().stats().recording);
    let handle = leg.handle();
    handle.stop();
    handle.closed().await;
    let stats = handle.stats();
    assert!(
        stats.ended && !stats.recording && stats.recording_error.is_none(),
        "{stats:?}"
    );

    let mut reader = hound::WavReader::open(&path).expect("a valid wav");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    assert!(samples.len() >= 2 * 8000 / 2, "{} samples", samples.len());
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let loud = |ch: &[i16]| {
        ch.chunks(160)
            .filter(|c| switchboard_media::Level::of_samples(c).dbfs() > -16.0)
            .count()
    };
    assert!(loud(&left) >= 30, "peer audio on the left: {}", loud(&left));
    assert!(
        loud(&right) >= 30,
        "our audio on the right: {}",
        loud(&right)
    );
    // 250 Hz left (~10 crossings per frame), 1 kHz right (~40).
    let typical = |ch: &[i16]| {
        let mut c: Vec<usize> = ch
            .chunks(160)
            .filter(|c| switchboard_media::Level::of_samples(c).dbfs() > -16.0)
            .map(crossings)
            .collect();
        c.sort_unstable();
        c[c.len() / 2]
    };
    assert!(
        (8..=12).contains(&typical(&left)),
        "left {}",
        typical(&left)
    );
    assert!(
        (36..=44).contains(&typical(&right)),
        "right {}",
        typical(&right)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_recording_does_not_stop_the_call() {
    let engine = engine(22_750, 2);
    let peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let mut leg = endpoint.start(Some("/nonexistent/dir/call.wav".into()));
    let (frames, _) = drain_events(&mut leg, Duration::from_millis(300)).await;
    assert!(!frames.is_empty());
    let stats = leg.handle().stats();
    assert!(
        !stats.recording && stats.recording_error.is_some(),
        "{stats:?}"
    );
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_not_the_call() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return; // not Linux: nothing to simulate a full disk with
    }
    let engine = engine(22_770, 2);
    let peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let mut leg = endpoint.start(Some(full.to_owned()));
    let (frames, _) = drain_events(&mut leg, Duration::from_millis(1500)).await;
    assert!(frames.len() >= 30, "audio kept flowing: {}", frames.len());
    let stats = leg.handle().stats();
    assert!(!stats.recording, "{stats:?}");
    assert!(stats.recording_error.is_some(), "{stats:?}");
    assert!(!leg.handle().is_closed());
    assert!(!peer.collect(Duration::from_millis(200)).await.is_empty());
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_ignored() {
    let engine = engine(22_800, 2);
    let mut peer = Peer::bind().await;
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", ""))
        .await
        .expect("answer");
    let ours = endpoint.local_addr();
    let rtcp = std::net::SocketAddr::new(ours.ip(), ours.port() + 1);
    let mut leg = endpoint.start(None);
    let scanner = Peer::bind().await;
    let mut state = 0x9e37_79b9_u32;
    for i in 0..500usize {
        let len = i % 300;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            bytes.push(state as u8);
        }
        // Half of them look like RTP version 2 with a payload type we did
        // not negotiate, the rest are not version 2. (A well-formed packet
        // of a negotiated type would latch: that is symmetric RTP.)
        if let [first, second, ..] = &mut bytes[..] {
            if i % 2 == 0 {
                *first = 0x80 | (*first & 0x3F);
                *second = (*second & 0x80) | (96 + (*second % 4));
            } else {
                *first &= 0x3F;
            }
        }
        let _ = scanner.socket.send_to(&bytes, ours).await;
        let _ = scanner.socket.send_to(&bytes, rtcp).await;
    }
    // Nothing latched to the scanner; the leg still works.
    let (frames, _) = drain_events(&mut leg, Duration::from_millis(300)).await;
    assert!(!frames.is_empty());
    assert_ne!(leg.handle().stats().latched, Some(scanner.addr()));
    assert!(leg.handle().stats().rejected > 0);
    assert!(!leg.handle().is_closed());
    let sender = tokio::spawn(async move {
        peer.stream(ours, 0, Codec::Pcmu, 20, |i| tone(800.0, 9000.0, i))
            .await;
        peer
    });
    let (frames, _) = drain_events(&mut leg, Duration::from_millis(600)).await;
    let peer = sender.await.expect("peer");
    assert!(frames.iter().filter(|f| dbfs(f) > -20.0).count() >= 5);
    assert!(
        matches!(leg.handle().stats().latched, Some(a) if a == peer.addr() || a == scanner.addr())
    );
    leg.handle().stop();
}

#[tokio::test]
async fn port_exhaustion_is_an_error_until_a_leg_stops() {
    let engine = engine(22_900, 1);
    let offer = Peer::offer_for(5000, "0", "");
    let (first, _) = engine.answer(&offer).await.expect("one pair");
    let err = engine.answer(&offer).await.expect_err("exhausted");
    assert!(matches!(
        err,
        RtpError::PortsExhausted {
            first: 22_900,
            last: 22_901
        }
    ));
    assert!(err.is_retryable());
    assert!(matches!(
        engine.offer().await,
        Err(RtpError::PortsExhausted { .. })
    ));
    let leg = first.start(None);
    leg.handle().stop();
    leg.handle().closed().await;
    assert_eq!(engine.ports_in_use(), 0);
    let (_again, _) = engine.answer(&offer).await.expect("freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_side_accepts_an_answer() {
    let engine = engine(23_000, 2);
    let mut peer = Peer::bind().await;
    let (pending, offer) = engine.offer().await.expect("offer");
    let parsed = SessionDescription::parse(&offer).expect("our offer parses");
    assert_eq!(parsed.media[0].formats, ["0", "8", "101"]);
    assert_eq!(parsed.media[0].port, pending.local_addr().port());
    assert!(matches!(
        engine
            .offer()
            .await
            .map(|(p, _)| p.accept_answer("v=0\r\n")),
        Ok(Err(RtpError::InvalidSdp { .. }))
    ));
    let answer = peer.offer("8 101", "");
    let endpoint = pending.accept_answer(&answer).expect("accepted");
    assert_eq!(endpoint.codec(), Codec::Pcma);
    assert_eq!(endpoint.telephone_event(), Some(101));
    let ours = endpoint.local_addr();
    let mut leg = endpoint.start(None);
    let sender = tokio::spawn(async move {
        peer.stream(ours, 8, Codec::Pcma, 30, |i| tone(800.0, 9000.0, i))
            .await;
        peer
    });
    let (frames, _) = drain_events(&mut leg, SECOND).await;
    let peer = sender.await.expect("peer");
    let loud = frames.iter().filter(|f| dbfs(f) > -20.0).count();
    assert!(loud >= 15, "{loud} {:?} {frames:?}", leg.handle().stats());
    let packets = peer.collect(Duration::from_millis(200)).await;
    assert!(!packets.is_empty() && packets.iter().all(|p| p.payload_type == 8));
    leg.handle().stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_sender_reports_and_reads_the_peers_reports() {
    use switchboard_media::rtcp::{self, ReceiverReport, ReportBlock, RtcpPacket};
    let engine = engine(23_050, 2);
    let mut peer = Peer::bind().await;
    let peer_rtcp = tokio::net::UdpSocket::bind(std::net::SocketAddr::from((LOCALHOST, 0)))
        .await
        .expect("bind");
    let rtcp_port = peer_rtcp.local_addr().expect("addr").port();
    let (endpoint, _) = engine
        .answer(&peer.offer("0 101", &format!("a=rtcp:{rtcp_port}\r\n")))
        .await
        .expect("answer");
    let ours = endpoint.local_addr();
    let our_rtcp = std::net::SocketAddr::new(ours.ip(), ours.port() + 1);
    let leg = endpoint.start(None);
    peer.stream(ours, 0, Codec::Pcmu, 10, |i| tone(800.0, 9000.0, i))
        .await;
    let our_ssrc = peer.collect(Duration::from_millis(100)).await[0].ssrc;

    // The peer reports 25 % loss and 10 ms of jitter on our stream.
    let mut rr = Vec::new();
    ReceiverReport {
        ssrc: peer.ssrc,
        reports: vec![ReportBlock {
            ssrc: our_ssrc,
            fraction_lost: 64,
            jitter: 80,
            ..ReportBlock::default()
        }],
    }
    .write(&mut rr);
    peer_rtcp.send_to(&rr, our_rtcp).await.expect("send rr");

    // Our first SR comes about 5 s after the start.
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(10), peer_rtcp.recv_from(&mut buf))
        .await
        .expect("an rtcp packet within 10 s")
        .expect("recv");
    let packets = rtcp::parse_compound(&buf[..len]).expect("valid rtcp");
    let Some(RtcpPacket::SenderReport(sr)) = packets.first() else {
        panic!("expected a sender report: {packets:?}");
    };
    assert_eq!(sr.ssrc, our_ssrc);
    assert!(sr.packet_count > 0);
    assert_eq!(sr.reports.first().map(|b| b.ssrc), Some(peer.ssrc));

    let stats = leg.handle().stats();
    assert_eq!(stats.rtcp_in, 1);
    assert!(stats.rtcp_out >= 1);
    assert_eq!(stats.remote_fraction_lost, Some(0.25));
    assert_eq!(stats.remote_jitter_ms, Some(10.0));
    leg.handle().stop();
}
