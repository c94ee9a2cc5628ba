//! Shared by the XDP program and the controller: the heartbeat wire format, its MAC,
//! and the `#[repr(C)]` types stored in the BPF maps. `no_std`, no allocation, no
//! panicking paths on the decode side, so the verifier accepts it.
#![cfg_attr(not(test), no_std)]

pub mod maps;
pub mod siphash;
pub mod wire;
pub mod wire2;

pub use maps::{Config, Key, Outcome, Owner, PeerState, Sent, Stats};
pub use wire::{MsgType, NodeState};
