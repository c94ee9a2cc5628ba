//! The controller's state directory: a lock so two controllers never drive
//! the same node, and the status file. Nothing in it is needed for safety:
//! sessions (wire v2) replaced the persisted epoch, so a wiped or restored
//! state directory is harmless.

use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::created;

use anyhow::{bail, Context};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

const LOCK: &str = "lock";

/// An open state directory, exclusively locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    /// Held, not used: dropping it releases the lock.
    _lock: Flock<File>,
    /// What this process made, for [`StateDir::discard`]: directories
    /// (outermost first), the lock file.
    made_dirs: Vec<PathBuf>,
    made_lock: bool,
}

impl StateDir {
    /// Opens (creating it 0700 if missing) and locks `dir`. Fails at once if
    /// another process holds the lock, naming its pid.
    pub fn open(dir: &Path) -> anyhow::Result<StateDir> {
        let made_dirs = created::create_dirs(dir, 0o700)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        let lock_path = dir.join(LOCK);
        // No truncate here: until we hold the lock, the pid in it is the holder's.
        let open = |new: bool| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(new)
                .mode(0o600)
                .open(&lock_path)
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
        if name.is_empty() || name == "." || name == ".." || name == LOCK || name.contains('/') {
            bail!("{name:?} is not a file name usable in the state dir");
        }
        let path = self.dir.join(name);
        // We hold the lock, so no other writer can share this temp name.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(contents)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
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

    #[test]
    fn opens_private_and_reopens() {
        let t = TempDir::new("open");
        let dir = t.0.join("state");
        drop(StateDir::open(&dir).unwrap());
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.path(), dir);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn second_open_fails_while_first_alive() {
        let t = TempDir::new("lock");
        let first = StateDir::open(&t.0).unwrap();
        let e = StateDir::open(&t.0).unwrap_err().to_string();
        let want = format!(
            "another hb-user is using state dir {} (pid {})",
            t.0.display(),
            std::process::id()
        );
        assert_eq!(e, want);
        drop(first);
        StateDir::open(&t.0).unwrap();
    }

    #[test]
    fn discard_removes_what_open_made_and_nothing_else() {
        let t = TempDir::new("discard");
        let dir = t.0.join("a/state");
        let s = StateDir::open(&dir).unwrap();
        s.discard();
        assert!(!t.0.exists(), "{} left", t.0.display());

        // A state dir a previous run left: its files stay.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lock"), "1\n").unwrap();
        std::fs::write(dir.join("status.json"), "{}").unwrap();
        let s = StateDir::open(&dir).unwrap();
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
        let s = StateDir::open(&t.0).unwrap();
        s.write_file("status.json", b"{\"a\":1}").unwrap();
        s.write_file("status.json", b"{}").unwrap();
        assert_eq!(std::fs::read(t.0.join("status.json")).unwrap(), b"{}");
        for bad in ["", "..", "a/b", "lock"] {
            assert!(s.write_file(bad, b"x").is_err(), "{bad:?}");
        }
    }
}
