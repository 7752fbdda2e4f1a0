//! f32 right-hand operands packed once and multiplied many times, each time by a K sub-range and
//! a panel-aligned column sub-range.
//!
//! Attention multiplies every query block of a text by the same keys and values, each block by
//! its own span of them. [`super::gemm_f32_nt`] and [`super::gemm_f32_nn`] pack their right-hand
//! operand on every call, so a long text's K and V were packed once per query block. In the
//! panel layout a K range is an offset inside every panel and a column range that starts on a
//! panel is a whole number of panels further, so one packing serves every span. The product
//! runs the same loop nest and microkernels as the unpacked GEMMs over the sub-matrix, with the
//! same reduction order: the bits are those of the unpacked GEMM on the sub-matrix.

use std::ops::Range;

use super::pack::{pack_f32_nn_slice, pack_f32_nt_slice};
use super::tile::PANEL;
use super::{F32Job, Plan, check_len, run_f32};
use crate::KernelError;
use crate::aligned::AlignedBuf;
use crate::dispatch::Kernels;
use crate::parallel::{ParallelFor, SyncPtr};

/// 64-byte aligned f32 storage for packed operands, grown once and reused.
///
/// Several operands can share one buffer at offsets that are multiples of [`F32PackBuf::PANEL`]
/// (every packed length is one), which keeps each operand's panels aligned for the kernels'
/// aligned loads.
#[derive(Clone, Default)]
pub struct F32PackBuf {
    buf: AlignedBuf,
}

impl std::fmt::Debug for F32PackBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("F32PackBuf")
            .field("bytes", &self.allocated_bytes())
            .finish()
    }
}

impl F32PackBuf {
    /// Columns per packed panel: offsets into the buffer and the first column of a product's
    /// column range must be multiples of it.
    pub const PANEL: usize = PANEL;

    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Values an operand of `n` columns and reduction length `k` takes packed (`n` rounded up
    /// to whole panels), saturating on overflow.
    pub fn packed_len(n: usize, k: usize) -> usize {
        n.div_ceil(PANEL).saturating_mul(PANEL).saturating_mul(k)
    }

    /// Grows to at least `len` values (never shrinks; contents are unspecified after growing).
    pub fn reserve(&mut self, len: usize) {
        self.buf.ensure(len.saturating_mul(4));
    }

    /// Values available.
    pub fn len(&self) -> usize {
        self.buf.len() / 4
    }

    /// Whether no values are available.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes currently reserved.
    pub fn allocated_bytes(&self) -> usize {
        self.buf.capacity_bytes()
    }

    /// All values, to pack into with [`pack_f32_nt_rows`] and [`pack_f32_nn_panels`]. Split it
    /// at multiples of [`F32PackBuf::PANEL`] to pack several operands or parts in parallel.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.buf.as_f32_mut()
    }

    /// The operand of `n` columns × `k` packed at `offset` (a multiple of
    /// [`F32PackBuf::PANEL`]).
    pub fn panels(&self, offset: usize, n: usize, k: usize) -> Result<F32Panels<'_>, KernelError> {
        if !offset.is_multiple_of(PANEL) {
            return Err(KernelError::Unaligned {
                what: "packed operand offset",
                value: offset,
                align: PANEL,
            });
        }
        let len = n
            .div_ceil(PANEL)
            .checked_mul(PANEL * k)
            .ok_or(KernelError::Shape { rows: n, cols: k })?;
        let end = offset
            .checked_add(len)
            .ok_or(KernelError::Shape { rows: n, cols: k })?;
        let data = self
            .buf
            .as_f32()
            .get(offset..end)
            .ok_or(KernelError::Length {
                what: "packed operand",
                expected: end,
                actual: self.len(),
            })?;
        Ok(F32Panels { data, n, k })
    }
}

/// An operand in the f32 panel layout (`n` columns, reduction length `k`), borrowed from an
/// [`F32PackBuf`]; its start is 64-byte aligned.
#[derive(Clone, Copy, Debug)]
pub struct F32Panels<'a> {
    data: &'a [f32],
    n: usize,
    k: usize,
}

impl F32Panels<'_> {
    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// Packs `W` (`n × k`, row-major) as the right-hand operand of `C = A · Wᵀ` into `out`
