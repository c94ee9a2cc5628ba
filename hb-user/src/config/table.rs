//! The one table of settings: each is declared once, with its flag, file key,
//! default, parser, reload class and doc, and lands in the struct of the
//! subsystem that uses it. `settings!` turns the table into the flags
//! ([`RunArgs`]), the subsystem structs, their resolution from flags, file and
//! defaults, the reload comparison, and [`SETTINGS`] (docs, unknown keys).
//!
//! A new setting is one entry; its cross-field rules go in `validate.rs`.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use crate::{election::WitnessDown, hooks::NotifyArgs};

use super::{
    parse::{
        at_least, bool_value, command, duration, garp_refresh, iface_list, int, interval,
        key_prefix, node_id, path, peer_list, ping_list, socket_addr, vip_list, witness_url,
    },
    ConfigError, Initial, PeerAddr, Reload, Setting, Sources, Vip, XdpModeArg,
};

/// Declares the settings. Each entry:
/// `field: Type = kind("file_key", default), parser, Reload, "doc" [clap args];`
/// where kind is `one` (the last value; the flag is repeatable only for lists),
/// `opt` (absent is `None`) or `list` (every value; flags replace the file's),
/// and default is a literal parsed like a user's value, `required` or `absent`.
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:literal])*
        $Sub:ident $sub:ident {
            $(
                $field:ident : $ty:ty = $kind:ident($key:literal, $default:tt),
                    $parse:expr, $reload:ident, $doc:literal [$($arg:tt)*];
            )*
        }
    )*) => {
        /// Flags of `hb-user run`. All optional here: the config file may
        /// supply what the command line leaves out; [`super::RunConfig::load`]
        /// checks the result. Every flag is kept as given (strings) and parsed
        /// with the file's values, so both get the same messages.
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct RunArgs {
            $($(
                #[arg($($arg)*, help = help!($doc, $default))]
                pub $field: Vec<String>,
            )*)*
            /// Config file [default: /etc/hb/hb.toml, if it exists].
            #[arg(long, value_name = "PATH")]
            pub config: Option<PathBuf>,
        }

        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $Sub {
                $(#[doc = $doc] pub $field: $ty,)*
            }
        )*

        /// The settings of the table, by subsystem.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Table {
            $(pub $sub: $Sub,)*
        }

        /// Every setting of the table, in table order.
        pub const SETTINGS: &[Setting] = &[$($(Setting {
            id: stringify!($field),
            key: $key,
            default: default!($default),
            reload: Reload::$reload,
            doc: $doc,
        },)*)*];

        impl Table {
            /// Each setting from its flag, else the file, else its default.
            pub(super) fn resolve(src: &Sources, args: &RunArgs) -> Result<Table, ConfigError> {
                Ok(Table {$($sub: $Sub {$(
                    $field: src.$kind(stringify!($field), &args.$field, $key, default!($default), $parse)?,
                )*},)*})
            }

            /// The settings that differ between `self` and `new`, in table order.
            pub fn changed(&self, new: &Table) -> Vec<&'static Setting> {
                let mut out = Vec::new();
                let mut i = 0;
                $($(
                    if self.$sub.$field != new.$sub.$field {
                        out.push(&SETTINGS[i]);
                    }
                    i += 1;
                )*)*
                let _ = i;
                out
            }
        }
    };
}

/// The flag's help: the doc and its default.
macro_rules! help {
    ($doc:literal, required) => {
        concat!($doc, " (required)")
    };
    ($doc:literal, absent) => {
        $doc
    };
    ($doc:literal, $d:literal) => {
        concat!($doc, " [default: ", $d, "]")
    };
}

macro_rules! default {
    (required) => {
        Initial::Required
    };
    (absent) => {
        Initial::Absent
    };
    ($d:literal) => {
        Initial::Value($d)
    };
}

