//! The kernel features `hb-user run` needs, probed before it changes anything:
//! a kernel that lacks one is refused in one line naming what is missing, the
//! first mainline release that has it and the running release, instead of an
//! "Invalid argument" halfway through a start. Versions and their sources are
//! in docs/KERNELS.md.

use anyhow::{Context, Result};
use aya::programs::ProgramType;
use aya_obj::{
    btf::{Btf, BtfType, Int, IntEncoding},
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_map_type},
};
use std::{
    fmt, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// A kernel feature and the first mainline release that has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub since: (u32, u32),
}

impl Feature {
    const fn new(name: &'static str, major: u32, minor: u32) -> Self {
        Self {
            name,
            since: (major, minor),
        }
    }
}

pub const BPFFS: Feature = Feature::new("the BPF filesystem (bpffs)", 4, 4);
pub const XDP: Feature = Feature::new("XDP programs", 4, 8);
pub const BTF: Feature = Feature::new("BTF", 4, 18);
pub const BTF_MAPS: Feature = Feature::new("BTF-typed hash, array and per-CPU array maps", 4, 19);
pub const LINKS: Feature = Feature::new("pinnable bpf_links with BPF_LINK_UPDATE", 5, 7);
pub const XDP_LINK: Feature = Feature::new("XDP attached through bpf_link", 5, 9);

/// Everything hb needs today; the floor is the newest of them.
pub const NEEDED: [Feature; 6] = [BPFFS, XDP, BTF, BTF_MAPS, LINKS, XDP_LINK];

/// The oldest mainline kernel with everything in [`NEEDED`].
pub fn floor() -> (u32, u32) {
    NEEDED.iter().map(|f| f.since).max().unwrap_or((0, 0))
}

/// What the running kernel has, one flag per feature in [`NEEDED`]. The seam
/// between probing (needs root and a kernel) and [`check`] (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub bpffs: bool,
    pub xdp: bool,
    pub btf: bool,
    pub btf_maps: bool,
    pub links: bool,
    pub xdp_link: bool,
}

impl Features {
    /// A kernel with everything.
    pub const ALL: Features = Features {
        bpffs: true,
        xdp: true,
        btf: true,
        btf_maps: true,
        links: true,
        xdp_link: true,
    };

    fn flags(&self) -> [(Feature, bool); 6] {
        [
            (BPFFS, self.bpffs),
            (XDP, self.xdp),
            (BTF, self.btf),
            (BTF_MAPS, self.btf_maps),
            (LINKS, self.links),
            (XDP_LINK, self.xdp_link),
        ]
    }

    /// Probes the running kernel. Every probe either loads or creates a
    /// throwaway object and closes it at once, or issues a command with an
    /// invalid descriptor: nothing is attached, pinned or left behind. An error
    /// means a probe could not tell (e.g. no permission), not that a feature is
    /// missing.
    pub fn probe() -> Result<Self> {
        let xdp = aya::sys::is_program_supported(ProgramType::Xdp)
            .context("probing the kernel for XDP (hb-user run needs root)")?;
        let btf = aya::features().btf().is_some();
        let btf_maps = btf && btf_maps().context("probing the kernel for BTF-typed maps")?;
        Ok(Self {
            bpffs: std::fs::read_to_string("/proc/filesystems")
                .context("reading /proc/filesystems")?
                .lines()
                .any(|l| l.split_whitespace().last() == Some("bpf")),
            xdp,
            btf,
            btf_maps,
            links: link_update().context("probing the kernel for BPF_LINK_UPDATE")?,
            xdp_link: xdp_link().context("probing the kernel for XDP bpf_links")?,
        })
    }
}

/// The features a kernel lacks, for the one-line refusal.
#[derive(Debug, PartialEq, Eq)]
pub struct Missing {
    pub release: String,
    pub lacks: Vec<Feature>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lacks: Vec<String> = self
            .lacks
            .iter()
            .map(|l| format!("{} (first in Linux {}.{})", l.name, l.since.0, l.since.1))
            .collect();
        let (major, minor) = floor();
        write!(
            f,
            "kernel {} lacks {}: hb needs Linux {major}.{minor} or newer",
            self.release,
            lacks.join(", ")
        )
    }
}

impl std::error::Error for Missing {}

/// Refuses a kernel that lacks any of [`NEEDED`].
pub fn check(found: &Features, release: &str) -> Result<(), Missing> {
    let lacks: Vec<Feature> = found
        .flags()
        .into_iter()
        .filter(|(_, has)| !has)
        .map(|(f, _)| f)
        .collect();
    if lacks.is_empty() {
        Ok(())
    } else {
        Err(Missing {
            release: release.to_string(),
            lacks,
        })
    }
}

