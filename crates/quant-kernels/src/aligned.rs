//! A 64-byte aligned, zero-initialised byte buffer for packed weights and scratch.

/// Alignment of the buffer's start.
const ALIGN: usize = 64;

/// Owned bytes whose start is 64-byte aligned, so packed panels start on cache lines and can be
/// viewed as `f32` without copying.
///
/// The storage is a `Vec<u8>` of whole lines plus `ALIGN - 1` bytes, used from its first
/// aligned byte. `vec![0u8; n]` asks the allocator for zeroed memory (`calloc`), which for large
/// buffers is fresh pages the kernel zeroes on first touch, so a buffer about to be written in
/// full (every packed matrix at load) is not first cleared by a separate pass over memory. A
/// zeroed allocation with 64-byte alignment would not do: the system allocator serves
/// over-aligned zeroed requests with a `memset`.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    /// Index of the first aligned byte of `storage` (fixed: `storage` never reallocates).
    start: usize,
    len: usize,
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        // A clone's allocation has its own alignment offset.
        let mut c = AlignedBuf::zeroed(self.len);
        c.bytes_mut().copy_from_slice(self.bytes());
        c
    }
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBuf::default();
        }
        let storage = vec![0u8; len.div_ceil(ALIGN) * ALIGN + ALIGN - 1];
        let start = storage.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a byte pointer can always be aligned within ALIGN - 1 bytes");
        AlignedBuf { storage, start, len }
    }
    /// Grows (never shrinks) to at least `len` bytes; contents are unspecified afterwards.
    pub fn ensure(&mut self, len: usize) {
        if self.capacity_bytes() < len {
            *self = AlignedBuf::zeroed(len);
        }
        self.len = self.len.max(len);
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// Aligned bytes held: at least `len` rounded up to whole 64-byte lines, as kernels may
    /// read a buffer's last line whole.
    pub fn capacity_bytes(&self) -> usize {
        self.storage.len() - self.start
    }
    pub fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
    pub fn as_f32(&self) -> &[f32] {
        bytemuck::cast_slice(&self.bytes()[..self.len / 4 * 4])
    }
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        let n = self.len / 4 * 4;
        bytemuck::cast_slice_mut(&mut self.bytes_mut()[..n])
    }
    pub fn as_i32_mut(&mut self) -> &mut [i32] {
        let n = self.len / 4 * 4;
        bytemuck::cast_slice_mut(&mut self.bytes_mut()[..n])
    }
}
