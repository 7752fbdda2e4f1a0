//! Q8_0 encoding through quant-kernels, whose quantizer reproduces ggml's
//! `quantize_row_q8_0_ref` bit for bit (the one llama.cpp's converter uses via gguf-py).

/// Appends `src` (a whole number of 32-value blocks) to `dst` as Q8_0 blocks.
pub(crate) fn quantize_append(src: &[f32], dst: &mut Vec<u8>) {
    // Callers only pass whole rows whose length `pick_type` checked to be a multiple of 32, so
    // the quantizer's ragged-row error cannot occur; an empty result would fail the writer's
    // byte count check rather than corrupt the file.
    if let Ok(bytes) = quant_kernels::quantize_q8_0(src) {
        dst.extend_from_slice(&bytes);
    }
}
