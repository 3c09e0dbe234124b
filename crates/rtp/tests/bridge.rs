//! Two legs bridged through us (live transfer), against two RTP peers.

mod common;

use std::time::Duration;

use common::*;
use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::{Codec, Level};
use switchboard_rtp::{bridge, BridgeEnd, BridgeSide, Direction, MediaEngine, MediaLeg};

/// Caller leg (answer side, recorded) and transfer leg (offer side).
async fn two_legs(
    engine: &MediaEngine,
    caller: &Peer,
    rep: &Peer,
    record: Option<std::path::PathBuf>,
) -> (MediaLeg, MediaLeg) {
    let (a, _) = engine
        .answer(&caller.offer("0 101", ""))
        .await
        .expect("answer");
    let (pending, _) = engine.offer().await.expect("offer");
    let b = pending
        .accept_answer(&rep.offer("0 101", ""))
        .expect("accept");
    (a.start(record), b.start(None))
}

fn loud_with_crossings(packets: &[Received], range: std::ops::RangeInclusive<usize>) -> usize {
    packets
        .iter()
        .filter(|p| p.payload_type == 0)
        .filter_map(|p| Codec::Pcmu.decode(&p.payload).ok())
        .filter(|f| dbfs(f) > -20.0 && range.contains(&crossings(f.samples())))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_both_ways_forwards_dtmf_and_keeps_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bridged.wav");
    let engine = engine(23_100, 4);
    let mut caller = Peer::bind().await;
    let mut rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, Some(path.clone())).await;
    assert!(a.handle().stats().recording);
    let a_local = a.handle().local_addr();
    let b_local = b.handle().local_addr();
    let bridged = bridge(a, b);
    bridged.running().await;

    // Caller → rep: 250 Hz.
    let (_, at_rep) = tokio::join!(
        caller.stream(a_local, 0, Codec::Pcmu, 50, |i| tone(250.0, 12_000.0, i)),
        rep.collect(Duration::from_millis(1300)),
    );
    let heard = loud_with_crossings(&at_rep, 8..=12);
    assert!(
        heard >= 30,
        "rep heard {heard} caller frames of {}",
        at_rep.len()
    );

    // Rep → caller: 1 kHz.
    let (_, at_caller) = tokio::join!(
        rep.stream(b_local, 0, Codec::Pcmu, 50, |i| tone(1000.0, 12_000.0, i)),
        caller.collect(Duration::from_millis(1300)),
    );
    let heard = loud_with_crossings(&at_caller, 36..=44);
    assert!(
        heard >= 30,
        "caller heard {heard} rep frames of {}",
        at_caller.len()
    );

    // A key press from the caller reaches the rep as telephone-events.
    let (_, at_rep) = tokio::join!(
        caller.send_digit_without_marker(a_local, 7),
        rep.collect(Duration::from_millis(1200)),
    );
    let sevens: Vec<TelephoneEvent> = at_rep
        .iter()
        .filter(|p| p.payload_type == 101)
        .filter_map(|p| TelephoneEvent::parse(&p.payload).ok())
        .collect();
    assert!(sevens.iter().any(|e| e.event == 7), "{sevens:?}");
    assert_eq!(sevens.iter().filter(|e| e.end).count(), 3);

    // The rep hangs up: the bridge ends on side B and stops both legs.
    let (a_handle, b_handle) = bridged.legs();
    b_handle.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("bridge ends");
    assert_eq!(end, BridgeEnd::Stopped(BridgeSide::B));
    assert_eq!(end.side(), Some(BridgeSide::B));
    assert!(a_handle.is_closed() && b_handle.is_closed());
    assert_eq!(engine.ports_in_use(), 0);

    // The caller's recording spans the bridge: caller left, rep right.
    let mut reader = hound::WavReader::open(&path).expect("valid wav");
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let tonal = |ch: &[i16], range: std::ops::RangeInclusive<usize>| {
        ch.chunks(160)
            .filter(|c| Level::of_samples(c).dbfs() > -20.0 && range.contains(&crossings(c)))
            .count()
    };
    assert!(tonal(&left, 8..=12) >= 30, "caller on the left");
    assert!(tonal(&right, 36..=44) >= 30, "rep on the right");
    assert!(tonal(&left, 36..=44) <= 3, "no rep audio on the left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_keeps_the_last_words_before_a_hangup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tail.wav");
    let engine = engine(23_900, 4);
    let mut caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, Some(path.clone())).await;
    let a_local = a.handle().local_addr();
    let bridged = bridge(a, b);
    bridged.running().await;

    // The caller speaks for half a second; the rep hangs up right after,
    // with nothing more from the caller to push the recorder's reorder
    // window on: the bridge's end must flush it.
    caller
        .stream(a_local, 0, Codec::Pcmu, 25, |i| tone(250.0, 12_000.0, i))
        .await;
    // Let the bridge read the last packets before the hang-up (however
    // long this takes, only new audio would move the window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, b_handle) = bridged.legs();
    b_handle.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("bridge ends");
    assert_eq!(end, BridgeEnd::Stopped(BridgeSide::B));

    // All 25 frames are there, the last 140 ms included; chunks of the
    // file need not line up with the caller's frames, so the two ends may
    // be cut.
    let (left, _) = channels(&path);
    let heard = tonal_frames(&left, 8..=12);
    assert!(heard >= 23, "{heard} of 25 caller frames recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_rtp_timeout_end_the_bridge() {
    let engine = engine(23_200, 4);
    let caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let bridged = bridge(a, b);
    bridged.running().await;
    bridged.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert_eq!(end, BridgeEnd::Cancelled);
    assert_eq!(engine.ports_in_use(), 0);

    let engine = engine_with(23_300, 4, |c| c.no_rtp_timeout = Duration::from_millis(300));
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let bridged = bridge(a, b);
    bridged.running().await;
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert!(matches!(end, BridgeEnd::RtpTimeout(_)), "{end:?}");
}

