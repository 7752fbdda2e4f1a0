//! Packed weights of a whole model in one anonymous mapping backed by huge pages.
//!
//! A batch-1 forward pass streams every packed weight once. On 4 KiB pages that is one TLB
//! miss per 4 KiB, ~30 k per text for EmbeddingGemma's 119 MB, and under a hypervisor each
//! miss is a two-dimensional page walk. Each matrix (0.2–2.6 MB) is too small to hold an
//! aligned 2 MiB page of its own, so a loader sizes all of them first, asks for one mapping of
//! the total, 2 MiB aligned and advised for transparent huge pages, and packs each matrix into
//! its own slot, in parallel.

use std::sync::Arc;

/// Alignment of each slot's start: cache lines, as the packed panels expect.
const SLOT_ALIGN: usize = 64;
/// Transparent huge page size on x86-64 (and the granularity the mapping is aligned to).
const HUGE_PAGE: usize = 2 << 20;

/// The mapping and the address of its first 2 MiB boundary.
struct Region {
    /// Owns the mapping; only reached through `base` (slots own disjoint ranges of it).
    _map: memmap2::MmapMut,
    base: *mut u8,
    len: usize,
}

// SAFETY: `base` points into `_map`, which lives as long as the region; a region is only read
// and written through `WeightSlot`s, each the sole owner of its disjoint byte range, so sharing
// the region between threads creates no data race.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// One matrix's range of a shared huge-page mapping ([`weight_slots`]): the sole owner of
/// those bytes; the mapping is released when the last slot of it is dropped.
pub struct WeightSlot {
    region: Arc<Region>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for WeightSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightSlot").field("offset", &self.offset).field("len", &self.len).finish()
    }
}

impl WeightSlot {
    /// Bytes in the slot.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the slot holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: offset + len <= region.len (checked when the slots were cut) and the range
        // belongs to this slot alone, so no `&mut` to it exists while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.region.base.add(self.offset), self.len) }
    }
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        debug_assert!(self.offset + self.len <= self.region.len);
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference to the range.
        unsafe { std::slice::from_raw_parts_mut(self.region.base.add(self.offset), self.len) }
    }
}

/// Zeroed slots of `lens` bytes in one anonymous mapping, each 64-byte aligned, the whole
/// advised for transparent huge pages (`MADV_HUGEPAGE`, which Linux honours when
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`). `None` when the
/// mapping cannot be made (the caller then packs into ordinary heap buffers, which work the
/// same, on 4 KiB pages).
pub fn weight_slots(lens: &[usize]) -> Option<Vec<WeightSlot>> {
    let mut offsets = Vec::with_capacity(lens.len());
    let mut total = 0usize;
    for &len in lens {
        offsets.push(total);
        total = total.checked_add(len.checked_next_multiple_of(SLOT_ALIGN)?)?;
    }
    // Room to start at a 2 MiB boundary and to end on one (the tail page is then whole).
    let mapped = total.checked_next_multiple_of(HUGE_PAGE)?.checked_add(HUGE_PAGE)?;
    let mut map = memmap2::MmapOptions::new().len(mapped).map_anon().ok()?;
    let start = map.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
    #[cfg(target_os = "linux")]
    {
        // Advice only: without huge pages everything works the same, just slower.
        let _ = map.advise_range(memmap2::Advice::HugePage, start, mapped - start);
    }
    // SAFETY: start < HUGE_PAGE and total + start <= mapped, so the region stays inside the map.
    let base = unsafe { map.as_mut_ptr().add(start) };
    let region = Arc::new(Region {
        _map: map,
        base,
        len: total,
    });
    Some(
        lens.iter()
            .zip(offsets)
            .map(|(&len, offset)| WeightSlot {
                region: Arc::clone(&region),
                offset,
                len,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_aligned_zeroed_and_outlive_each_other() {
        let lens = [100, 0, 3 << 20, 64, 5];
        let mut slots = weight_slots(&lens).expect("an anonymous mapping");
        for (s, &len) in slots.iter().zip(&lens) {
            assert_eq!(s.len(), len);
            assert!(s.bytes().iter().all(|&b| b == 0));
            assert_eq!(s.bytes().as_ptr() as usize % SLOT_ALIGN, 0);
        }
        for (i, s) in slots.iter_mut().enumerate() {
            s.bytes_mut().fill(i as u8 + 1);
        }
        let last = slots.pop().unwrap();
        drop(slots);
        // The mapping lives while any slot does.
        assert!(last.bytes().iter().all(|&b| b == 5));
        assert!(weight_slots(&[usize::MAX]).is_none());
    }
}