/// ([`F32PackBuf::packed_len`]`(n, k)` values). Panels are contiguous and independent: packing
/// rows `16p..` separately into `out[16p·k..]` gives the same values as one call.
pub fn pack_f32_nt_rows(out: &mut [f32], w: &[f32], n: usize, k: usize) -> Result<(), KernelError> {
    let wlen = n
        .checked_mul(k)
        .ok_or(KernelError::Shape { rows: n, cols: k })?;
    check_len("w", wlen, w.len())?;
    check_len("out", F32PackBuf::packed_len(n, k), out.len())?;
    pack_f32_nt_slice(out, w, n, k);
    Ok(())
}

/// Packs column panels `panels` (panel `p` is columns `16p..16p+16`, zero past `n`) of `B`
/// (`k × n`, row-major) as the right-hand operand of `C = A · B` into `out`
/// (`panels.len()·16·k` values). Packing all `n.div_ceil(16)` panels, in one call or in parts
/// placed one after another, gives the operand of `n` columns × `k`.
pub fn pack_f32_nn_panels(
    out: &mut [f32],
    b: &[f32],
    k: usize,
    n: usize,
    panels: Range<usize>,
) -> Result<(), KernelError> {
    let blen = n
        .checked_mul(k)
        .ok_or(KernelError::Shape { rows: k, cols: n })?;
    check_len("b", blen, b.len())?;
    if panels.start > panels.end || panels.end > n.div_ceil(PANEL) {
        return Err(KernelError::Length {
            what: "panels",
            expected: n.div_ceil(PANEL),
            actual: panels.end,
        });
    }
    check_len("out", panels.len() * PANEL * k, out.len())?;
    pack_f32_nn_slice(out, b, k, n, panels);
    Ok(())
}