/// Like `two_legs`, with the rep's leg offering `rep_formats` and both legs
/// optionally recorded.
async fn two_recorded_legs(
    engine: &MediaEngine,
    caller: &Peer,
    rep: &Peer,
    rep_formats: &str,
    record: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
) -> (MediaLeg, MediaLeg) {
    let (a, _) = engine
        .answer(&caller.offer("0 101", ""))
        .await
        .expect("answer");
    let (pending, _) = engine.offer().await.expect("offer");
    let b = pending
        .accept_answer(&rep.offer(rep_formats, ""))
        .expect("accept");
    (a.start(record.0), b.start(record.1))
}

fn channels(path: &std::path::Path) -> (Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("valid wav");
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

fn tonal_frames(ch: &[i16], range: std::ops::RangeInclusive<usize>) -> usize {
    ch.chunks(160)
        .filter(|c| Level::of_samples(c).dbfs() > -20.0 && range.contains(&crossings(c)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_packets_as_ours_continuing_the_engine_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_wav, b_wav) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let engine = engine(23_400, 4);
    let mut caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_recorded_legs(
        &engine,
        &caller,
        &rep,
        "0 101",
        (Some(a_wav.clone()), Some(b_wav.clone())),
    )
    .await;
    let (a_local, b_local) = (a.handle().local_addr(), b.handle().local_addr());

    // Before the bridge the engine plays a 500 Hz prompt to the rep on leg
    // B; the rep hears it, then the caller's packets, on one stream.
    let listener = tokio::spawn(async move {
        let heard = rep.collect(Duration::from_millis(1800)).await;
        (rep, heard)
    });
    for i in 0..10 {
        b.audio_out
            .send(tone(500.0, 8000.0, i))
            .await
            .expect("leg takes audio");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bridged = bridge(a, b);
    // Every packet from now on is forwarded (until then leg A's own task
    // could take the first one for the engine).
    bridged.running().await;
    caller
        .stream(a_local, 0, Codec::Pcmu, 25, |i| tone(250.0, 12_000.0, i))
        .await;
    let (mut rep, heard) = listener.await.expect("listener");

    let sent: Vec<Vec<u8>> = (0..25)
        .map(|i| Codec::Pcmu.encode(&tone(250.0, 12_000.0, i)).to_vec())
        .collect();
    assert!(heard.iter().all(|p| p.from == b_local));
    let ssrc = heard.first().expect("the rep heard leg B").ssrc;
    assert!(heard.iter().all(|p| p.ssrc == ssrc), "one stream: ours");
    assert_ne!(ssrc, caller.ssrc);
    // One continuous sequence across the switch from prompt to caller.
    for w in heard.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1), "{w:?}");
    }
    // The caller's packets arrive last, in order, payloads untouched (no
    // decode or encode on the way), with our timestamps 160 apart.
    let forwarded = &heard[heard.len() - sent.len()..];
    for (p, payload) in forwarded.iter().zip(&sent) {
        assert_eq!((&p.payload, p.payload_type), (payload, 0));
    }
    assert!(forwarded[0].marker, "a new stream starts with the marker");
    for w in forwarded.windows(2) {
        assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 160);
        assert!(!w[1].marker);
    }
    let before = &heard[..heard.len() - sent.len()];
    let prompt = before
        .iter()
        .filter_map(|p| Codec::Pcmu.decode(&p.payload).ok())
        .filter(|f| dbfs(f) > -20.0 && (16..=24).contains(&crossings(f.samples())))
        .count();
    assert!(prompt >= 8, "the rep heard the prompt first: {prompt}");
    let last_prompt = before.last().expect("prompt packets");
    let gap = forwarded[0].timestamp.wrapping_sub(last_prompt.timestamp);
    assert!(
        (160..0x8000_0000).contains(&gap),
        "timestamps move on: {gap}"
    );

    // The other way, while the counters show the bridged traffic.
    let (_, at_caller) = tokio::join!(
        rep.stream(b_local, 0, Codec::Pcmu, 25, |i| tone(1000.0, 12_000.0, i)),
        caller.collect(Duration::from_millis(800)),
    );
    assert!(loud_with_crossings(&at_caller, 36..=44) >= 20);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (a_handle, b_handle) = bridged.legs();
    let (a_stats, b_stats) = (a_handle.stats(), b_handle.stats());
    assert!(
        a_stats.packets_in >= 25 && a_stats.packets_out >= 20,
        "{a_stats:?}"
    );
    assert!(
        b_stats.packets_in >= 25 && b_stats.packets_out >= 35,
        "{b_stats:?}"
    );
    assert_eq!(a_stats.latched, Some(caller.addr()));

    // The caller hangs up: the bridge ends on side A and stops both legs.
    a_handle.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("bridge ends");
    assert_eq!(end, BridgeEnd::Stopped(BridgeSide::A));
    assert!(a_handle.is_closed() && b_handle.is_closed());
    assert!(a_handle.stats().ended && !a_handle.stats().recording);
    assert_eq!(engine.ports_in_use(), 0);

    // Both recordings hold both sides of the bridged call: each leg's peer
    // on the left, what we sent it on the right.
    let (left, right) = channels(&a_wav);
    assert!(tonal_frames(&left, 8..=12) >= 20, "caller left on a");
    assert!(tonal_frames(&right, 36..=44) >= 20, "rep right on a");
    assert!(tonal_frames(&left, 36..=44) <= 3, "no rep audio left on a");
    let (left, right) = channels(&b_wav);
    assert!(tonal_frames(&left, 36..=44) >= 20, "rep left on b");
    assert!(tonal_frames(&right, 16..=24) >= 8, "prompt right on b");
    assert!(tonal_frames(&right, 8..=12) >= 20, "caller right on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translates_between_laws_and_sends_digits_on_a_bridged_leg() {
    let engine = engine(23_500, 4);
    let mut caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_recorded_legs(&engine, &caller, &rep, "8 101", (None, None)).await;
    let a_local = a.handle().local_addr();
    let bridged = bridge(a, b);
    bridged.running().await;

    // PCMU from the caller reaches the rep as PCMA, still 250 Hz.
    let (_, at_rep) = tokio::join!(
        caller.stream(a_local, 0, Codec::Pcmu, 30, |i| tone(250.0, 12_000.0, i)),
        rep.collect(Duration::from_millis(900)),
    );
    let pcma: Vec<_> = at_rep
        .iter()
        .filter(|p| p.payload_type == 8)
        .filter_map(|p| Codec::Pcma.decode(&p.payload).ok())
        .filter(|f| dbfs(f) > -20.0 && (8..=12).contains(&crossings(f.samples())))
        .collect();
    assert!(pcma.len() >= 20, "{} of {}", pcma.len(), at_rep.len());
    assert!(at_rep.iter().all(|p| p.payload_type != 0));

    // A digit the application sends on the bridged rep leg goes out as
    // telephone-events on our stream.
    let (_, b_handle) = bridged.legs();
    b_handle.send_dtmf("5");
    let at_rep = rep.collect(Duration::from_millis(600)).await;
    let fives: Vec<TelephoneEvent> = at_rep
        .iter()
        .filter(|p| p.payload_type == 101)
        .filter_map(|p| TelephoneEvent::parse(&p.payload).ok())
        .collect();
    assert!(
        fives.iter().all(|e| e.event == 5) && !fives.is_empty(),
        "{fives:?}"
    );
    assert!(fives.iter().filter(|e| e.end).count() >= 1);
    bridged.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert_eq!(end, BridgeEnd::Cancelled);
    assert_eq!(b_handle.stats().dtmf_out, 1);
    assert_eq!(engine.ports_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_that_already_ended_ends_the_bridge() {
    let engine = engine(23_600, 4);
    let caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let b_handle = b.handle();
    b_handle.stop();
    b_handle.closed().await;
    let bridged = bridge(a, b);
    bridged.running().await;
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert_eq!(end, BridgeEnd::Stopped(BridgeSide::B));
    let (a_handle, _) = bridged.legs();
    assert!(a_handle.is_closed());
    assert_eq!(engine.ports_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_on_a_bridged_leg_pauses_what_we_forward_to_it() {
    let engine = engine(23_700, 4);
    let mut caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let a_local = a.handle().local_addr();
    let bridged = bridge(a, b);
    bridged.running().await;
    let (_, b_handle) = bridged.legs();
    let frame = |i| tone(250.0, 12_000.0, i);

    let (_, before) = tokio::join!(
        caller.stream(a_local, 0, Codec::Pcmu, 10, frame),
        rep.collect(Duration::from_millis(400)),
    );
    assert!(before.len() >= 8, "{} packets before hold", before.len());

    // The rep's side puts the call on hold (re-INVITE, sendonly): we stop
    // sending to it; the caller's audio is not forwarded meanwhile.
    b_handle
        .update_remote(&rep.offer("0 101", "a=sendonly\r\n"))
        .expect("hold");
    for _ in 0..250 {
        if b_handle.stats().direction == Direction::RecvOnly {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, during) = tokio::join!(
        caller.stream(a_local, 0, Codec::Pcmu, 10, frame),
        rep.collect(Duration::from_millis(400)),
    );
    assert!(during.is_empty(), "{} packets sent on hold", during.len());

    // Unhold: forwarding resumes on our stream, numbers continuing without
    // a gap for what was held back, as a new talkspurt.
    b_handle
        .update_remote(&rep.offer("0 101", "a=sendrecv\r\n"))
        .expect("unhold");
    for _ in 0..250 {
        if b_handle.stats().direction == Direction::SendRecv {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, after) = tokio::join!(
        caller.stream(a_local, 0, Codec::Pcmu, 10, frame),
        rep.collect(Duration::from_millis(400)),
    );
    assert!(after.len() >= 8, "{} packets after unhold", after.len());
    let (last, first) = (before.last().expect("before"), &after[0]);
    assert_eq!(first.ssrc, last.ssrc);
    assert_eq!(first.sequence, last.sequence.wrapping_add(1));
    assert!(first.marker);
    let gap = first.timestamp.wrapping_sub(last.timestamp);
    assert!(
        (160..0x8000_0000).contains(&gap),
        "timestamps move on: {gap}"
    );
    bridged.stop();
    bridged.wait().await;
    assert_eq!(engine.ports_in_use(), 0);
}
