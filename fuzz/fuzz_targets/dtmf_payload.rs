//! RFC 4733 payloads: parsing never panics and round-trips; a detector fed
//! arbitrary (timestamp, payload) pairs never panics and stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_media::dtmf::{DtmfDetector, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = TelephoneEvent::parse(data) {
        let bytes = event.to_bytes();
        let again = TelephoneEvent::parse(&bytes).expect("4 bytes parse");
        assert_eq!(again.to_bytes(), bytes);
    }
    // Read the input as a stream of 8-byte records: timestamp + payload.
    let mut detector = DtmfDetector::default();
    for record in data.chunks(8) {
        let (ts, payload) = record.split_at(record.len().min(4));
        let mut ts_bytes = [0u8; 4];
        ts_bytes[..ts.len()].copy_from_slice(ts);
        let ts = u32::from_be_bytes(ts_bytes);
        let _ = detector.handle_packet(ts, payload);
        detector.handle_time(ts.wrapping_add(u32::from(payload.first().copied().unwrap_or(0)) << 8));
    }
    while detector.poll_event().is_some() {}
});
