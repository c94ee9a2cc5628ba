//! Death notices the XDP programs refused as replays, logged as they are
//! counted. (Whether a peer's controller is gone is the core's call: node.rs.)

use crate::loader::DataPlane;
use tracing::warn;

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
                        "refused {} replayed death notice(s) on {iface}: they echo none of our recent heartbeats of this session (captured earlier and sent again?)",
                        now - before
                    );
                }
            }
        }
    }
}
