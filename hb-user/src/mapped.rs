//! The first value of a one-entry BPF array map, as the sender thread writes it
//! with every heartbeat (the holder lease, the record of the last heartbeat
//! sent). The maps are `BPF_F_MMAPABLE` (`hb_common::maps::MAP_MMAPABLE`), so the
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
        match Mapping::new(&map) {
            Ok(m) => Self::Mapped(m),
            Err(_) => Self::Syscall(map),
        }
    }

    /// Writes value 0. A failed syscall write leaves the old value, which for
    /// the lease is the safe side: it runs out.
    pub fn set(&mut self, v: T) {
        match self {
            Self::Mapped(m) => m.write(v),
            Self::Syscall(a) => {
                let _ = a.set(0, v, 0);
            }
        }
    }

    /// Reads value 0 (tests and status).
    pub fn get(&self) -> Option<T> {
        match self {
            Self::Mapped(m) => Some(m.read()),
            Self::Syscall(a) => a.get(&0, 0).ok(),
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped(_))
    }
}

/// Value 0 of an mmapable array, mapped shared with the kernel.
pub struct Mapping<T> {
    ptr: NonNull<T>,
    len: NonZeroUsize,
}

// SAFETY: the mapping is plain shared memory; writes are single stores of
// naturally aligned words (see `write`), so moving it to another thread is fine.
unsafe impl<T: Send> Send for Mapping<T> {}

impl<T: Pod> Mapping<T> {
    fn new(map: &Array<MapData, T>) -> Result<Self> {
        // An array map's values start at offset 0 of its mapping, page aligned.
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let len = NonZeroUsize::new(page.max(size_of::<T>())).context("zero length")?;
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
        })
    }

    /// One volatile store of the value: its u64 fields are naturally aligned,
    /// so XDP reading concurrently sees each field either old or new.
    fn write(&self, v: T) {
        // SAFETY: the mapping is at least size_of::<T>() bytes and page aligned.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr(), v) }
    }

    fn read(&self) -> T {
        // SAFETY: as in `write`.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr()) }
    }
}

impl<T> Drop for Mapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { munmap(self.ptr.cast(), self.len.get()) };
    }
}
