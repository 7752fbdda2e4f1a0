//! A 64-byte aligned, zero-initialised byte buffer for packed weights and scratch.

use bytemuck::{Pod, Zeroable};

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Owned bytes whose start is 64-byte aligned, so packed panels start on cache lines and can be
/// viewed as `f32` without copying.
#[derive(Clone, Default)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        AlignedBuf { lines: vec![Line([0; 64]); len.div_ceil(64)], len }
    }
    /// Grows (never shrinks) to at least `len` bytes; contents are unspecified afterwards.
    pub fn ensure(&mut self, len: usize) {
        if self.lines.len() * 64 < len {
            self.lines.resize(len.div_ceil(64), Line([0; 64]));
        }
        self.len = self.len.max(len);
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn capacity_bytes(&self) -> usize {
        self.lines.capacity() * 64
    }
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<Line, u8>(&self.lines)[..self.len]
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Line, u8>(&mut self.lines)[..self.len]
    }
    pub fn as_f32(&self) -> &[f32] {
        &bytemuck::cast_slice::<Line, f32>(&self.lines)[..self.len / 4]
    }
    pub fn as_f32_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..self.len / 4]
    }
    pub fn as_i32_mut(&mut self) -> &mut [i32] {
        &mut bytemuck::cast_slice_mut::<Line, i32>(&mut self.lines)[..self.len / 4]
    }
}
