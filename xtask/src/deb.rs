//! `cargo xtask deb`: the Debian package of hb-user, as
//! `[package.metadata.deb]` in hb-user/Cargo.toml lays it out.
//!
//! Steps: the XDP object and hb-user (`dist` profile) as the other tasks
//! build them; `hb-user generate` (man pages, completions, the commented
//! hb.toml) into target/deb-assets/, each file rewritten only when its bytes
//! changed; contrib/hb.toml checked against the generated one; cargo-deb
//! (installed when missing) packaging the built binary as is (`--no-build`).
//! When neither the binary, the assets nor the packaging inputs changed since
//! the last package, that package is reused: the test suite builds it on
//! every run.

use crate::tools::{ensure_packages, output, run, say, workspace_root};
use anyhow::{bail, Context, Result};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

/// Where `hb-user generate` writes what the package installs besides the binary.
pub fn assets_dir() -> PathBuf {
    workspace_root().join("target/deb-assets")
}

/// Records the last package built, for [`package`] to reuse.
fn stamp() -> PathBuf {
    workspace_root().join("target/debian/last-package")
}

/// Builds everything and the package; returns the .deb's path.
pub fn build() -> Result<PathBuf> {
    crate::build_ebpf::build()?;
    let hb_user = crate::build_hb_user()?;
    package(&hb_user)
}

/// The package of `hb_user`, a `dist` build (target/dist/hb-user).
pub fn package(hb_user: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    generate(hb_user)?;
    let contrib = root.join("contrib/hb.toml");
    let generated = assets_dir().join("hb.toml");
    if fs::read(&contrib).ok() != fs::read(&generated).ok() {
        bail!(
            "{} differs from what `hb-user generate` writes (a setting changed): \
             cp {} {}",
            contrib.display(),
            generated.display(),
            contrib.display()
        );
    }
    let inputs = inputs(hb_user)?;
    if let Some(deb) = reusable(&inputs) {
        say(format!("package unchanged: {}", deb.display()));
        return Ok(deb);
    }
    // $auto's Depends come from dpkg-shlibdeps.
    ensure_packages(&[("dpkg-shlibdeps", "dpkg-dev")])?;
    ensure_cargo_deb()?;
    say("packaging hb-user (cargo deb)");
    let out = output(
        Command::new(crate::tools::cargo())
            .args([
                "deb",
                "-p",
                "hb-user",
                "--no-build",
                "--profile",
                "dist",
                // The dist profile strips already.
                "--no-strip",
            ])
            .current_dir(&root),
        "cargo deb",
    )?;
    let deb = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no .deb path")?;
    let deb = if deb.is_absolute() {
        deb
    } else {
        root.join(deb)
    };
    if !deb.is_file() {
        bail!("cargo deb named {}, which is not there", deb.display());
    }
    fs::write(stamp(), deb.display().to_string())?;
    say(format!("package: {}", deb.display()));
    Ok(deb)
}

/// `hb-user generate` into a scratch directory, then into [`assets_dir`]:
/// changed files rewritten, files no longer generated removed (a page of a
/// subcommand that went must not be packaged), the others left untouched so
/// that their times say when they last changed.
fn generate(hb_user: &Path) -> Result<()> {
    let dir = assets_dir();
    let scratch = workspace_root().join("target/deb-assets.new");
    let _ = fs::remove_dir_all(&scratch);
    run(
        Command::new(hb_user)
            .args(["generate", "--out"])
            .arg(&scratch),
        "hb-user generate",
    )?;
    fs::create_dir_all(&dir)?;
    let names = |d: &Path| -> Result<Vec<std::ffi::OsString>> {
        fs::read_dir(d)
            .with_context(|| format!("reading {}", d.display()))?
            .map(|e| Ok(e?.file_name()))
            .collect()
    };
    let new = names(&scratch)?;
    for name in names(&dir)? {
        if !new.contains(&name) {
            fs::remove_file(dir.join(&name))?;
        }
    }
    for name in &new {
        let bytes = fs::read(scratch.join(name))?;
        let dest = dir.join(name);
        if fs::read(&dest).ok().as_deref() != Some(bytes.as_slice()) {
            fs::write(&dest, &bytes)?;
        }
    }
    fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// What the package is made of: a change to any makes a new one.
fn inputs(hb_user: &Path) -> Result<Vec<PathBuf>> {
    let root = workspace_root();
    let mut files = vec![
        hb_user.to_path_buf(),
        root.join("hb-user/Cargo.toml"),
        root.join("contrib/hb.toml"),
        root.join("contrib/hb.service"),
    ];
    for dir in [assets_dir(), root.join("contrib/deb")] {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            files.push(e?.path());
        }
    }
    for f in &files {
        if !f.is_file() {
            bail!("{} is missing: the package needs it", f.display());
        }
    }
    Ok(files)
}

/// The last package, if it is newer than every input.
fn reusable(inputs: &[PathBuf]) -> Option<PathBuf> {
    let deb = PathBuf::from(fs::read_to_string(stamp()).ok()?.trim());
    let built = modified(&deb)?;
    inputs
        .iter()
        .all(|f| modified(f).is_some_and(|t| t <= built))
        .then_some(deb)
}

fn modified(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// `cargo deb`, installed with `cargo install` when missing.
fn ensure_cargo_deb() -> Result<()> {
    let works = Command::new(crate::tools::cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    say("installing cargo-deb (cargo install cargo-deb --locked, once)");
    run(
        Command::new(crate::tools::cargo())
            .args(["install", "cargo-deb", "--locked"])
            .env_remove("CARGO_TARGET_DIR")
            .current_dir(std::env::temp_dir()),
        "cargo install cargo-deb",
    )
}