/// `C = A · B[ks, cols]` with `B` packed: `c` is `m × cols.len()` (row-major), row `r` of A is
/// `a[r·lda..][..ks.len()]` (`lda ≥ ks.len()`; A may be a column range of a wider matrix, only
/// the `ks.len()` values are read). `cols.start` must be a multiple of
/// [`F32PackBuf::PANEL`]; `ks` can start anywhere.
///
/// Each output element is the sequential fma reduction over `ks` in order, as in
/// [`super::gemm_f32_nt`] on the sub-matrix: same bits, on every ISA.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_prepacked(
    kernels: &Kernels,
    a: &[f32],
    m: usize,
    lda: usize,
    b: F32Panels<'_>,
    cols: Range<usize>,
    ks: Range<usize>,
    c: &mut [f32],
    par: &dyn ParallelFor,
) -> Result<(), KernelError> {
    if cols.start > cols.end || cols.end > b.n {
        return Err(KernelError::Length {
            what: "cols",
            expected: b.n,
            actual: cols.end,
        });
    }
    if ks.start > ks.end || ks.end > b.k {
        return Err(KernelError::Length {
            what: "ks",
            expected: b.k,
            actual: ks.end,
        });
    }
    if !cols.start.is_multiple_of(PANEL) {
        return Err(KernelError::Unaligned {
            what: "first column",
            value: cols.start,
            align: PANEL,
        });
    }
    let (n, k) = (cols.len(), ks.len());
    if lda < k {
        return Err(KernelError::Length {
            what: "lda (at least the K range)",
            expected: k,
            actual: lda,
        });
    }
    let clen = m
        .checked_mul(n)
        .ok_or(KernelError::Shape { rows: m, cols: n })?;
    check_len("c", clen, c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let alen = (m - 1)
        .checked_mul(lda)
        .and_then(|x| x.checked_add(k))
        .ok_or(KernelError::Shape { rows: m, cols: lda })?;
    if a.len() < alen {
        return Err(KernelError::Length {
            what: "a",
            expected: alen,
            actual: a.len(),
        });
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let kern = kernels.f32_kernel();
    let panel_stride = b.k * PANEL;
    // In range: cols.start < b.n and ks.start < b.k here, and the panels are whole.
    let w = &b.data[(cols.start / PANEL) * panel_stride + ks.start * PANEL..];
    let job = F32Job {
        w: SyncPtr(w.as_ptr().cast_mut()),
        panel_stride,
        c: SyncPtr(c.as_mut_ptr()),
        n,
        plan: Plan::new(m, n, kern.mr, kern.nr, par.num_threads()),
    };
    run_f32(kernels, &[Some(job)], (a, lda), m, k, par);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Isa;
    use crate::gemm::{GemmScratch, gemm_f32_nn, gemm_f32_nt};
    use crate::parallel::Serial;
    use crate::testutil::{Threads, random_f32, rng};

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Packs `W` (`n × k`) as a `C = A·Wᵀ` operand at `offset` of `buf`, in parts of 16 rows
    /// (the way callers pack in parallel), after filling the buffer with NaN so that any read
    /// of an unpacked value shows.
    fn pack_nt_at(buf: &mut F32PackBuf, offset: usize, w: &[f32], n: usize, k: usize) {
        buf.reserve(offset + F32PackBuf::packed_len(n, k));
        buf.as_mut_slice().fill(f32::NAN);
        let out = &mut buf.as_mut_slice()[offset..offset + F32PackBuf::packed_len(n, k)];
        for (p, part) in out.chunks_mut(PANEL * k).enumerate() {
            let rows = PANEL.min(n - p * PANEL);
            pack_f32_nt_rows(part, &w[p * PANEL * k..(p * PANEL + rows) * k], rows, k).unwrap();
        }
    }

    /// Packs `B` (`k × n`) as a `C = A·B` operand at `offset`, one panel per call.
    fn pack_nn_at(buf: &mut F32PackBuf, offset: usize, b: &[f32], k: usize, n: usize) {
        buf.reserve(offset + F32PackBuf::packed_len(n, k));
        buf.as_mut_slice().fill(f32::NAN);
        let out = &mut buf.as_mut_slice()[offset..offset + F32PackBuf::packed_len(n, k)];
        for (p, part) in out.chunks_mut(PANEL * k).enumerate() {
            pack_f32_nn_panels(part, b, k, n, p..p + 1).unwrap();
        }
    }

    /// Rows `rows`, columns `cols` of a row-major matrix with `width` columns, contiguous.
    fn sub(x: &[f32], width: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<f32> {
        rows.flat_map(|r| {
            x[r * width + cols.start..r * width + cols.end]
                .iter()
                .copied()
        })
        .collect()
    }

    /// `(m, rows of W / columns of B, reduction length, column range, K range)`.
    type Case = (usize, usize, usize, Range<usize>, Range<usize>);

    /// Sub-ranges of a packed `Q·Kᵀ`-shaped operand and of a packed `P·V`-shaped one give the
    /// bits of the unpacked GEMMs on the same sub-matrices, on every ISA, and the scalar
    /// specification's bits; A is read only inside its K range (NaN around it).
    #[test]
    fn sub_ranges_equal_unpacked_gemms_and_scalar() {
        let scalar = Kernels::for_isa(Isa::Scalar).unwrap();
        let mut r = rng(41);
        let cases: &[Case] = &[
            (1, 1, 1, 0..1, 0..1),
            (7, 40, 9, 16..37, 0..9),
            (13, 70, 24, 32..70, 3..19),
            (25, 33, 300, 0..33, 1..299),
            (3, 16, 600, 0..16, 257..600),
            (96, 100, 64, 48..100, 0..64),
        ];
        for &(m, nt, kt, ref cols, ref ks) in cases {
            let (n, k) = (cols.len(), ks.len());
            let lda = k + 5;
            let mut a = vec![f32::NAN; (m - 1) * lda + k];
            let a_sub = random_f32(&mut r, m * k, 1.0);
            for (row, src) in a_sub.chunks_exact(k).enumerate() {
                a[row * lda..row * lda + k].copy_from_slice(src);
            }
            // Q·Kᵀ shape: W is nt × kt, columns are W's rows.
            let w = random_f32(&mut r, nt * kt, 1.0);
            let w_sub = sub(&w, kt, cols.clone(), ks.clone());
            // P·V shape: B is kt × nt, K runs over B's rows.
            let bm = random_f32(&mut r, kt * nt, 1.0);
            let b_sub = sub(&bm, nt, ks.clone(), cols.clone());
            let mut spec_nt = vec![f32::NAN; m * n];
            let mut spec_nn = vec![f32::NAN; m * n];
            for (i, kern) in std::iter::once(scalar)
                .chain(Kernels::all_supported())
                .enumerate()
            {
                let mut want = vec![f32::NAN; m * n];
                gemm_f32_nt(
                    kern,
                    &a_sub,
                    m,
                    k,
                    &w_sub,
                    n,
                    &mut want,
                    &mut GemmScratch::new(),
                    &Serial,
                )
                .unwrap();
                let mut buf = F32PackBuf::new();
                pack_nt_at(&mut buf, 32, &w, nt, kt);
                let mut got = vec![f32::NAN; m * n];
                let p = buf.panels(32, nt, kt).unwrap();
                gemm_f32_prepacked(
                    kern,
                    &a,
                    m,
                    lda,
                    p,
                    cols.clone(),
                    ks.clone(),
                    &mut got,
                    &Serial,
                )
                .unwrap();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "nt {:?} {m} {cols:?} {ks:?}",
                    kern.isa()
                );
                if i == 0 {
                    spec_nt = got;
                } else {
                    assert_eq!(bits(&want), bits(&spec_nt), "nt vs scalar {:?}", kern.isa());
                }

                let mut want = vec![f32::NAN; m * n];
                gemm_f32_nn(
                    kern,
                    &a_sub,
                    m,
                    k,
                    &b_sub,
                    n,
                    &mut want,
                    &mut GemmScratch::new(),
                    &Serial,
                )
                .unwrap();
                pack_nn_at(&mut buf, 16, &bm, kt, nt);
                let mut got = vec![f32::NAN; m * n];
                let p = buf.panels(16, nt, kt).unwrap();
                gemm_f32_prepacked(
                    kern,
                    &a,
                    m,
                    lda,
                    p,
                    cols.clone(),
                    ks.clone(),
                    &mut got,
                    &Serial,
                )
                .unwrap();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "nn {:?} {m} {cols:?} {ks:?}",
                    kern.isa()
                );
                if i == 0 {
                    spec_nn = got;
                } else {
                    assert_eq!(bits(&want), bits(&spec_nn), "nn vs scalar {:?}", kern.isa());
                }
            }
        }
    }

    /// Splitting the product over threads does not change a bit.
    #[test]
    fn threads_do_not_change_bits() {
        let mut r = rng(42);
        let (m, nt, kt) = (50, 90, 130);
        let a = random_f32(&mut r, m * kt, 1.0);
        let w = random_f32(&mut r, nt * kt, 1.0);
        let mut buf = F32PackBuf::new();
        pack_nt_at(&mut buf, 0, &w, nt, kt);
        let p = buf.panels(0, nt, kt).unwrap();
        let mut one = vec![0f32; m * 74];
        gemm_f32_prepacked(
            Kernels::get(),
            &a,
            m,
            kt,
            p,
            16..90,
            0..kt,
            &mut one,
            &Serial,
        )
        .unwrap();
        let mut four = vec![0f32; m * 74];
        gemm_f32_prepacked(
            Kernels::get(),
            &a,
            m,
            kt,
            p,
            16..90,
            0..kt,
            &mut four,
            &Threads(4),
        )
        .unwrap();
        assert_eq!(bits(&one), bits(&four));
    }

    #[test]
    fn rejects_bad_ranges_and_offsets() {
        let mut buf = F32PackBuf::new();
        buf.reserve(F32PackBuf::packed_len(40, 8) + 16);
        assert!(matches!(
            buf.panels(8, 40, 8),
            Err(KernelError::Unaligned { .. })
        ));
        assert!(matches!(
            buf.panels(32, 40, 8),
            Err(KernelError::Length { .. })
        ));
        let p = buf.panels(16, 40, 8).unwrap();
        let (k, a) = (Kernels::get(), vec![0f32; 64]);
        let mut c = vec![0f32; 64];
        let bad_col = gemm_f32_prepacked(k, &a, 2, 8, p, 8..40, 0..8, &mut c, &Serial);
        assert!(matches!(bad_col, Err(KernelError::Unaligned { .. })));
        let past_n = gemm_f32_prepacked(k, &a, 2, 8, p, 16..41, 0..8, &mut c, &Serial);
        assert!(matches!(
            past_n,
            Err(KernelError::Length { what: "cols", .. })
        ));
        let past_k = gemm_f32_prepacked(k, &a, 2, 8, p, 16..40, 2..9, &mut c, &Serial);
        assert!(matches!(
            past_k,
            Err(KernelError::Length { what: "ks", .. })
        ));
        let short_lda = gemm_f32_prepacked(k, &a, 2, 4, p, 16..32, 0..8, &mut c[..32], &Serial);
        assert!(matches!(short_lda, Err(KernelError::Length { .. })));
        let short_a = gemm_f32_prepacked(k, &a[..10], 2, 8, p, 16..32, 0..8, &mut c[..32], &Serial);
        assert!(matches!(
            short_a,
            Err(KernelError::Length { what: "a", .. })
        ));
        let mut out = vec![0f32; 10];
        assert!(pack_f32_nt_rows(&mut out, &[0.0; 8], 2, 4).is_err());
        assert!(pack_f32_nn_panels(&mut out, &[0.0; 8], 2, 4, 0..2).is_err());
    }
}
