//! The first value of a one-entry BPF array map, as the sender thread writes it
//! with every heartbeat (the holder lease, the record of the last heartbeat
//! sent), and the values of the `seen` array, which it reads on every wake-up. The maps are `BPF_F_MMAPABLE` (`hb_common::maps::MAP_MMAPABLE`), so the
//! value is mapped into this process and a write is a plain store, not a
//! `bpf(BPF_MAP_UPDATE_ELEM)` syscall; a map that cannot be mapped (a kernel
//! before 5.5) is written through the syscall instead.

use anyhow::{Context, Result};
use aya::{
    maps::{Array, IterableMap, MapData},
    Pod,
};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::{num::NonZeroUsize, os::fd::AsFd, ptr::NonNull};

/// Where a value lives: mapped memory, or behind the map syscall.
pub enum MapCell<T: Pod> {
    Mapped(Mapping<T>),
    Syscall(Array<MapData, T>),
}

impl<T: Pod> MapCell<T> {
    /// Maps `map`'s value 0 when the kernel lets us, else keeps the handle.
    pub fn new(map: Array<MapData, T>) -> Self {
        match Mapping::new(&map, 1) {
            Ok(m) => Self::Mapped(m),
            Err(_) => Self::Syscall(map),
        }
    }

    /// Writes value 0. A failed syscall write leaves the old value, which for
    /// the lease is the safe side: it runs out.
    pub fn set(&mut self, v: T) {
        match self {
            Self::Mapped(m) => m.write(0, v),
            Self::Syscall(a) => {
                let _ = a.set(0, v, 0);
            }
        }
    }

    /// Reads value 0 (tests and status).
    pub fn get(&self) -> Option<T> {
        match self {
            Self::Mapped(m) => Some(m.read(0)),
            Self::Syscall(a) => a.get(&0, 0).ok(),
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped(_))
    }
}

/// The first `entries` values of an mmapable array, mapped shared with the kernel.
pub struct Mapping<T> {
    ptr: NonNull<T>,
    len: NonZeroUsize,
    entries: usize,
}

// SAFETY: the mapping is plain shared memory; writes are single stores of
// naturally aligned words (see `write`), so moving it to another thread is fine.
unsafe impl<T: Send> Send for Mapping<T> {}

impl<T: Pod> Mapping<T> {
    /// Maps values 0..entries of `map` (an array of at least that many).
    pub fn new(map: &Array<MapData, T>, entries: usize) -> Result<Self> {
        // An array map's values start at offset 0 of its mapping, page aligned.
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let bytes = size_of::<T>() * entries;
        let len = NonZeroUsize::new(bytes.div_ceil(page).max(1) * page).context("zero length")?;
        let fd = map.map().fd().as_fd();
        // SAFETY: a fresh shared mapping of the map's fd; nothing else aliases
        // it in this process, and it is unmapped on drop.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .context("mmap of a BPF array map (BPF_F_MMAPABLE)")?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
            entries,
        })
    }

    /// One volatile store of value `i`: its u64 fields are naturally aligned,
    /// so XDP reading concurrently sees each field either old or new.
    fn write(&self, i: usize, v: T) {
        assert!(i < self.entries);
        // SAFETY: the mapping holds `entries` values from a page-aligned start,
        // and i is below that.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(i), v) }
    }

    /// One volatile load of value `i` (see `write`).
    pub fn read(&self, i: usize) -> T {
        assert!(i < self.entries);
        // SAFETY: as in `write`.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(i)) }
    }
}

impl<T> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { munmap(self.ptr.cast(), self.len.get()) };
    }
}
