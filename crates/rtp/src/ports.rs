//! RTP/RTCP port pairs from a configured range.
//!
//! RTP takes an even port and RTCP the odd one above it (RFC 3550 §11).
//! The allocator hands out pairs round-robin, so a port just freed is the
//! last to be reused (late packets of the previous call then land nowhere),
//! and skips pairs another process holds: binding is the only reliable test.
//! A pair is freed when its [`PortGuard`] drops, i.e. when the endpoint that
//! owns the sockets stops.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};

use crate::RtpError;

/// The UDP ports media may use, both ends inclusive. RTP uses the even ports
/// `p` for which `p + 1` (RTCP) is also in the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port.
    pub first: u16,
    /// The highest port.
    pub last: u16,
}

impl PortRange {
    /// The range `first..=last`.
    pub const fn new(first: u16, last: u16) -> Self {
        PortRange { first, last }
    }

    /// How many RTP/RTCP pairs fit.
    pub fn pairs(&self) -> usize {
        let start = self.first_rtp_port();
        let last = u32::from(self.last);
        if start >= last {
            0
        } else {
            (last - start).div_ceil(2) as usize
        }
    }

    /// The lowest even port (RTP), as u32 so `+ 1` cannot overflow.
    fn first_rtp_port(&self) -> u32 {
        let lowest = u32::from(self.first.max(2));
        lowest + lowest % 2
    }

    /// The `index`th RTP port (`index < pairs()`), computed rather than
    /// listed: the allocator runs on every call setup.
    fn rtp_port(&self, index: usize) -> Option<u16> {
        let index = u32::try_from(index).ok()?;
        u16::try_from(self.first_rtp_port() + 2 * index).ok()
    }
}

impl Default for PortRange {
    /// 10000–20000, what Asterisk and FreeSWITCH use.
    fn default() -> Self {
        PortRange::new(10_000, 20_000)
    }
}

/// Hands out port pairs; shared by every endpoint of one engine.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    range: PortRange,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_use: BTreeSet<u16>,
    /// Index into the range's RTP ports of the next one to try.
    cursor: usize,
}

/// A bound RTP/RTCP socket pair and the claim on its ports.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) guard: PortGuard,
}

/// Frees its port pair when dropped.
#[derive(Debug)]
pub(crate) struct PortGuard {
    allocator: Arc<PortAllocator>,
    port: u16,
}

impl PortGuard {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        self.allocator.lock().in_use.remove(&self.port);
    }
}

impl PortAllocator {
    pub(crate) fn new(range: PortRange) -> Self {
        PortAllocator {
            range,
            state: Mutex::new(State::default()),
        }
    }

    /// Binds the next free pair on `ip`.
    pub(crate) fn allocate(self: &Arc<Self>, ip: IpAddr) -> Result<Allocation, RtpError> {
        let pairs = self.range.pairs();
        if pairs == 0 {
            return Err(self.exhausted());
        }
        let mut state = self.lock();
        for step in 0..pairs {
            let index = (state.cursor + step) % pairs;
            let Some(port) = self.range.rtp_port(index) else {
                continue;
            };
            if state.in_use.contains(&port) {
                continue;
            }
            match bind_pair(ip, port) {
                Ok((rtp, rtcp)) => {
                    state.in_use.insert(port);
                    state.cursor = (index + 1) % pairs;
                    drop(state);
                    return Ok(Allocation {
                        rtp,
                        rtcp,
                        guard: PortGuard {
                            allocator: Arc::clone(self),
                            port,
                        },
                    });
                }
                // Someone outside this engine holds it: try the next pair.
                Err((_, e)) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err((addr, source)) => return Err(RtpError::Bind { addr, source }),
            }
        }
        Err(self.exhausted())
    }

    /// Pairs currently handed out.
    pub(crate) fn in_use(&self) -> usize {
        self.lock().in_use.len()
    }

    fn exhausted(&self) -> RtpError {
        RtpError::PortsExhausted {
            first: self.range.first,
            last: self.range.last,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set and a cursor, valid after any panic mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> Result<(UdpSocket, UdpSocket), (SocketAddr, io::Error)> {
    let bind = |port: u16| {
        let addr = SocketAddr::new(ip, port);
        let socket = UdpSocket::bind(addr).map_err(|e| (addr, e))?;
        socket.set_nonblocking(true).map_err(|e| (addr, e))?;
        Ok(socket)
    };
    let rtp = bind(port)?;
    let rtcp = bind(port + 1)?;
    Ok((rtp, rtcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn only_even_pairs_inside_the_range() {
        let range = PortRange::new(30_001, 30_006);
        let ports: Vec<Option<u16>> = (0..=range.pairs()).map(|i| range.rtp_port(i)).collect();
        assert_eq!(ports, [Some(30_002), Some(30_004), Some(30_006)]);
        assert_eq!(range.pairs(), 2, "30006 has no 30007 for RTCP");
        assert_eq!(PortRange::new(30_000, 30_003).pairs(), 2);
        assert_eq!(PortRange::new(2, 65_535).pairs(), 32_767);
        assert_eq!(PortRange::new(0, 65_535).rtp_port(32_766), Some(65_534));
        assert_eq!(PortRange::new(30_000, 30_001).pairs(), 1);
        assert_eq!(PortRange::new(30_000, 30_000).pairs(), 0);
        assert_eq!(PortRange::new(65_534, 65_535).pairs(), 1);
        assert_eq!(PortRange::new(9, 3).pairs(), 0);
    }

    #[test]
    fn exhaustion_is_an_error_and_drop_frees() {
        let allocator = Arc::new(PortAllocator::new(PortRange::new(21_700, 21_703)));
        let a = allocator.allocate(LOCALHOST).expect("first pair");
        let b = allocator.allocate(LOCALHOST).expect("second pair");
        assert_eq!(a.guard.port() % 2, 0);
        assert_ne!(a.guard.port(), b.guard.port());
        assert!(matches!(
            allocator.allocate(LOCALHOST),
            Err(RtpError::PortsExhausted {
                first: 21_700,
                last: 21_703
            })
        ));
        let freed = a.guard.port();
        drop(a);
        assert_eq!(allocator.in_use(), 1);
        let c = allocator.allocate(LOCALHOST).expect("freed pair");
        assert_eq!(c.guard.port(), freed);
    }

    #[test]
    fn skips_ports_held_by_someone_else() {
        let squatter = UdpSocket::bind((LOCALHOST, 21_711)).expect("bind");
        let allocator = Arc::new(PortAllocator::new(PortRange::new(21_710, 21_713)));
        let a = allocator.allocate(LOCALHOST).expect("pair");
        assert_eq!(a.guard.port(), 21_712);
        drop(squatter);
    }
}