settings! {
    /// Who is in the cluster and how heartbeats travel.
    Membership membership {
        ifaces: Vec<String> = list("iface", required), iface_list, Restart,
            "Interface to attach to and send heartbeats on (repeat for several links)."
            [long = "iface", value_name = "IF"];
        node_id: u32 = one("node_id", required), node_id, Restart,
            "This node's id (1..=4294967295)."
            [long, value_name = "N"];
        peers: Vec<PeerAddr> = list("peer", required), peer_list, Live,
            "A peer as ID@IPV4 or ID@IPV6 (repeat; the same id once per link)."
            [long = "peer", value_name = "ID@ADDR"];
        cluster_id: u32 = one("cluster_id", "1"), |s| int::<u32>(s, 0, u32::MAX), Restart,
            "Cluster id; heartbeats of other clusters are ignored."
            [long, value_name = "N"];
        port: u16 = one("port", "694"), |s| int::<u16>(s, 1, u16::MAX), Restart,
            "Heartbeat UDP port."
            [long, value_name = "PORT"];
        ping: Vec<IpAddr> = list("ping", absent), ping_list, Restart,
            "Quorum target: an IPv4 or IPv6 address pinged at the heartbeat cadence (repeat). A node that hears no peer and reaches no target is isolated: FAULT, never the VIP holder."
            [long = "ping", value_name = "ADDR"];
    }

    /// How often heartbeats go and how long silence may last.
    Timers timers {
        interval: Duration = one("interval", "100ms"), interval, Restart,
            "Time between heartbeats."
            [long, value_name = "DURATION"];
        dead_after: Duration = one("dead_after", "500ms"), duration, Restart,
            "Silence after which a peer is declared dead."
            [long, value_name = "DURATION"];
        init_dead: Duration = one("init_dead", "2s"), duration, Restart,
            "Time to wait for peers after start before taking over, at least --dead-after."
            [long, value_name = "DURATION"];
    }

    /// What this node competes for, and how.
    Election election {
        vips: Vec<Vip> = list("vip", absent), vip_list, Live,
            "Virtual address to hold while active, as IPV4/PREFIX or IPV6/PREFIX (repeat)."
            [long = "vip", value_name = "ADDR/PREFIX"];
        priority: u8 = one("priority", "100"), |s| int::<u8>(s, 0, u8::MAX), Live,
            "Election priority, 0-255, higher wins."
            [long, value_name = "0-255"];
        preempt: bool = one("preempt", "true"), bool_value, Live,
            "Take the VIPs back from a lower-priority active node (the flag --no-preempt turns it off)."
            [long = "no-preempt", num_args = 0, default_missing_value = "false"];
        preempt_delay: Duration = one("preempt_delay", "0s"), duration, Live,
            "After the start, wait this long before taking the VIPs from a lower-priority holder (keepalived's preempt_delay)."
            [long, value_name = "DURATION"];
    }

    /// Announcing the VIPs to the LAN.
    Announce announce {
        garp_count: u32 = one("garp_count", "5"), |s| int::<u32>(s, 0, 100), Live,
            "Gratuitous ARPs sent per VIP on takeover, 0-100."
            [long, value_name = "N"];
        garp_spacing: Duration = one("garp_spacing", "10ms"), duration, Live,
            "Time between gratuitous ARPs."
            [long, value_name = "DURATION"];
        garp_refresh: Option<Duration> = opt("garp_refresh", absent), garp_refresh, Live,
            "Repeat the gratuitous ARP burst this often while holding the VIP [default: off]."
            [long, value_name = "DURATION"];
    }

    /// Commands run on decisions.
    Hooks hooks {
        fence_cmd: Option<String> = opt("fence_cmd", absent), command, Live,
            "Fencing command, run before taking the VIP from a peer that went silent; the VIP is taken only if it exits 0 within --fence-timeout."
            [long, value_name = "CMD"];
        fence_timeout: Duration = one("fence_timeout", "10s"), duration, Live,
            "Time the fencing command may take."
            [long, value_name = "DURATION"];
        notify: Option<String> = opt("notify", absent), command, Live,
            "Command run on every state transition with NEW OLD VIP IFACE REASON as arguments (and HB_NEW_STATE, HB_OLD_STATE, HB_VIP, HB_IFACE, HB_REASON in its environment)."
            [long, value_name = "CMD"];
        notify_args: NotifyArgs = one("notify_args", "hb"), |s| s.parse(), Live,
            "The notify command's arguments: hb (NEW OLD VIP IFACE REASON) or keepalived (INSTANCE NAME STATE PRIORITY, as keepalived's notify scripts expect; the group's name is default)."
            [long, value_name = "MODE"];
        notify_timeout: Duration = one("notify_timeout", "10s"), duration, Live,
            "Time a notify command may take before it is killed."
            [long, value_name = "DURATION"];
    }

    /// The tie-breaker of a two-node cluster: an etcd key per election.
    Witness witness {
        witness: Option<Vec<String>> = opt("witness", absent), witness_url, Restart,
            "etcd endpoints as etcd://HOST:PORT[,HOST:PORT...]: the holder keeps a key per election there, bound to a lease it renews; taking the VIPs from a silent peer needs that key, and a holder cut off from its peers keeps them only while its key lasts [default: off]."
            [long, value_name = "etcd://HOST:PORT"];
        witness_ttl: Duration = one("witness_ttl", "3s"), |s| at_least(s, Duration::from_secs(1), "1s"), Restart,
            "The witness lease's time to live, in whole seconds (rounded up): how long a holder cut off from its peers and the witness keeps the VIPs, and how long the key of a peer gone silent keeps the others waiting."
            [long, value_name = "DURATION"];
        witness_down: WitnessDown = one("witness_down", "keep"), |s| s.parse(), Restart,
            "While the witness cannot be reached: keep (the holder keeps the VIPs while it hears its peers; nobody takes them from a silent peer) or heartbeats (decide from heartbeats alone, as without a witness)."
            [long, value_name = "POLICY"];
        witness_prefix: String = one("witness_prefix", "/hb"), key_prefix, Restart,
            "Key prefix in etcd: an election's key is PREFIX/CLUSTER_ID/NAME (the group's, or the sync group's)."
            [long, value_name = "PREFIX"];
    }

    /// Where hb keeps its files and pins.
    Paths paths {
        key_file: PathBuf = one("key_file", "/etc/hb/hb.key"), path, Restart,
            "File holding the 128-bit key as 32 hex digits."
            [long, value_name = "PATH"];
        state_dir: PathBuf = one("state_dir", "/var/lib/hb"), path, Restart,
            "Directory for the lock, epoch and status files."
            [long, value_name = "DIR"];
        pin_root: PathBuf = one("pin_root", "/sys/fs/bpf/hb"), path, Restart,
            "bpffs directory to pin the program and maps under."
            [long, value_name = "DIR"];
    }

    /// How the data plane and the controller run.
    Runtime runtime {
        xdp_mode: XdpModeArg = one("xdp_mode", "auto"), |s| s.parse(), Restart,
            "XDP attach mode: auto, native or generic."
            [long, value_name = "MODE"];
        pass_heartbeats: bool = one("pass_heartbeats", "false"), bool_value, Restart,
            "Let heartbeat packets go on to the network stack (for tcpdump/debugging)."
            [long, num_args = 0, default_missing_value = "true"];
        realtime: bool = one("realtime", "false"), bool_value, Restart,
            "Run the controller under SCHED_FIFO with its memory locked, so that a machine saturated by other work cannot delay heartbeats and polling."
            [long, num_args = 0, default_missing_value = "true"];
        metrics: Option<SocketAddr> = opt("metrics", absent), socket_addr, Restart,
            "Serve Prometheus metrics on ADDR:PORT (/metrics); off unless set."
            [long, value_name = "ADDR:PORT"];
    }
}
