//! Debian's kernel packages, fetched with `apt-get download` (never installed on
//! the host), unpacked into `~/.cache/hb/vm/<package>/` with a `depmod` run so
//! that the guest's modprobe can load its own modules.

use crate::tools::{self, say};
use anyhow::{bail, Context, Result};
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::Command,
};

/// A kernel series the tests are proved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Debian 12's stock kernel: `linux-image-6.1.0-<abi>-cloud-amd64`.
    V6_1,
    /// Debian 12's newer kernel (also Debian 13's series):
    /// `linux-image-6.12.<n>+deb12-cloud-amd64`.
    V6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    pub fn label(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    /// The sort key of `package` when it is this series' cloud kernel image.
    fn rank(self, package: &str) -> Option<u32> {
        let (prefix, suffix) = match self {
            Series::V6_1 => ("linux-image-6.1.0-", "-cloud-amd64"),
            Series::V6_12 => ("linux-image-6.12.", "+deb12-cloud-amd64"),
        };
        package
            .strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse()
            .ok()
    }
}

/// An unpacked kernel package.
pub struct Kernel {
    pub series: Series,
    pub package: String,
    /// `uname -r` of the guest.
    pub release: String,
    /// The unpacked package's `lib/modules/<release>`.
    pub modules: PathBuf,
    pub vmlinuz: PathBuf,
}

fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/hb/vm"))
}

/// The newest package of `series` that apt knows; refreshes apt's lists once
/// when it knows none.
fn newest_package(series: Series) -> Result<String> {
    for attempt in 0..2 {
        let names = tools::output(
            Command::new("apt-cache").args(["pkgnames", "linux-image-6."]),
            "apt-cache pkgnames",
        )?;
        if let Some(p) = names
            .lines()
            .filter_map(|p| series.rank(p).map(|r| (r, p)))
            .max()
            .map(|(_, p)| p.to_string())
        {
            return Ok(p);
        }
        if attempt == 0 {
            say("apt knows no kernel package of that series: apt-get update");
            tools::run(
                Command::new("apt-get").args(["update", "-qq"]),
                "apt-get update",
            )?;
        }
    }
    bail!(
        "no Debian kernel package of series {} in apt's sources (wanted {})",
        series.label(),
        match series {
            Series::V6_1 => "linux-image-6.1.0-*-cloud-amd64",
            Series::V6_12 => "linux-image-6.12.*+deb12-cloud-amd64",
        }
    )
}

/// Downloads and unpacks the newest kernel of `series`, or reuses the cached one.
pub fn prepare(series: Series) -> Result<Kernel> {
    let package = newest_package(series)?;
    let release = package.trim_start_matches("linux-image-").to_string();
    let cache = cache_dir()?;
    let root = cache.join(&package);
    let kernel = Kernel {
        series,
        modules: root.join("lib/modules").join(&release),
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        package,
        release,
    };
    if kernel.vmlinuz.is_file() && kernel.modules.join("modules.dep").is_file() {
        return Ok(kernel);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    say(format!("downloading {}", kernel.package));
    tools::run(
        Command::new("apt-get")
            // The download goes to our cache, which apt's _apt user may not enter.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(&kernel.package)
            .current_dir(&debs),
        "apt-get download",
    )?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}_", kernel.package)))
        })
        .with_context(|| format!("apt-get download left no .deb of {}", kernel.package))?;
    let tmp = cache.join(format!("{}.partial", kernel.package));
    let _ = std::fs::remove_dir_all(&tmp);
    tools::run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
        "dpkg-deb -x",
    )?;
    // The package ships no modules.dep (its postinst runs depmod).
    tools::run(
        Command::new("depmod")
            .arg("-b")
            .arg(&tmp)
            .arg(&kernel.release),
        "depmod",
    )?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root)?;
    let _ = std::fs::remove_file(&deb);
    Ok(kernel)
}

/// A module's name from its file: `fs/fuse/virtiofs.ko.xz` -> `virtiofs`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl Kernel {
    /// The module files (relative to `self.modules`) that `wanted` needs, in load
    /// order, dependencies first. Built-in modules need nothing; a module the
    /// kernel has neither built in nor as a file is an error.
    pub fn module_closure(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let dep = std::fs::read_to_string(self.modules.join("modules.dep"))
            .context("reading modules.dep")?;
        let deps: HashMap<String, (String, Vec<String>)> = dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(m, d)| {
                (
                    module_name(m),
                    (
                        m.to_string(),
                        d.split_whitespace().map(String::from).collect(),
                    ),
                )
            })
            .collect();
        let builtin: HashSet<String> =
            std::fs::read_to_string(self.modules.join("modules.builtin"))
                .unwrap_or_default()
                .lines()
                .map(module_name)
                .collect();
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        fn visit(
            name: &str,
            deps: &HashMap<String, (String, Vec<String>)>,
            seen: &mut HashSet<String>,
            order: &mut Vec<String>,
        ) {
            if !seen.insert(name.to_string()) {
                return;
            }
            if let Some((path, ds)) = deps.get(name) {
                for d in ds {
                    visit(&module_name(d), deps, seen, order);
                }
                order.push(path.clone());
            }
        }
        for w in wanted {
            let w = w.replace('-', "_");
            if builtin.contains(&w) {
                continue;
            }
            if !deps.contains_key(&w) {
                bail!("kernel {} has no module {w}, built in or not", self.release);
            }
            visit(&w, &deps, &mut seen, &mut order);
        }
        Ok(order)
    }
}
