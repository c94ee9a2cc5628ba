//! `cargo xtask build-ebpf`: the XDP object, with BTF, from a fresh machine.
//!
//! Steps (each skipped when already done): rust-src for nightly; bpf-linker built
//! against the nightly's own libLLVM and cached outside `target/` (its binary keeps
//! an rpath to the cache); the eBPF crate built for bpfel-unknown-none; the object
//! copied to `target/bpf/hb.bpf.o` only when its bytes changed, so that hb-user
//! re-embeds it exactly when it changed.

use crate::tools::{output, run, say, workspace_root};
use anyhow::{bail, Context, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The one toolchain bpf-linker is tied to (see ../shared/TOOLCHAIN.md).
const NIGHTLY: &str = "nightly";

/// Where hb-user's build script looks for the object.
pub fn object_path() -> PathBuf {
    workspace_root().join("target/bpf/hb.bpf.o")
}

/// The empty XDP program the benchmark compares against.
pub fn empty_object_path() -> PathBuf {
    workspace_root().join("target/bpf/empty.bpf.o")
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("hb")
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s = output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
        "rustc +nightly",
    )
    .context(
        "the nightly toolchain is required (rustup toolchain list); it is not installed by xtask",
    )?;
    Ok(PathBuf::from(s.trim()))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    say("installing rust-src for nightly (needed by -Z build-std=core)");
    run(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
        "rustup component add rust-src",
    )
}

/// The nightly's libLLVM shared library (e.g. libLLVM.so.22.1-rust-1.97.0-nightly).
/// The `libLLVM-*.so` file beside it is a linker script, not the library.
fn nightly_libllvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libLLVM.so."))
        {
            return Ok(path);
        }
    }
    bail!(
        "no libLLVM.so.* in {}: cannot build bpf-linker against the nightly's LLVM",
        lib.display()
    )
}

fn llvm_major(libllvm: &Path) -> Result<String> {
    let name = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let version = name.trim_start_matches("libLLVM.so.");
    let major = version.split('.').next().unwrap_or_default();
    if major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
        bail!("cannot read the LLVM version from {name}");
    }
    Ok(major.to_string())
}

/// Returns the bpf-linker binary, building it when missing or stale.
fn ensure_bpf_linker(sysroot: &Path) -> Result<PathBuf> {
    let cache = cache_dir();
    let prefix = cache.join("llvm");
    let root = cache.join("bpf-linker");
    let linker = root.join("bin/bpf-linker");
    let libllvm = nightly_libllvm(sysroot)?;
    let libname = libllvm.file_name().expect("file name");

    // The private LLVM prefix: two symlinks to the nightly's libLLVM.
    let libdir = prefix.join("lib");
    fs::create_dir_all(&libdir)?;
    let mut relinked = false;
    for name in [std::ffi::OsStr::new("libLLVM.so"), libname] {
        let link = libdir.join(name);
        if fs::read_link(&link).ok().as_deref() != Some(libllvm.as_path()) {
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&libllvm, &link)?;
            relinked = true;
        }
    }
    let works = !relinked
        && Command::new(&linker)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if works {
        return Ok(linker);
    }
    let major = llvm_major(&libllvm)?;
    say(format!(
        "building bpf-linker against the nightly's LLVM {major} into {} (a few minutes, once)",
        root.display()
    ));
    run(
        Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .current_dir(std::env::temp_dir()),
        "cargo install bpf-linker",
    )?;
    Ok(linker)
}

/// Builds the XDP object and returns its path.
pub fn build() -> Result<PathBuf> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    let linker = ensure_bpf_linker(&sysroot)?;

    let ws = workspace_root();
    let target_dir = ws.join("target/ebpf");
    say("building the XDP object (hb-ebpf, bpfel-unknown-none, with BTF)");
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"".to_string(),
        "-Cdebuginfo=2".into(),
        // Without --btf bpf-linker strips BTF, and BTF maps fail to load.
        "-Clink-arg=--btf".into(),
        format!("-Clinker={}", linker.display()),
    ]
    .join("\x1f");
    run(
        Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args([
                "build",
                "--package",
                "hb-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", flags)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTFLAGS")
            .current_dir(&ws),
        "cargo build of hb-ebpf",
    )?;
    for (bin, dest) in [("hb", object_path()), ("empty", empty_object_path())] {
        let built = target_dir.join("bpfel-unknown-none/release").join(bin);
        let bytes = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
        if fs::read(&dest).ok().as_deref() != Some(bytes.as_slice()) {
            fs::create_dir_all(dest.parent().expect("parent"))?;
            fs::write(&dest, &bytes)?;
            say(format!("object updated: {}", dest.display()));
        } else {
            say(format!("object unchanged: {}", dest.display()));
        }
    }
    Ok(object_path())
}
