//! The controller's state directory: a lock so two controllers never drive
//! the same node, and the status file. Nothing in it is needed for safety:
//! sessions (wire v2) replaced the persisted epoch, so a wiped or restored
//! state directory is harmless.

use std::{
    fs::File,
    io::{self, ErrorKind, Read, Seek, SeekFrom, Write},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use crate::{config::ConfigError, created};

use anyhow::{bail, Context};
use nix::{
    errno::Errno,
    fcntl::{openat, renameat, Flock, FlockArg, OFlag},
    sys::stat::{fstat, Mode},
};

const LOCK: &str = "lock";
const FIELD: &str = "--state-dir";

/// An open state directory, exclusively locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// The directory as checked at open: its files are opened relative to
    /// it, so a path swapped for another since cannot redirect them.
    fd: OwnedFd,
    /// Held, not used: dropping it releases the lock.
    _lock: Flock<File>,
    /// What this process made, for [`StateDir::discard`]: directories
    /// (outermost first), the lock file.
    made_dirs: Vec<PathBuf>,
    made_lock: bool,
}

/// Flags for every file opened in the state dir: a symlink planted there is
/// refused (ELOOP), not followed to overwrite what it points to.
fn file_flags() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl StateDir {
    /// Opens (creating it 0700 if missing) and locks `dir`. Fails at once if
    /// another process holds the lock, naming its pid. A directory that is a
    /// symlink, is not root's, or that group or others may write is refused
    /// with a [`ConfigError`] naming `--state-dir`: whoever can change it can
    /// plant files that root then writes through.
    pub fn open(dir: &Path) -> anyhow::Result<StateDir> {
        Self::open_owned_by(dir, 0)
    }

    /// What [`StateDir::open`] would refuse of `dir`, without creating or
    /// locking anything (`hb-user check`): a missing directory is fine, it is
    /// made 0700 at the start.
    pub fn check(dir: &Path) -> anyhow::Result<()> {
        if std::fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        checked_dir(dir, 0).map(drop)
    }

    /// [`StateDir::open`], with the directory's required owner.
    fn open_owned_by(dir: &Path, owner: u32) -> anyhow::Result<StateDir> {
        let made_dirs = created::create_dirs(dir, 0o700)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        let fd = match checked_dir(dir, owner) {
            Ok(fd) => fd,
            Err(e) => {
                created::remove_dirs(&made_dirs);
                return Err(e);
            }
        };
        let lock_path = dir.join(LOCK);
        // No truncate here: until we hold the lock, the pid in it is the holder's.
        let open = |new: bool| -> io::Result<File> {
            let mut flags = OFlag::O_RDWR | file_flags();
            if new {
                flags |= OFlag::O_CREAT | OFlag::O_EXCL;
            }
            Ok(openat(&fd, LOCK, flags, Mode::from_bits_truncate(0o600))?.into())
        };
        let (file, made_lock) = match open(true) {
            Ok(f) => (Ok(f), true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => (open(false), false),
            Err(e) => (Err(e), false),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                created::remove_dirs(&made_dirs);
                return Err(e).with_context(|| format!("cannot open {}", lock_path.display()));
            }
        };
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => "unknown",
                    p => p,
                };
                bail!(
                    "another hb-user is using state dir {} (pid {pid})",
                    dir.display()
                );
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        };
        // For the message above in the next process that tries.
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(lock, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", lock_path.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            fd,
            _lock: lock,
            made_dirs,
            made_lock,
        })
    }

    /// After a failed start: removes what this process made (the lock file
    /// when it is new, then the directories it created, each only when empty).
    pub fn discard(self) {
        if self.made_lock {
            let _ = std::fs::remove_file(self.dir.join(LOCK));
        }
        let made_dirs = self.made_dirs.clone();
        drop(self);
        created::remove_dirs(&made_dirs);
    }

    /// Atomically replaces `<dir>/<name>` with `contents`: readers see the old
    /// or the new file, never a partial one. Not synced to disk: for files that
    /// are rewritten every second and worthless after a reboot (status.json), an
    /// fsync would only stall the controller's loop.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> anyhow::Result<()> {
        self.write(name, contents, false)
    }

    /// The same, on disk before it returns (file and directory synced): for
    /// what must survive a power cut, an operator's standby or resume.
    pub fn write_file_synced(&self, name: &str, contents: &[u8]) -> anyhow::Result<()> {
        self.write(name, contents, true)
    }

    fn write(&self, name: &str, contents: &[u8], sync: bool) -> anyhow::Result<()> {
        if name.is_empty() || name == "." || name == ".." || name == LOCK || name.contains('/') {
            bail!("{name:?} is not a file name usable in the state dir");
        }
        let path = self.dir.join(name);
        // We hold the lock, so no other writer can share this temp name.
        let tmp = format!(".{name}.tmp");
        let write = || -> io::Result<()> {
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | file_flags();
            let mut f = File::from(openat(
                &self.fd,
                tmp.as_str(),
                flags,
                Mode::from_bits_truncate(0o644),
            )?);
            f.write_all(contents)?;
            if sync {
                f.sync_all()?;
            }
            // rename replaces a symlink at `name` itself, never its target.
            renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            if sync {
                nix::unistd::fsync(&self.fd)?;
            }
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Opens `dir` itself (not what a symlink there points to) and checks that
/// only `owner` can change what is in it.
fn checked_dir(dir: &Path, owner: u32) -> anyhow::Result<OwnedFd> {
    let p = dir.display();
    let refuse = |why: String| anyhow::Error::new(ConfigError::new(FIELD, format!("{p} {why}")));
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        // A trailing symlink fails with ELOOP, or with ENOTDIR under O_DIRECTORY.
        Err(Errno::ELOOP | Errno::ENOTDIR) if dir.is_symlink() => {
            return Err(refuse(
                "is a symlink: give the directory itself, so that no one who can change the link redirects root's writes".into(),
            ))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open state dir {p}"))),
    };
    let st = fstat(&fd).with_context(|| format!("cannot stat state dir {p}"))?;
    if st.st_uid != owner {
        return Err(refuse(format!(
            "is owned by uid {}, not root: run chown root:root {p}",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "has mode {mode:04o}: group or others may write it; run chmod go-w {p}"
        )));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh path under the system temp dir (not created), removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            TempDir(
                std::env::temp_dir()
                    .join(format!("hb-statedir-{tag}-{}-{nanos}", std::process::id())),
            )
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Our own uid: the owner of the directories a test makes (root, under
    /// `cargo xtask test`).
    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// The refusal `StateDir::open` made of `dir`, as the start reports it.
    fn refusal(dir: &Path, owner: u32) -> ConfigError {
        let e = StateDir::open_owned_by(dir, owner).unwrap_err();
        match e.downcast::<ConfigError>() {
            Ok(c) => {
                assert_eq!(c.field, "--state-dir");
                assert!(c.message.starts_with(&dir.display().to_string()), "{c}");
                c
            }
            Err(e) => panic!("not a refused setting: {e:#}"),
        }
    }

    #[test]
    fn opens_private_and_reopens() {
        let t = TempDir::new("open");
        let dir = t.0.join("state");
        drop(StateDir::open_owned_by(&dir, me()).unwrap());
        let s = StateDir::open_owned_by(&dir, me()).unwrap();
        assert_eq!(s.path(), dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn second_open_fails_while_first_alive() {
        let t = TempDir::new("lock");
        let first = StateDir::open_owned_by(&t.0, me()).unwrap();
        let e = StateDir::open_owned_by(&t.0, me()).unwrap_err().to_string();
        let want = format!(
            "another hb-user is using state dir {} (pid {})",
            t.0.display(),
            std::process::id()
        );
        assert_eq!(e, want);
        drop(first);
        StateDir::open_owned_by(&t.0, me()).unwrap();
    }

    #[test]
    fn discard_removes_what_open_made_and_nothing_else() {
        let t = TempDir::new("discard");
        let dir = t.0.join("a/state");
        let s = StateDir::open_owned_by(&dir, me()).unwrap();
        s.discard();
        assert!(!t.0.exists(), "{} left", t.0.display());

        // A state dir a previous run left: its files stay.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lock"), "1\n").unwrap();
        std::fs::write(dir.join("status.json"), "{}").unwrap();
        let s = StateDir::open_owned_by(&dir, me()).unwrap();
        s.discard();
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["lock", "status.json"]);
    }

    #[test]
    fn write_file_replaces() {
        let t = TempDir::new("write");
        let s = StateDir::open_owned_by(&t.0, me()).unwrap();
        s.write_file("status.json", b"{\"a\":1}").unwrap();
        s.write_file("status.json", b"{}").unwrap();
        assert_eq!(std::fs::read(t.0.join("status.json")).unwrap(), b"{}");
        for bad in ["", "..", "a/b", "lock"] {
            assert!(s.write_file(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let t = TempDir::new("link");
        let real = t.0.join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.0.join("state");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = refusal(&link, me());
        assert!(e.message.contains("is a symlink"), "{e}");
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
        // The directory itself is fine.
        StateDir::open_owned_by(&real, me()).unwrap();
    }

    #[test]
    fn a_dir_root_does_not_own_is_refused() {
        let t = TempDir::new("owner");
        std::fs::create_dir_all(&t.0).unwrap();
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        // As root, hand it to nobody; otherwise it is already not root's.
        if me() == 0 {
            nix::unistd::chown(&t.0, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        }
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&t.0).unwrap());
        let e = refusal(&t.0, 0);
        assert!(e.message.contains(&format!("owned by uid {owner}")), "{e}");
        assert!(
            e.message
                .contains(&format!("chown root:root {}", t.0.display())),
            "{e}"
        );
        assert!(!t.0.join("lock").exists(), "a lock made in a refused dir");
    }

    #[test]
    fn a_dir_group_or_others_may_write_is_refused() {
        let t = TempDir::new("mode");
        std::fs::create_dir_all(&t.0).unwrap();
        for mode in [0o770, 0o702, 0o1777, 0o720] {
            std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = refusal(&t.0, me());
            assert!(e.message.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(
                e.message.contains(&format!("chmod go-w {}", t.0.display())),
                "{e}"
            );
        }
        // Readable by others is no risk to root's writes.
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open_owned_by(&t.0, me()).unwrap();
    }

    #[test]
    fn symlinks_planted_in_the_dir_are_not_followed() {
        let t = TempDir::new("planted");
        let dir = t.0.join("state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let victim = t.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // As the lock file: refused, not opened through.
        std::os::unix::fs::symlink(&victim, dir.join("lock")).unwrap();
        let e = StateDir::open_owned_by(&dir, me()).unwrap_err();
        assert!(format!("{e:#}").contains("symbolic links"), "{e:#}");
        std::fs::remove_file(dir.join("lock")).unwrap();
        // As the status file's temporary: the write fails, the victim stays.
        let s = StateDir::open_owned_by(&dir, me()).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".status.json.tmp")).unwrap();
        assert!(s.write_file("status.json", b"{}").is_err());
        // As the status file itself: replaced, not written through.
        std::fs::remove_file(dir.join(".status.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("status.json")).unwrap();
        s.write_file("status.json", b"{}").unwrap();
        assert!(!dir.join("status.json").is_symlink());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
