//! The guest's initramfs: a newc cpio archive (the format the kernel unpacks)
//! holding `/init`, `/hb/plan`, the test binaries and the boot modules.

use anyhow::{Context, Result};
use std::{
    fs::File,
    io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// One file of the archive: where it goes and where it comes from.
pub struct Entry {
    pub dest: String,
    pub mode: u32,
    pub source: Source,
}

pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
    Dir,
}

impl Entry {
    pub fn exe(dest: impl Into<String>, source: &Path) -> Self {
        Self {
            dest: dest.into(),
            mode: 0o100755,
            source: Source::File(source.into()),
        }
    }
    pub fn file(dest: impl Into<String>, source: &Path) -> Self {
        Self {
            dest: dest.into(),
            mode: 0o100644,
            source: Source::File(source.into()),
        }
    }
    pub fn bytes(dest: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            dest: dest.into(),
            mode: 0o100644,
            source: Source::Bytes(bytes),
        }
    }
    pub fn dir(dest: impl Into<String>) -> Self {
        Self {
            dest: dest.into(),
            mode: 0o040755,
            source: Source::Dir,
        }
    }
}

/// Writes `entries` (parents before children) to `out`.
pub fn write(out: &Path, entries: Vec<Entry>) -> Result<()> {
    let mut inputs = Vec::with_capacity(entries.len());
    for e in entries {
        let input = match e.source {
            Source::File(p) => {
                Input::File(File::open(&p).with_context(|| format!("opening {}", p.display()))?)
            }
            Source::Bytes(b) => Input::Mem(Cursor::new(b)),
            Source::Dir => Input::Mem(Cursor::new(Vec::new())),
        };
        let nlink = if e.mode & 0o040000 != 0 { 2 } else { 1 };
        inputs.push((
            cpio::NewcBuilder::new(&e.dest).mode(e.mode).nlink(nlink),
            input,
        ));
    }
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    cpio::write_cpio(inputs.into_iter(), BufWriter::new(f))
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", out.display()))
}

/// cpio's writer reads each input's length by seeking to its end.
enum Input {
    File(File),
    Mem(Cursor<Vec<u8>>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Mem(c) => c.read(buf),
        }
    }
}

impl Seek for Input {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Input::File(f) => f.seek(pos),
            Input::Mem(c) => c.seek(pos),
        }
    }
}
