//! Reference microkernels on the packed layouts (see `gemm::tile` for the layout and the exact
//! reduction they define). These are the specification the SIMD microkernels match bit for bit.

use crate::gemm::tile::{F32Tile, Int8Layout, Int8Tile, PANEL};

/// Int8 tile, any size.
///
/// # Safety
/// The tile's pointers must be valid for the rows, blocks and columns it describes.
pub unsafe fn int8_tile(t: &Int8Tile, lay: &Int8Layout) {
    for r in 0..t.mr {
        for col in 0..t.ncols {
            let (p, cc) = (col / PANEL, col % PANEL);
            // SAFETY: the caller guarantees row `r`, column `col` lie inside C.
            let cptr = unsafe { t.c.add(r * t.ldc + col) };
            // SAFETY: as above.
            let mut acc = if t.accumulate { unsafe { *cptr } } else { 0.0 };
            for b in 0..t.nblocks + t.nres {
                // SAFETY: panel `p`'s cell of block `b` (consecutive from `w`, or named by `res`
                // for the residual blocks after them) and row `r`, block `b` of the activations
                // are inside the extents the caller vouched for.
                unsafe {
                    let cell = if b < t.nblocks {
                        t.w.add(p * lay.panel_stride + b * lay.block_stride)
                    } else {
                        let j = *t.res.add(b - t.nblocks) as usize;
                        t.panel.add(p * lay.panel_stride + j * lay.block_stride)
                    };
                    let arow = t.a.add(r * t.lda + b * lay.kb);
                    let s = r * t.lds + b;
                    let mut isum = if lay.affine || lay.signed { 0 } else { *t.ac.add(s) };
                    for e in 0..lay.kb {
                        let u = *cell.add((e / 4) * 64 + cc * 4 + e % 4);
                        let w = if lay.signed && !lay.affine { i32::from(u as i8) } else { i32::from(u) };
                        isum += w * i32::from(*arow.add(e));
                    }
                    let dw = cell.add(lay.dw_offset() + cc * 4).cast::<f32>().read();
                    let scale = *t.ad.add(s) * dw;
                    acc = scale.mul_add(isum as f32, acc);
                    if lay.affine {
                        let mw = cell.add(lay.mw_offset() + cc * 4).cast::<f32>().read();
                        acc = mw.mul_add(*t.asum.add(s), acc);
                    }
                }
            }
            // SAFETY: as for the read above.
            unsafe { *cptr = acc };
        }
    }
}

/// f32 tile, any size.
///
/// # Safety
/// The tile's pointers must be valid for the rows, k range and columns it describes.
pub unsafe fn f32_tile(t: &F32Tile) {
    for r in 0..t.mr {
        for col in 0..t.ncols {
            let (p, cc) = (col / PANEL, col % PANEL);
            // SAFETY: the caller guarantees row `r`, column `col` lie inside C.
            let cptr = unsafe { t.c.add(r * t.ldc + col) };
            // SAFETY: as above.
            let mut acc = if t.accumulate { unsafe { *cptr } } else { 0.0 };
            for k in 0..t.kc {
                // SAFETY: row `r`, element `k` of A and panel `p`, row `k` of W are in range.
                unsafe {
                    let a = *t.a.add(r * t.lda + k);
                    let w = *t.w.add(p * t.panel_stride + k * PANEL + cc);
                    acc = a.mul_add(w, acc);
                }
            }
            // SAFETY: as for the read above.
            unsafe { *cptr = acc };
        }
    }
}
