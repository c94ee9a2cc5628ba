//! The Debian package (`cargo xtask deb`; `cargo xtask test` passes its path
//! as `HB_DEB`) as an operator meets it: `dpkg -i` puts each file where
//! Debian looks for it and enables nothing, the installed hb-user checks a
//! config in a namespace and fails a pair over, its man pages render, each
//! completion script loads in its shell, and `dpkg --purge` leaves nothing
//! of what the package listed. The tests change the machine (dpkg), one at a
//! time, and purge again whatever happens.

use hb_tests::cluster::{test_lan, BOUND, FAST};
use nix::sys::signal::Signal;
use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

const PACKAGE: &str = "hb-user";
const BIN: &str = "/usr/sbin/hb-user";
const STATE_DIR: &str = "/var/lib/hb";
const MAN8: &str = "/usr/share/man/man8/hb-user.8.gz";
const MAN5: &str = "/usr/share/man/man5/hb.toml.5.gz";
const BASH: &str = "/usr/share/bash-completion/completions/hb-user";
const ZSH: &str = "/usr/share/zsh/vendor-completions/_hb-user";
const FISH: &str = "/usr/share/fish/vendor_completions.d/hb-user.fish";
/// /lib/systemd/system/hb.service too: Debian 12's /lib is /usr/lib.
const UNIT: &str = "/usr/lib/systemd/system/hb.service";

/// The package under test.
fn deb() -> PathBuf {
    let deb = std::env::var_os("HB_DEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "HB_DEB is not set: `cargo xtask test` builds the package and sets it; \
             by hand, HB_DEB=<the path `cargo xtask deb` prints>"
            )
        });
    assert!(
        deb.is_file(),
        "HB_DEB={}: no such file (`cargo xtask deb` makes it)",
        deb.display()
    );
    deb
}

