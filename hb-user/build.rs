//! Embeds the XDP object built by `cargo xtask build-ebpf`; fails with that command
//! named when the object is missing.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let object = std::env::var_os("HB_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpf/hb.bpf.o"));
    println!("cargo:rerun-if-env-changed=HB_BPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        eprintln!();
        eprintln!("error: the XDP object {} is missing.", object.display());
        eprintln!("       Build it first with:  cargo xtask build-ebpf");
        eprintln!();
        std::process::exit(1);
    }
    println!(
        "cargo:rustc-env=HB_BPF_OBJECT={}",
        object.canonicalize().expect("exists").display()
    );
}
