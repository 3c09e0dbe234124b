//! RTP parsing: never panics; whatever parses re-serialises to a packet
//! that parses to the same header and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = RtpPacket::parse(data) {
        let rebuilt = packet.header().to_packet(packet.payload());
        let again = RtpPacket::parse(&rebuilt).expect("a built packet parses");
        assert_eq!(again.header(), packet.header());
        assert_eq!(again.payload(), packet.payload());
        let _ = packet.csrcs().count();
    }
});
