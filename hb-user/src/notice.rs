//! Death notices from peers' kernels, as the controller reads them: whether a
//! peer's controller is gone (its entries merged over links), and notices the
//! XDP programs refused as replays, logged as they are counted.

use crate::loader::DataPlane;
use hb_common::{wire::GONE_WINDOW, PeerState};
use tracing::warn;

/// A peer's controller is gone when a fresh notice on any link names an epoch
/// at least as new as the newest heartbeat heard from it on any link (so a
/// notice that reached one link only still counts, and a restarted controller's
/// heartbeat on any link ends it).
pub fn gone(entries: &[PeerState]) -> bool {
    let newest = entries.iter().map(|p| p.epoch).max().unwrap_or(0);
    entries
        .iter()
        .any(|p| p.gone_ns != 0 && p.gone_epoch >= newest)
}

/// Refused notices per link, as last read; None before the first read, which
/// only sets the baseline (counts left by a previous run are not news).
#[derive(Default)]
pub struct Replays {
    seen: Vec<Option<u64>>,
}

impl Replays {
    /// Logs the notices each link's XDP program refused as replays since the
    /// last call.
    pub fn watch<'a>(&mut self, planes: impl Iterator<Item = (&'a str, &'a DataPlane)>) {
        for (i, (iface, plane)) in planes.enumerate() {
            let Ok(stats) = plane.stats() else {
                continue;
            };
            if self.seen.len() <= i {
                self.seen.resize(i + 1, None);
            }
            let now = stats.gone_replayed;
            if let Some(before) = self.seen[i].replace(now) {
                if now > before {
                    warn!(
                        "refused {} replayed death notice(s) on {iface}: they echo none of our last {GONE_WINDOW} heartbeats (captured earlier and sent again?)",
                        now - before
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u32, gone_epoch: u32) -> PeerState {
        PeerState {
            epoch,
            gone_ns: u64::from(gone_epoch != 0),
            gone_epoch,
            ..Default::default()
        }
    }

    #[test]
    fn a_notice_on_one_link_counts_until_a_newer_heartbeat_on_any() {
        assert!(!gone(&[entry(3, 0), entry(3, 0)]));
        assert!(gone(&[entry(3, 3), entry(3, 0)]), "notice on link 0 only");
        assert!(gone(&[entry(3, 0), entry(2, 3)]), "notice on link 1 only");
        assert!(
            !gone(&[entry(4, 0), entry(3, 3)]),
            "the restarted controller was heard on link 0"
        );
        assert!(gone(&[entry(4, 4), entry(4, 0)]), "and died again");
        assert!(!gone(&[]));
    }
}
