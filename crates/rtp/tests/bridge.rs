//! Two legs bridged through us (live transfer), against two RTP peers.

mod common;

use std::time::Duration;

use common::*;
use switchboard_media::dtmf::TelephoneEvent;
use switchboard_media::{Codec, Level};
use switchboard_rtp::{bridge, BridgeEnd, BridgeSide, MediaEngine, MediaLeg};

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
async fn stop_and_rtp_timeout_end_the_bridge() {
    let engine = engine(23_200, 4);
    let caller = Peer::bind().await;
    let rep = Peer::bind().await;
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let bridged = bridge(a, b);
    bridged.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert_eq!(end, BridgeEnd::Cancelled);
    assert_eq!(engine.ports_in_use(), 0);

    let engine = engine_with(23_300, 4, |c| c.no_rtp_timeout = Duration::from_millis(300));
    let (a, b) = two_legs(&engine, &caller, &rep, None).await;
    let bridged = bridge(a, b);
    let end = tokio::time::timeout(Duration::from_secs(5), bridged.wait())
        .await
        .expect("ends");
    assert!(matches!(end, BridgeEnd::RtpTimeout(_)), "{end:?}");
}
