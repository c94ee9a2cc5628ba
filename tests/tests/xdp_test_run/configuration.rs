//! What `configure` switches and keeps: the debug switch that passes
//! heartbeats after recording them, an unconfigured program that passes
//! everything, the peers' sessions kept over a reconfiguration.

use super::{
    assert_refused, hb_frame, peer, plane, run, settings, v4, OTHER_PEER, OUR_NODE, PEER, VIP,
    XDP_PASS,
};
use hb_common::{maps::Outcome, wire::DEFAULT_PORT};
use hb_tests::frames::{self, Ipv4Frame};
use hb_user::loader::{DataPlane, Settings};

#[test]
fn debug_switch_passes_heartbeats_after_recording() {
    let mut dp = plane();
    dp.configure(&Settings {
        pass_heartbeats: true,
        ..settings()
    })
    .unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Accepted));
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Replayed));
    let hello = frames::head(OTHER_PEER, OUR_NODE, 0x33, 1, (0, 0));
    let (action, _, outcome) = run(&dp, &v4(&hello));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Handshake));
}

#[test]
fn unconfigured_program_passes_everything() {
    hb_tests::require_root("BPF_PROG_TEST_RUN");
    let dp = DataPlane::load().unwrap();
    let (action, _, outcome) = run(&dp, &hb_frame(1));
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Passed));
    let v1 = Ipv4Frame::udp(DEFAULT_PORT, &frames::v1_heartbeat(PEER, 1, 1, false)).build();
    let (action, _, outcome) = run(&dp, &v1);
    assert_eq!((action, outcome), (XDP_PASS, Outcome::Passed));
}

/// Reconfiguring keeps each peer's session state (its entry and slot stay).
#[test]
fn reconfiguring_keeps_the_peers_sessions() {
    let mut dp = plane();
    assert_eq!(run(&dp, &hb_frame(7)).2, Outcome::Accepted);
    let heard = peer(&dp);
    dp.configure(&Settings {
        vips_v4: vec![VIP],
        ..settings()
    })
    .unwrap();
    assert_eq!(peer(&dp), heard);
    assert_refused(&dp, &hb_frame(7), Outcome::Replayed);
    assert_eq!(run(&dp, &hb_frame(8)).2, Outcome::Accepted);
}
