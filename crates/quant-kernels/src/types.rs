//! The per-format table: ggml type ids, block geometry and each weight format's `vec_dot_type`.

use crate::KernelError;

/// Elements in a K-quant super-block (`QK_K` in ggml).
pub const QK_K: usize = 256;
/// Elements in a Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_1 block.
pub const QK8_0: usize = 32;

/// A tensor element format, numbered as ggml numbers them (`enum ggml_type`).
///
/// The set covers what GGUF embedding models ship with (F32, F16, BF16, the legacy 32-element
/// formats and the K-quants Q4_K, Q5_K, Q6_K) plus the activation formats the dot products
/// pair them with (Q8_0, Q8_1, Q8_K).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum QuantType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 32 weights, one f16 scale, 4-bit signed quants (offset 8).
    Q4_0,
    /// 32 weights, f16 scale and min, 4-bit unsigned quants.
    Q4_1,
    /// 32 weights, one f16 scale, 5-bit signed quants (offset 16).
    Q5_0,
    /// 32 weights, f16 scale and min, 5-bit unsigned quants.
    Q5_1,
    /// 32 weights, one f16 scale, int8 quants.
    Q8_0,
    /// 32 activations, f16 scale and f16 `d * sum(qs)`, int8 quants (activation format).
    Q8_1,
    /// 256 weights in 8 sub-blocks with 6-bit scales and mins, 4-bit quants.
    Q4K,
    /// 256 weights in 8 sub-blocks with 6-bit scales and mins, 5-bit quants.
    Q5K,
    /// 256 weights in 16 sub-blocks with int8 scales, 6-bit quants.
    Q6K,
    /// 256 activations, f32 scale, int8 quants, sums of 16 (activation format).
    Q8K,
}

impl QuantType {
    /// Every format this crate knows, in ggml id order.
    pub const ALL: [QuantType; 13] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q8_1,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::Q8K,
        QuantType::BF16,
    ];

    /// Formats a weight matrix may have: everything [`crate::dequantize_row`] and
    /// [`crate::PackedMatrix::new`] accept.
    pub const WEIGHTS: [QuantType; 11] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ];

    /// The format for a ggml type id (`GGML_TYPE_*`), or `None` if this crate does not know it.
    pub const fn from_ggml_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => QuantType::F32,
            1 => QuantType::F16,
            2 => QuantType::Q4_0,
            3 => QuantType::Q4_1,
            6 => QuantType::Q5_0,
            7 => QuantType::Q5_1,
            8 => QuantType::Q8_0,
            9 => QuantType::Q8_1,
            12 => QuantType::Q4K,
            13 => QuantType::Q5K,
            14 => QuantType::Q6K,
            15 => QuantType::Q8K,
            30 => QuantType::BF16,
            _ => return None,
        })
    }

    /// ggml's type id (`GGML_TYPE_*`).
    pub const fn ggml_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q8_1 => 9,
            QuantType::Q4K => 12,
            QuantType::Q5K => 13,
            QuantType::Q6K => 14,
            QuantType::Q8K => 15,
            QuantType::BF16 => 30,
        }
    }

    /// ggml's name (`ggml_type_name`): `"q8_0"`, `"q4_K"`, `"bf16"`...
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "f32",
            QuantType::F16 => "f16",
            QuantType::BF16 => "bf16",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q8_1 => "q8_1",
            QuantType::Q4K => "q4_K",
            QuantType::Q5K => "q5_K",
            QuantType::Q6K => "q6_K",
            QuantType::Q8K => "q8_K",
        }
    }

    /// Elements per block (1 for the float formats).
    pub const fn block_elems(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::Q8_0
            | QuantType::Q8_1 => QK8_0,
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K | QuantType::Q8K => QK_K,
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q8_1 => 36,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
            QuantType::Q8K => 292,
        }
    }

    /// The format activations are quantized to before a dot product with weights of this format
    /// (ggml's `type_traits_cpu[..].vec_dot_type`). Float formats pair with `F32` here: this
    /// crate multiplies them in f32.
    pub const fn vec_dot_type(self) -> QuantType {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => QuantType::F32,
            QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => QuantType::Q8_0,
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q8_1 => QuantType::Q8_1,
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K | QuantType::Q8K => QuantType::Q8K,
        }
    }

    /// Whether this is one of the formats weights can be stored in (everything except the
    /// activation-only formats Q8_1 and Q8_K).
    pub const fn is_weight_format(self) -> bool {
        !matches!(self, QuantType::Q8_1 | QuantType::Q8K)
    }

    /// Bytes of a row of `elems` elements, or an error if `elems` is not a whole number of blocks.
    pub fn row_bytes(self, elems: usize) -> Result<usize, KernelError> {
        let block = self.block_elems();
        if !elems.is_multiple_of(block) {
            return Err(KernelError::RaggedRow { ty: self, elems, block });
        }
        Ok(elems / block * self.block_bytes())
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_block_structs() {
        for ty in QuantType::ALL {
            assert_eq!(QuantType::from_ggml_id(ty.ggml_id()), Some(ty));
        }
        assert_eq!(QuantType::from_ggml_id(4), None);
        assert_eq!(QuantType::from_ggml_id(10), None, "Q2_K is not supported");
        use crate::blocks::*;
        use std::mem::size_of;
        assert_eq!(QuantType::Q8_0.block_bytes(), size_of::<BlockQ8_0>());
        assert_eq!(QuantType::Q8_1.block_bytes(), size_of::<BlockQ8_1>());
        assert_eq!(QuantType::Q4_0.block_bytes(), size_of::<BlockQ4_0>());
        assert_eq!(QuantType::Q4_1.block_bytes(), size_of::<BlockQ4_1>());
        assert_eq!(QuantType::Q5_0.block_bytes(), size_of::<BlockQ5_0>());
        assert_eq!(QuantType::Q5_1.block_bytes(), size_of::<BlockQ5_1>());
        assert_eq!(QuantType::Q4K.block_bytes(), size_of::<BlockQ4K>());
        assert_eq!(QuantType::Q5K.block_bytes(), size_of::<BlockQ5K>());
        assert_eq!(QuantType::Q6K.block_bytes(), size_of::<BlockQ6K>());
        assert_eq!(QuantType::Q8K.block_bytes(), size_of::<BlockQ8K>());
    }

    #[test]
    fn row_bytes_rejects_partial_blocks() {
        assert_eq!(QuantType::Q8_0.row_bytes(768), Ok(768 / 32 * 34));
        assert_eq!(QuantType::Q6K.row_bytes(768), Ok(3 * 210));
        assert!(matches!(QuantType::Q4K.row_bytes(100), Err(KernelError::RaggedRow { .. })));
        assert_eq!(QuantType::BF16.row_bytes(3), Ok(6));
    }
}
