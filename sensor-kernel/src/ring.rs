//! The consumer side of the `EVENTS` BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`), written for the
//! sensor's access pattern: records are read in batches and the consumer position is published
//! once per batch rather than once per record.
//!
//! Why not `aya::maps::RingBuf`: it stores the consumer position after every record. The kernel
//! program reads that position in every `bpf_ringbuf_reserve` (to check for room) and in the
//! fill-mark query, so a reader that keeps up with a storm turns one cache line into a ping-pong
//! between the traced task's core and the reader's core, once per event: a cost paid by the traced
//! task, in its syscall. Publishing once per batch (or every [`PUBLISH_EVERY`] bytes) leaves the
//! line with the producer almost all the time.
//!
//! The memory layout is the kernel's ABI (`kernel/bpf/ringbuf.c`): page 0 holds the consumer
//! position (mapped read-write), page 1 the producer position, then the data pages, mapped twice
//! in a row so that a record that wraps around the end is contiguous. Every record starts with an
//! 8-byte header: a `u32` length whose bit 31 says "still being written" and bit 30 "discarded",
//! then the record's page offset; records are 8-byte aligned.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use aya::maps::MapData;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

/// Bytes consumed between two publications of the consumer position within one batch, so that a
/// long batch still returns room to the kernel as it goes.
pub(super) const PUBLISH_EVERY: usize = 64 * 1024;

/// One `mmap` of the ring buffer's fd, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Mapping> {
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mmap offset too large"))?;
        // SAFETY: a fresh shared mapping of a BPF map fd; the kernel checks length, offset and
        // protection (the data pages can only be mapped read-only).
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, off) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing borrows the mapping any more
        // (every borrow handed out is tied to a `&mut Ring`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A ring buffer consumer. Single consumer: the kernel allows one.
pub(super) struct Ring {
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    size: usize,
    /// Where this consumer has read up to.
    pos: usize,
    /// The position last published to the kernel.
    published: usize,
}

// SAFETY: the mappings are owned by the Ring and only touched through `&mut self` (or `&self` for
// atomic loads), so moving the Ring to another thread is sound.
unsafe impl Send for Ring {}

/// A record that cannot be from the kernel: the buffer's layout is not what this consumer expects.
#[derive(Debug, thiserror::Error)]
#[error(
    "ring buffer record at position {pos} claims {len} bytes, more than the {size}-byte buffer"
)]
pub(super) struct Corrupt {
    pos: usize,
    len: usize,
    size: usize,
}

impl Ring {
    /// Maps the ring buffer `map` of `size` data bytes (its `max_entries`, a power of two multiple
    /// of the page size).
    pub(super) fn new(map: MapData, size: usize) -> io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .ok_or_else(|| io::Error::other("page size unknown"))?;
        if !size.is_power_of_two() || !size.is_multiple_of(page) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring buffer size {size} is not a power-of-two multiple of the page size"),
            ));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let mut ring = Ring {
            map,
            consumer,
            producer,
            page,
            size,
            pos: 0,
            published: 0,
        };
        // A map reused from an earlier reader may not start at 0.
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        ring.published = ring.pos;
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page starts with the kernel's `unsigned long consumer_pos`, page
        // aligned, and lives as long as self.
        unsafe { &*self.consumer.ptr.cast::<AtomicUsize>() }
    }

    fn producer_pos(&self) -> usize {
        // SAFETY: as above for the producer page's `producer_pos`; the kernel publishes it with a
        // release store, paired with this acquire load.
        unsafe { &*self.producer.ptr.cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    fn publish(&mut self) {
        if self.published != self.pos {
            // Release: the records read so far are done with before the kernel may reuse them.
            self.consumer_pos().store(self.pos, Ordering::Release);
            self.published = self.pos;
        }
    }

    /// Hands every committed record to `f`, in order, until the buffer is empty (as of the last
    /// look at the producer position), a record is still being written, or `f` returns false
    /// (that record stays in the buffer, to be read again by the next call). Publishes the
    /// consumer position as it goes and before returning. Returns the records consumed.
    pub(super) fn drain(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> Result<usize, Corrupt> {
        let mut n = 0;
        let mut prod = self.producer_pos();
        let result = loop {
            if self.pos == prod {
                prod = self.producer_pos();
                if self.pos == prod {
                    break Ok(n);
                }
            }
            let off = self.pos & (self.size - 1);
            // SAFETY: off < size and the data area is 2 * size bytes after the producer page, so
            // the 4-byte header is inside the mapping; the kernel commits it with a fully ordered
            // exchange, paired with this acquire load.
            let hdr = unsafe { &*self.producer.ptr.add(self.page + off).cast::<AtomicU32>() }
                .load(Ordering::Acquire);
            if hdr & BUSY != 0 {
                break Ok(n);
            }
            let len = (hdr & !(BUSY | DISCARD)) as usize;
            if len > self.size - HEADER {
                break Err(Corrupt {
                    pos: self.pos,
                    len,
                    size: self.size,
                });
            }
            if hdr & DISCARD == 0 {
                // SAFETY: off + HEADER + len <= size + size: inside the double-mapped data
                // area; the kernel does not touch a committed record until the consumer
                // position passes it, and it is published only after `f` returns.
                let rec = unsafe {
                    std::slice::from_raw_parts(self.producer.ptr.add(self.page + off + HEADER), len)
                };
                if !f(rec) {
                    break Ok(n);
                }
                n += 1;
            }
            self.pos = self.pos.wrapping_add((HEADER + len).next_multiple_of(8));
            if self.pos.wrapping_sub(self.published) >= PUBLISH_EVERY {
                self.publish();
            }
        };
        self.publish();
        result
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
