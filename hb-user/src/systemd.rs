//! The service manager's side of a run (sd_notify(3), Type=notify-reload):
//! READY once the data plane is attached and every election has left INIT,
//! WATCHDOG from the controller's loop when `WatchdogSec` is set, RELOADING
//! and READY around a reload, STOPPING at the graceful stop, and STATUS with
//! each group's state. Without `NOTIFY_SOCKET` (not run by systemd) every
//! call does nothing.

use hb_common::NodeState;
use sd_notify::NotifyState;
use std::time::Duration;
use tracing::warn;

pub struct Systemd {
    /// `WatchdogSec`, when the unit sets one for this process.
    watchdog: Option<Duration>,
    /// When WATCHDOG=1 was last sent (CLOCK_MONOTONIC).
    fed: Duration,
    ready: bool,
    /// Whether a service manager listens (`NOTIFY_SOCKET` at the start).
    enabled: bool,
    /// The elections' states the last STATUS= said.
    states: Vec<NodeState>,
    /// A send failed once: said in the log, not again.
    warned: bool,
}

impl Systemd {
    pub fn new() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
            fed: Duration::ZERO,
            ready: false,
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            states: Vec::new(),
            warned: false,
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned {
                warn!("telling the service manager {states:?}: {e}");
                self.warned = true;
            }
        }
    }

    /// Whether anything here is sent at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The loop's state: the elections' `states`, which `status` words;
    /// READY goes once `settled` (no election in INIT). STATUS is sent when
    /// the states changed, WATCHDOG when half its period has passed since
    /// the last.
    pub fn update(
        &mut self,
        now: Duration,
        settled: bool,
        states: &[NodeState],
        status: impl FnOnce() -> String,
    ) {
        if settled && !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
        }
        if states != self.states.as_slice() {
            self.states = states.to_vec();
            let text = status();
            self.send(&[NotifyState::Status(&text)]);
        }
        if let Some(p) = self.watchdog {
            if now.saturating_sub(self.fed) >= p / 2 {
                self.fed = now;
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// When the loop must wake to feed the watchdog next.
    pub fn next_feed(&self) -> Option<Duration> {
        self.watchdog.map(|p| self.fed + p / 2)
    }

    /// A reload begins (systemd waits for READY=1, which `reloaded` sends).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(t) => self.send(&[NotifyState::Reloading, t]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is over, applied or refused.
    pub fn reloaded(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    /// The graceful stop begins.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }
}

impl Default for Systemd {
    fn default() -> Self {
        Self::new()
    }
}