/// A program the test needs, or a failure naming its Debian package.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is missing: apt-get install {package} (cargo xtask test installs it)"
    );
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cmd` must exit 0: its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Whether dpkg has the package installed (its status `install ok installed`).
fn installed() -> bool {
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    text(&status.stdout).split_whitespace().last() == Some("installed")
}

/// The package installed, for as long as this lives: purged on drop, also
/// when the test fails (a guard that never panics itself).
struct Installed {
    /// What `dpkg -L` listed.
    listed: Vec<PathBuf>,
    /// The package's paths (and the state dir) that were there before it:
    /// shared directories, which a purge leaves.
    there_before: BTreeSet<PathBuf>,
    purged: bool,
}

impl Installed {
    fn new() -> Self {
        hb_tests::require_root("installing the package (dpkg -i)");
        let deb = deb();
        assert!(
            !installed(),
            "{PACKAGE} is installed on this machine already, and the test would remove it: \
             `dpkg --purge {PACKAGE}` first"
        );
        let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
        let mut there_before: BTreeSet<PathBuf> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(|p| PathBuf::from(p.trim_start_matches('.').trim_end_matches('/')))
            .filter(|p| exists(p))
            .collect();
        if exists(Path::new(STATE_DIR)) {
            there_before.insert(STATE_DIR.into());
        }
        let mut me = Installed {
            listed: Vec::new(),
            there_before,
            purged: false,
        };
        ok(Command::new("dpkg")
            .arg("-i")
            .arg(&deb)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        me.listed = ok(Command::new("dpkg").args(["-L", PACKAGE]))
            .lines()
            .map(PathBuf::from)
            .filter(|p| p != Path::new("/."))
            .collect();
        me
    }

    fn purge(&mut self) -> Output {
        self.purged = true;
        run(Command::new("dpkg").args(["--purge", PACKAGE]))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let out = self.purge();
            if !out.status.success() {
                eprintln!(
                    "dpkg --purge {PACKAGE}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
        }
    }
}

/// The tests install and purge one package: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn installs_where_debian_looks_enables_nothing_and_purges_clean() {
    let _one = serial();
    let mut pkg = Installed::new();
    for p in [BIN, MAN8, MAN5, BASH, ZSH, FISH, UNIT, "/etc/hb/hb.toml"] {
        assert!(
            pkg.listed.contains(&PathBuf::from(p)),
            "dpkg -L does not list {p}: {:?}",
            pkg.listed
        );
        assert!(Path::new(p).is_file(), "{p} is not installed");
    }
    assert!(Path::new("/lib/systemd/system/hb.service").is_file());
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(
        conffiles.contains("/etc/hb/hb.toml"),
        "hb.toml is not a conffile: {conffiles}"
    );
    let mode = std::fs::metadata(STATE_DIR)
        .unwrap_or_else(|e| panic!("{STATE_DIR}: {e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o700, "{STATE_DIR}'s mode");
    // Not enabled: the node's settings and key come first.
    assert!(!exists(Path::new(
        "/etc/systemd/system/multi-user.target.wants/hb.service"
    )));
    let version = ok(Command::new(BIN).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("hb-user {}", env!("CARGO_PKG_VERSION")),
        "{BIN} --version"
    );
    // The installed hb.toml is every default commented out: what it lacks
    // are the settings without one, which `check` names before looking at
    // the host.
    let out = run(Command::new(BIN).args(["check", "--config", "/etc/hb/hb.toml"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--iface") && err.contains("required"),
        "check of the installed hb.toml: {err}"
    );

    let out = pkg.purge();
    assert!(
        out.status.success(),
        "dpkg --purge: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let state_dir = PathBuf::from(STATE_DIR);
    let left: Vec<&PathBuf> = (pkg.listed.iter())
        .chain([&state_dir])
        .filter(|p| !pkg.there_before.contains(*p) && exists(p))
        .collect();
    assert!(left.is_empty(), "left after the purge: {left:?}");
    assert!(!installed(), "{PACKAGE} is still installed");
}

#[test]
fn the_installed_binary_checks_a_config_and_fails_over() {
    let _one = serial();
    let _pkg = Installed::new();

    // `hb-user check` as an operator runs it on a node: its interface, its
    // key, a file naming them.
    let mut lab = hb_tests::netns::Lab::new("pkc").expect("a lab");
    let n1 = lab.netns("n1").expect("a namespace");
    let n2 = lab.netns("n2").expect("a namespace");
    lab.veth(&n1, "eth0", "10.9.0.1/24", &n2, "eth0", "10.9.0.2/24")
        .expect("a link");
    let key = lab.scratch.join("hb.key");
    ok(Command::new(BIN).args(["keygen", "--out"]).arg(&key));
    let file = lab.scratch.join("hb.toml");
    std::fs::write(
        &file,
        format!(
            "iface = [\"eth0\"]\nnode_id = 1\npeer = [\"2@10.9.0.2\"]\n\
             vip = [\"10.9.0.100/24\"]\nkey_file = \"{}\"\nstate_dir = \"{}\"\n\
             pin_root = \"{}\"\n",
            key.display(),
            lab.scratch.join("state").display(),
            lab.scratch.join("pins").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("--config").arg(&file);
    hb_tests::netns::enter_on_exec(&mut cmd, &n1).unwrap();
    let out = ok(&mut cmd);
    assert!(out.contains("the settings are valid"), "{out}");
    drop(lab);

    let (_g, mut c) = test_lan("pkg", &[100, 90], FAST, 1);
    c.use_binary(BIN);
    c.start_all().unwrap();
    c.expect_settled(1, BOUND);
    let pid = c.pid(1).expect("node 1 runs");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        Some(PathBuf::from(BIN)),
        "node 1 runs the installed binary"
    );
    // A crash: node 1's kernel keeps its VIP on the interface, fenced by
    // the lease; the client is answered by node 2.
    c.signal(1, Signal::SIGKILL).unwrap();
    let n2 = c.node(2).mac;
    assert!(
        c.wait_for(BOUND, |c| c.holders().contains(&2)
            && c.client_reach_vip() == Some(n2)),
        "the client is not answered by node 2, holders {:?}\n{}",
        c.holders(),
        c.logs()
    );
}

#[test]
fn the_man_pages_render() {
    let _one = serial();
    require("man", "man-db");
    let _pkg = Installed::new();
    for (section, name, page, words) in [
        (
            "8",
            "hb-user",
            MAN8,
            &[
                "hb-user - hb",
                "--dead-after",
                "hb-user-check(8)",
                "hb.toml(5)",
            ][..],
        ),
        (
            "5",
            "hb.toml",
            MAN5,
            &["hb.toml - the settings", "dead_after", "[group.NAME]"][..],
        ),
    ] {
        // man finds it by name: it is where man looks.
        let found = ok(Command::new("man").args(["-w", section, name]));
        assert_eq!(found.trim(), page, "man -w {section} {name}");
        let out = run(Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", ""));
        let (shown, err) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "man -l {page}: {err}");
        assert!(err.trim().is_empty(), "man -l {page} warns: {err}");
        assert!(shown.contains("NAME"), "{page}: no NAME\n{shown}");
        for w in words {
            assert!(shown.contains(w), "{page} lacks {w:?}\n{shown}");
        }
    }
    // Each subcommand the main page lists has its page.
    for sub in ["run", "check", "reload", "status", "keygen"] {
        let page = format!("/usr/share/man/man8/hb-user-{sub}.8.gz");
        let out = run(Command::new("man").arg("-l").arg(&page));
        assert!(
            out.status.success() && text(&out.stdout).contains(&format!("hb-user-{sub}")),
            "{page}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn each_completion_script_loads_in_its_shell() {
    let _one = serial();
    require("bash", "bash");
    require("zsh", "zsh");
    require("fish", "fish");
    let _pkg = Installed::new();
    // The shells' own files (zsh's dump, fish's variables) out of root's home.
    let home = std::env::temp_dir().join(format!("hb-package-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let shell = |program: &str, script: &str| -> String {
        ok(Command::new(program)
            .arg("-c")
            .arg(script)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data")))
    };
    let bash = shell("bash", &format!("source {BASH} && complete -p hb-user"));
    assert!(bash.contains("hb-user"), "bash: {bash}");
    // What a Tab after `hb-user check --dead` offers: the subcommand's flag.
    let function = bash
        .split_whitespace()
        .skip_while(|w| *w != "-F")
        .nth(1)
        .unwrap_or_else(|| panic!("bash: no completion function: {bash}"));
    let bash = shell(
        "bash",
        &format!(
            "source {BASH} && COMP_WORDS=(hb-user check --dead) && COMP_CWORD=2 && \
             {function} hb-user --dead check && echo \"${{COMPREPLY[@]}}\""
        ),
    );
    assert_eq!(
        bash.trim(),
        "--dead-after",
        "bash completes hb-user check --dead"
    );
    // zsh: the file sourced registers its function; and compinit finds it
    // on its own in the vendor directory Debian's zsh searches.
    let zsh = shell(
        "zsh",
        &format!(
            "autoload -U compinit && compinit -u -D && source {ZSH} && print -r -- ${{_comps[hb-user]}}"
        ),
    );
    assert_eq!(zsh.trim(), "_hb-user", "zsh, sourced");
    let zsh = shell(
        "zsh",
        "autoload -U compinit && compinit -u -D && print -r -- ${_comps[hb-user]}",
    );
    assert_eq!(zsh.trim(), "_hb-user", "zsh, from its fpath");
    let fish = shell("fish", &format!("source {FISH}; complete -c hb-user"));
    assert!(!fish.trim().is_empty(), "fish: no completion for hb-user");
    // fish loads it by itself from vendor_completions.d.
    let fish = shell("fish", "complete -C 'hb-user '");
    for sub in ["check", "keygen", "status"] {
        assert!(fish.contains(sub), "fish completes no {sub}: {fish}");
    }
    let _ = std::fs::remove_dir_all(&home);
}
