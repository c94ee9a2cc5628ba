//! The data plane's news: every link's `EVENTS` ring buffer, as one stream the
//! controller waits on. XDP writes a record when a peer is first heard, comes
//! back after a quiet gap, or says something new (state, flags, priority, a
//! leave, a new epoch), when a death notice arrives, and when ARP claims a VIP;
//! a steady peer's heartbeats write nothing. So the controller sleeps until
//! there is news or a deadline (node.rs `next_deadline`), instead of reading
//! every peer entry several times an interval.

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use hb_common::maps::{Event, EVENT_CLAIM, EVENT_GONE, EVENT_PEER};
use std::{net::Ipv4Addr, task::Poll};
use tokio::io::{unix::AsyncFd, Interest};

/// What one record says, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// Look at this peer's entry: heard anew, or changed.
    Peer(u32),
    /// This peer's kernel sent a fresh death notice.
    Gone(u32),
    /// ARP claimed this VIP from a foreign MAC.
    Claim(Ipv4Addr),
    /// A record this build does not know (a newer data plane was adopted).
    Unknown,
}

impl News {
    fn decode(bytes: &[u8]) -> Self {
        if bytes.len() < size_of::<Event>() {
            return Self::Unknown;
        }
        // SAFETY: Event is repr(C) plain integers; an unaligned read of a
        // buffer at least that long.
        let ev: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        match ev.kind {
            EVENT_PEER => Self::Peer(ev.subject),
            EVENT_GONE => Self::Gone(ev.subject),
            EVENT_CLAIM => Self::Claim(Ipv4Addr::from(ev.subject.to_ne_bytes())),
            _ => Self::Unknown,
        }
    }
}

/// Every link's ring, waited on together.
pub struct Events {
    rings: Vec<AsyncFd<RingBuf<MapData>>>,
}

impl Events {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> Result<Self> {
        let rings = rings
            .into_iter()
            .map(|r| {
                // SAFETY: the ring owns its fd, which stays open and the same
                // for as long as the AsyncFd owns the ring.
                unsafe { AsyncFd::register_with_interest(r, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
            })
            .collect::<std::io::Result<_>>()
            .context("registering the event ring buffers")?;
        Ok(Self { rings })
    }

    /// Waits for news on any link and returns all there is.
    pub async fn next(&mut self) -> Vec<News> {
        std::future::poll_fn(|cx| {
            let mut out = Vec::new();
            for fd in &mut self.rings {
                // Drain, clear readiness, and poll again: that last poll both
                // catches a record that raced the clear and registers the waker.
                while let Poll::Ready(Ok(mut guard)) = fd.poll_read_ready_mut(cx) {
                    drain(guard.get_inner_mut(), &mut out);
                    guard.clear_ready();
                }
            }
            if out.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(out)
            }
        })
        .await
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<News>) {
    // Bounded: the ring holds at most EVENTS_BYTES / 24 records, and XDP may
    // keep adding while we read; the rest wakes us again.
    for _ in 0..1024 {
        let Some(item) = ring.next() else {
            return;
        };
        out.push(News::decode(&item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(ev: Event) -> Vec<u8> {
        let mut v = vec![0u8; size_of::<Event>()];
        // SAFETY: writes an Event into a buffer of its size.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast(), ev) };
        v
    }

    #[test]
    fn records_decode_to_news() {
        let ev = |kind, subject| Event {
            kind,
            subject,
            at_ns: 1,
        };
        assert_eq!(News::decode(&bytes(ev(EVENT_PEER, 7))), News::Peer(7));
        assert_eq!(News::decode(&bytes(ev(EVENT_GONE, 3))), News::Gone(3));
        let vip = u32::from_ne_bytes([10, 0, 0, 100]);
        assert_eq!(
            News::decode(&bytes(ev(EVENT_CLAIM, vip))),
            News::Claim(Ipv4Addr::new(10, 0, 0, 100))
        );
        assert_eq!(News::decode(&bytes(ev(99, 1))), News::Unknown);
        assert_eq!(News::decode(&[1, 2, 3]), News::Unknown);
    }
}
