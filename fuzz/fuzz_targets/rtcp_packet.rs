//! Compound RTCP parsing: never panics; parsed reports re-serialise to
//! packets that parse to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_media::rtcp::{self, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = rtcp::parse_compound(data) else {
        return;
    };
    for packet in packets {
        let mut out = Vec::new();
        match &packet {
            RtcpPacket::SenderReport(sr) => sr.write(&mut out),
            RtcpPacket::ReceiverReport(rr) => rr.write(&mut out),
            _ => continue,
        }
        let again = rtcp::parse_compound(&out).expect("a built packet parses");
        assert_eq!(again, vec![packet]);
    }
});
