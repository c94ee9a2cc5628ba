//! Creating directories while remembering which ones were new, so that a failed
//! start removes exactly those and nothing a previous run or the admin made.

use std::{
    fs::DirBuilder,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

/// Creates `path` and its missing parents with `mode` (less the umask);
/// returns the directories it created, outermost first.
pub fn create_dirs(path: &Path, mode: u32) -> io::Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .map(Path::to_path_buf)
        .collect();
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    Ok(missing.into_iter().rev().collect())
}

/// Removes directories [`create_dirs`] made, innermost first, each only when
/// empty: whatever someone else put there since keeps its directory.
pub fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_directories_are_reported_and_removed() {
        let base = std::env::temp_dir().join(format!("hb-created-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("old")).unwrap();
        let made = create_dirs(&base.join("old/a/b"), 0o700).unwrap();
        assert_eq!(made, [base.join("old/a"), base.join("old/a/b")]);
        assert!(create_dirs(&base.join("old/a/b"), 0o700)
            .unwrap()
            .is_empty());
        // Someone else's file keeps its directory.
        std::fs::write(base.join("old/a/theirs"), b"x").unwrap();
        remove_dirs(&made);
        assert!(!base.join("old/a/b").exists());
        assert!(base.join("old/a/theirs").exists());
        std::fs::remove_file(base.join("old/a/theirs")).unwrap();
        remove_dirs(&made);
        assert!(!base.join("old/a").exists());
        assert!(base.join("old").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
