//! The cluster's shared 128-bit MAC key, kept in a file as 32 hex digits.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use anyhow::Context;
use hb_common::maps::Key;

use crate::config::ConfigError;

const FIELD: &str = "--key-file";

/// Reads a 128-bit key: the file holds 32 hex digits (surrounding whitespace
/// allowed). Refuses a file that is not root's or that its group or others
/// may use: whoever can read the key can forge heartbeats, whoever can write
/// it can cut a node off its cluster.
pub fn read(path: &Path) -> Result<Key, ConfigError> {
    read_owned_by(path, 0)
}

/// [`read`], with the key file's required owner.
fn read_owned_by(path: &Path, owner: u32) -> Result<Key, ConfigError> {
    let err = |msg: String| ConfigError::new(FIELD, msg);
    let p = path.display();
    // The checks and the read on one open file: what was checked is what is read.
    let file = File::open(path).map_err(|e| err(format!("cannot read {p}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat {p}: {e}")))?;
    let (uid, mode) = (meta.uid(), meta.mode() & 0o777);
    let what = match (uid != owner, mode & 0o077 != 0) {
        (false, false) => None,
        (true, false) => Some(format!("is owned by uid {uid}")),
        (false, true) => Some(format!("has mode {mode:04o}")),
        (true, true) => Some(format!("is owned by uid {uid} and has mode {mode:04o}")),
    };
    if let Some(what) = what {
        return Err(err(format!(
            "{p} {what}: a key file must be root's alone (whoever reads the key can forge heartbeats); run: chown root:root {p} && chmod 600 {p}"
        )));
    }
    let mut text = Vec::new();
    // Far more than a key with whitespace: no file is read without bound.
    file.take(4096)
        .read_to_end(&mut text)
        .map_err(|e| err(format!("cannot read {p}: {e}")))?;
    // The content is never echoed: a near-miss may still be the key.
    parse(&text).ok_or_else(|| {
        err(format!(
            "{p} must hold exactly 32 hex digits (generate one with `hb-user keygen`)"
        ))
    })
}

fn parse(text: &[u8]) -> Option<Key> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if text.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (b, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        // from_str_radix accepts a leading '+', which is not a hex digit.
        if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(Key::from_bytes(bytes))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new random key as 32 hex digits + "\n" to `out` with mode 0600,
/// refusing to overwrite an existing file; `None` prints it to stdout. The
/// file is the running user's: root's passes [`read`] as it is.
pub fn generate(out: Option<&Path>) -> anyhow::Result<()> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    let line = format!("{}\n", to_hex(&bytes));
    let Some(path) = out else {
        std::io::stdout()
            .write_all(line.as_bytes())
            .context("cannot write the key to stdout")?;
        return Ok(());
    };
    // create_new: never overwrite (a replaced key splits the cluster); mode at
    // creation: no window in which the key is readable by others. The umask can
    // only narrow 0600 further.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists; not overwriting a key (remove it first to replace it on every node)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("cannot create {}", path.display()))
            }
        })?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::fs::PermissionsExt, path::PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir()
                .join(format!("hb-keyfile-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&p).expect("create temp dir");
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Our own uid: the owner of the files a test writes (root, under `cargo xtask test`).
    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// What the refusal of a key file at `path` must say to do.
    fn fix(path: &Path) -> String {
        let p = path.display();
        format!("run: chown root:root {p} && chmod 600 {p}")
    }

    #[test]
    fn round_trip_and_mode() {
        let dir = TempDir::new("rt");
        let path = dir.0.join("hb.key");
        generate(Some(&path)).unwrap();
        // Mode 0600, owned by whoever ran keygen: root's passes `read` as is.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), me());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 33);
        assert!(text.ends_with('\n'));
        let key = read_owned_by(&path, me()).unwrap();
        assert_eq!(Some(key), parse(text.as_bytes()));
        assert_ne!(key, Key::default());
    }

    #[test]
    fn reads_known_key() {
        let dir = TempDir::new("known");
        let path = dir.0.join("hb.key");
        write_mode(&path, "  000102030405060708090a0b0c0d0E0F\n\n", 0o600);
        let key = read_owned_by(&path, me()).unwrap();
        assert_eq!(
            key,
            Key::from_bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        );
    }

    #[test]
    fn any_group_or_other_bit_is_refused() {
        let dir = TempDir::new("wr");
        let path = dir.0.join("hb.key");
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601, 0o660] {
            write_mode(&path, "000102030405060708090a0b0c0d0e0f\n", mode);
            let e = read_owned_by(&path, me()).unwrap_err();
            assert_eq!(e.field, "--key-file");
            assert!(e.message.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.message.contains(&fix(&path)), "{e}");
        }
        write_mode(&path, "000102030405060708090a0b0c0d0e0f\n", 0o400);
        read_owned_by(&path, me()).unwrap();
    }

    #[test]
    fn a_key_file_root_does_not_own_is_refused() {
        let dir = TempDir::new("owner");
        let path = dir.0.join("hb.key");
        write_mode(&path, "000102030405060708090a0b0c0d0e0f\n", 0o600);
        // As root, hand it to nobody; otherwise it is already not root's.
        if me() == 0 {
            nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        }
        let owner = std::fs::metadata(&path).unwrap().uid();
        assert_ne!(owner, 0);
        let e = read(&path).unwrap_err();
        assert_eq!(e.field, "--key-file");
        assert!(e.message.contains(&format!("owned by uid {owner}")), "{e}");
        assert!(e.message.contains(&fix(&path)), "{e}");
        assert!(!e.message.contains("mode"), "{e}");
    }

    #[test]
    fn bad_content_refused() {
        let dir = TempDir::new("bad");
        let path = dir.0.join("hb.key");
        for bad in [
            "",
            "000102030405060708090a0b0c0d0e0",
            "000102030405060708090a0b0c0d0e0f00",
            "000102030405060708090a0b0c0d0e0g",
            "+00102030405060708090a0b0c0d0e0f",
            "00010203 4050607 8090a0b0c0d0e0f",
            "\u{e9}00102030405060708090a0b0c0d0e0",
        ] {
            write_mode(&path, bad, 0o600);
            let e = read_owned_by(&path, me()).unwrap_err();
            assert_eq!(e.field, "--key-file");
            assert!(e.message.contains("32 hex digits"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn missing_file_names_os_error() {
        let dir = TempDir::new("missing");
        let e = read(&dir.0.join("nope")).unwrap_err();
        assert_eq!(e.field, "--key-file");
        assert!(e.message.contains("No such file"), "{e}");
    }

    #[test]
    fn no_overwrite() {
        let dir = TempDir::new("ow");
        let path = dir.0.join("hb.key");
        write_mode(&path, "keep me", 0o600);
        let e = generate(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
