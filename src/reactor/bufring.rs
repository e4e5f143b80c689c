//! A provided buffer ring: the receive buffers one reactor's connections share.
//!
//! The kernel picks a buffer for each multishot recv completion and tells us its id; we
//! parse it in place and give it back with [`BufRing::recycle`]. Returned buffers become
//! visible to the kernel when [`BufRing::publish`] stores the new tail, once per loop
//! iteration rather than once per buffer.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

pub struct BufRing {
    /// mmap'ed ring of `entries` descriptors, shared with the kernel.
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    /// Backing memory for all buffers: `entries * buf_size` bytes, allocated once.
    data: Box<[u8]>,
    buf_size: usize,
    entries: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates and registers a ring of `entries` (a power of two) buffers of `buf_size` bytes.
    pub fn new(ring: &IoUring, bgid: u16, entries: u16, buf_size: usize) -> io::Result<Self> {
        assert!(
            entries.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; we check for MAP_FAILED and own it until Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            data: vec![0u8; entries as usize * buf_size].into_boxed_slice(),
            buf_size,
            entries,
            tail: 0,
            bgid,
        };
        // SAFETY: the ring memory is page aligned, `entries` long, and lives until Drop,
        // where it is unregistered before it is unmapped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    #[inline]
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.buf_size;
        &self.data[start..start + len.min(self.buf_size)]
    }

    /// Hands buffer `bid` back (visible to the kernel after `publish`).
    #[inline]
    pub fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        let idx = (self.tail & (self.entries - 1)) as usize;
        let addr = self.data.as_ptr() as u64 + bid as u64 * self.buf_size as u64;
        // SAFETY: idx < entries, so the entry is inside the mapping. The kernel only reads
        // entries between its head and our published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled buffers visible to the kernel.
    #[inline]
    pub fn publish(&self) {
        // SAFETY: `tail` points at the u16 tail field inside the first ring entry, which is
        // valid and 2-byte aligned for the life of the mapping; the kernel reads it with an
        // acquire load, so the release store orders our entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring as *const BufRingEntry) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the ring we mapped in `new`. The caller drops the ring (which
        // unregisters everything) only after the io_uring instance is gone or no recv is armed.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
        }
    }
}