/// The running kernel's release, as `uname -r` prints it.
pub fn release() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(_) => "(unknown release)".into(),
    }
}

/// An all-zero bpf_attr: what the kernel wants in every field a command does not use.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of structs of integers (bindgen's, with no
    // Default), for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: attr is a bpf_attr of the size we pass; a non-negative result is
    // a new descriptor that we own (and close on drop).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// "The kernel does not know this": an unknown command, attach type or
/// attribute (EINVAL), or attribute bytes past the end of its bpf_attr (E2BIG).
fn unknown(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::E2BIG))
}

/// A command known to the kernel fails on an invalid descriptor with EBADF; an
/// unknown one with EINVAL (the probe libbpf uses for perf links).
fn known_with_bad_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<bool> {
    match bpf(cmd, attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(true),
        Err(e) if unknown(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// BPF_LINK_UPDATE on descriptor -1. It arrived with pinnable bpf_links.
fn link_update() -> io::Result<bool> {
    let mut attr = zeroed_attr();
    attr.link_update.link_fd = u32::MAX;
    known_with_bad_fd(bpf_cmd::BPF_LINK_UPDATE, &mut attr)
}

/// BPF_LINK_CREATE of an XDP link for program descriptor -1: kernels that
/// know the BPF_XDP attach type look the program up (EBADF), older ones reject
/// the attach type first (EINVAL). No interface is touched.
fn xdp_link() -> io::Result<bool> {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = u32::MAX;
    attr.link_create.attach_type = bpf_attach_type::BPF_XDP as u32;
    known_with_bad_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// Creates a one-entry map of each type hb uses with BTF key and value types
/// (an `int` type loaded for the purpose), and closes it.
fn btf_maps() -> io::Result<bool> {
    let mut btf = Btf::new();
    let name = btf.add_string("int");
    let int = btf.add_type(BtfType::Int(Int::new(name, 4, IntEncoding::Signed, 0)));
    let bytes = btf.to_bytes();
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_7.btf = bytes.as_ptr() as u64;
    attr.__bindgen_anon_7.btf_size = bytes.len() as u32;
    let btf_fd = match bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(e) if unknown(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    for map_type in [
        bpf_map_type::BPF_MAP_TYPE_HASH,
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY,
    ] {
        let mut attr = zeroed_attr();
        // Field by field: writing a union's field is safe, borrowing the member is not.
        attr.__bindgen_anon_1.map_type = map_type as u32;
        attr.__bindgen_anon_1.key_size = 4;
        attr.__bindgen_anon_1.value_size = 4;
        attr.__bindgen_anon_1.max_entries = 1;
        attr.__bindgen_anon_1.btf_fd = btf_fd.as_raw_fd() as u32;
        attr.__bindgen_anon_1.btf_key_type_id = int;
        attr.__bindgen_anon_1.btf_value_type_id = int;
        match bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr) {
            Ok(_map) => {}
            // 524 is the kernel-internal ENOTSUPP some map types answered with.
            Err(e) if unknown(&e) || matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | 524)) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_with_everything_passes() {
        assert_eq!(check(&Features::ALL, "6.1.0-27-cloud-amd64"), Ok(()));
    }

    #[test]
    fn a_missing_xdp_link_is_one_line_naming_it_its_version_and_the_release() {
        let found = Features {
            xdp_link: false,
            ..Features::ALL
        };
        let e = check(&found, "5.8.0-63-generic").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel 5.8.0-63-generic lacks XDP attached through bpf_link (first in Linux 5.9): \
             hb needs Linux 5.9 or newer"
        );
    }

    #[test]
    fn everything_missing_is_listed_oldest_first_on_one_line() {
        let none = Features {
            bpffs: false,
            xdp: false,
            btf: false,
            btf_maps: false,
            links: false,
            xdp_link: false,
        };
        let e = check(&none, "4.4.0-21-generic").unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_eq!(e.matches("(first in Linux").count(), NEEDED.len(), "{e}");
        assert!(
            e.find("bpffs").unwrap() < e.find("bpf_link").unwrap(),
            "{e}"
        );
    }

    #[test]
    fn the_floor_is_the_newest_needed_feature() {
        assert_eq!(floor(), (5, 9));
    }

    #[test]
    fn release_is_what_uname_reports() {
        let r = release();
        assert!(r.chars().next().is_some_and(|c| c.is_ascii_digit()), "{r}");
    }
}
