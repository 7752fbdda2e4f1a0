//! The ggml tensor type table.
//!
//! Ids, names and block geometry follow `enum ggml_type` in llama.cpp's `ggml/include/ggml.h`
//! and the `type_traits` table in `ggml/src/ggml.c` (checked against gguf-py's
//! `GGML_QUANT_SIZES`). Names are gguf-py's spelling (`Q4_K`, `BF16`), which is what
//! llama.cpp's Python tools print. The table covers every id that current llama.cpp defines,
//! so that any real file parses even where this project cannot compute with the type.

/// A ggml tensor element type that current llama.cpp defines.
///
/// Ids that llama.cpp once defined and has since removed (4, 5, 31..=33, 36..=38) are not
/// variants: a file using them is rejected with
/// [`GgufError::RemovedTensorType`](crate::GgufError::RemovedTensorType), as llama.cpp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// 4-bit, 32-element blocks, one f16 scale.
    Q4_0 = 2,
    /// 4-bit, 32-element blocks, f16 scale and minimum.
    Q4_1 = 3,
    /// 5-bit, 32-element blocks, one f16 scale.
    Q5_0 = 6,
    /// 5-bit, 32-element blocks, f16 scale and minimum.
    Q5_1 = 7,
    /// 8-bit, 32-element blocks, one f16 scale.
    Q8_0 = 8,
    /// 8-bit, 32-element blocks, f32 scale and sum (an activation format).
    Q8_1 = 9,
    /// 2-bit k-quant, 256-element super-blocks.
    Q2K = 10,
    /// 3-bit k-quant.
    Q3K = 11,
    /// 4-bit k-quant.
    Q4K = 12,
    /// 5-bit k-quant.
    Q5K = 13,
    /// 6-bit k-quant.
    Q6K = 14,
    /// 8-bit k-quant (an activation format).
    Q8K = 15,
    /// i-quant, 2.06 bits per weight.
    Iq2Xxs = 16,
    /// i-quant, 2.31 bits per weight.
    Iq2Xs = 17,
    /// i-quant, 3.06 bits per weight.
    Iq3Xxs = 18,
    /// i-quant, 1.56 bits per weight.
    Iq1S = 19,
    /// 4-bit non-linear, 32-element blocks.
    Iq4Nl = 20,
    /// i-quant, 3.44 bits per weight.
    Iq3S = 21,
    /// i-quant, 2.5 bits per weight.
    Iq2S = 22,
    /// 4-bit non-linear, 256-element super-blocks.
    Iq4Xs = 23,
    /// 8-bit signed integer.
    I8 = 24,
    /// 16-bit signed integer.
    I16 = 25,
    /// 32-bit signed integer.
    I32 = 26,
    /// 64-bit signed integer.
    I64 = 27,
    /// 64-bit IEEE float.
    F64 = 28,
    /// i-quant, 1.75 bits per weight.
    Iq1M = 29,
    /// bfloat16.
    Bf16 = 30,
    /// Ternary, 1.69 bits per weight.
    Tq1_0 = 34,
    /// Ternary, 2.06 bits per weight.
    Tq2_0 = 35,
    /// Microscaling FP4, 32-element blocks with an E8M0 scale.
    Mxfp4 = 39,
    /// NVIDIA FP4, 64-element blocks with four UE4M3 scales.
    Nvfp4 = 40,
    /// 1-bit, 128-element blocks, one f16 scale.
    Q1_0 = 41,
    /// 2-bit, 64-element blocks, one f16 scale.
    Q2_0 = 42,
}

/// Name, elements per block, bytes per block.
struct Traits(&'static str, u32, u32);

impl GgmlType {
    /// Every type, in id order.
    pub const ALL: &'static [GgmlType] = &[
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Q8K,
        Self::Iq2Xxs,
        Self::Iq2Xs,
        Self::Iq3Xxs,
        Self::Iq1S,
        Self::Iq4Nl,
        Self::Iq3S,
        Self::Iq2S,
        Self::Iq4Xs,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F64,
        Self::Iq1M,
        Self::Bf16,
        Self::Tq1_0,
        Self::Tq2_0,
        Self::Mxfp4,
        Self::Nvfp4,
        Self::Q1_0,
        Self::Q2_0,
    ];

    fn traits(self) -> Traits {
        // QK_K = 256 for every k-, i- and t-quant.
        match self {
            Self::F32 => Traits("F32", 1, 4),
            Self::F16 => Traits("F16", 1, 2),
            Self::Q4_0 => Traits("Q4_0", 32, 2 + 16),
            Self::Q4_1 => Traits("Q4_1", 32, 2 + 2 + 16),
            Self::Q5_0 => Traits("Q5_0", 32, 2 + 4 + 16),
            Self::Q5_1 => Traits("Q5_1", 32, 2 + 2 + 4 + 16),
            Self::Q8_0 => Traits("Q8_0", 32, 2 + 32),
            Self::Q8_1 => Traits("Q8_1", 32, 4 + 32),
            Self::Q2K => Traits("Q2_K", 256, 2 + 2 + 256 / 16 + 256 / 4),
            Self::Q3K => Traits("Q3_K", 256, 2 + 256 / 4 + 256 / 8 + 12),
            Self::Q4K => Traits("Q4_K", 256, 2 + 2 + 256 / 2 + 12),
            Self::Q5K => Traits("Q5_K", 256, 2 + 2 + 256 / 2 + 256 / 8 + 12),
            Self::Q6K => Traits("Q6_K", 256, 2 + 256 / 16 + 3 * 256 / 4),
            Self::Q8K => Traits("Q8_K", 256, 4 + 256 + 256 / 16 * 2),
            Self::Iq2Xxs => Traits("IQ2_XXS", 256, 2 + 256 / 4),
            Self::Iq2Xs => Traits("IQ2_XS", 256, 2 + 256 / 4 + 256 / 32),
            Self::Iq3Xxs => Traits("IQ3_XXS", 256, 2 + 256 / 4 + 256 / 8),
            Self::Iq1S => Traits("IQ1_S", 256, 2 + 256 / 8 + 256 / 16),
            Self::Iq4Nl => Traits("IQ4_NL", 32, 2 + 16),
            Self::Iq3S => Traits("IQ3_S", 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4),
            Self::Iq2S => Traits("IQ2_S", 256, 2 + 256 / 4 + 256 / 16),
            Self::Iq4Xs => Traits("IQ4_XS", 256, 2 + 2 + 256 / 2 + 256 / 64),
            Self::I8 => Traits("I8", 1, 1),
            Self::I16 => Traits("I16", 1, 2),
            Self::I32 => Traits("I32", 1, 4),
            Self::I64 => Traits("I64", 1, 8),
            Self::F64 => Traits("F64", 1, 8),
            Self::Iq1M => Traits("IQ1_M", 256, 256 / 8 + 256 / 16 + 256 / 32),
            Self::Bf16 => Traits("BF16", 1, 2),
            Self::Tq1_0 => Traits("TQ1_0", 256, 2 + 4 * 13),
            Self::Tq2_0 => Traits("TQ2_0", 256, 2 + 64),
            Self::Mxfp4 => Traits("MXFP4", 32, 1 + 16),
            Self::Nvfp4 => Traits("NVFP4", 64, 4 + 32),
            Self::Q1_0 => Traits("Q1_0", 128, 2 + 16),
            Self::Q2_0 => Traits("Q2_0", 64, 2 + 16),
        }
    }

    /// The type with this ggml id, if current llama.cpp defines it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The type with this name, ignoring ASCII case (`"q8_0"`, `"Q4_K"`, `"bf16"`).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The ggml id stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name as gguf-py prints it (`"Q4_K"`).
    pub fn name(self) -> &'static str {
        self.traits().0
    }

    /// Elements per block (1 for plain types).
    pub fn block_elems(self) -> u64 {
        u64::from(self.traits().1)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        u64::from(self.traits().2)
    }

    /// Whether values are stored in blocks with shared scales.
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            Self::F32
                | Self::F16
                | Self::Bf16
                | Self::F64
                | Self::I8
                | Self::I16
                | Self::I32
                | Self::I64
        )
    }

    /// Bytes of a tensor of this type with the given shape (ggml order, `ne0` first).
    ///
    /// `None` when `ne0` is not a whole number of blocks or the size does not fit in a `u64`.
    /// An empty shape is a scalar (one element).
    pub fn tensor_bytes(self, shape: &[u64]) -> Option<u64> {
        let ne0 = shape.first().copied().unwrap_or(1);
        if ne0 % self.block_elems() != 0 {
            return None;
        }
        let rows = shape
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        (ne0 / self.block_elems())
            .checked_mul(self.block_bytes())?
            .checked_mul(rows)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Names of ids llama.cpp defined once and has removed; files using them are rejected.
pub(crate) fn removed_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2",
        5 => "Q4_3",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, name, block elems, block bytes) as listed by gguf-py's `GGML_QUANT_SIZES` and
    /// ggml.c's `type_traits`; written out literally so the table above is checked against an
    /// independent transcription rather than against itself.
    const EXPECTED: &[(u32, &str, u64, u64)] = &[
        (0, "F32", 1, 4),
        (1, "F16", 1, 2),
        (2, "Q4_0", 32, 18),
        (3, "Q4_1", 32, 20),
        (6, "Q5_0", 32, 22),
        (7, "Q5_1", 32, 24),
        (8, "Q8_0", 32, 34),
        (9, "Q8_1", 32, 36),
        (10, "Q2_K", 256, 84),
        (11, "Q3_K", 256, 110),
        (12, "Q4_K", 256, 144),
        (13, "Q5_K", 256, 176),
        (14, "Q6_K", 256, 210),
        (15, "Q8_K", 256, 292),
        (16, "IQ2_XXS", 256, 66),
        (17, "IQ2_XS", 256, 74),
        (18, "IQ3_XXS", 256, 98),
        (19, "IQ1_S", 256, 50),
        (20, "IQ4_NL", 32, 18),
        (21, "IQ3_S", 256, 110),
        (22, "IQ2_S", 256, 82),
        (23, "IQ4_XS", 256, 136),
        (24, "I8", 1, 1),
        (25, "I16", 1, 2),
        (26, "I32", 1, 4),
        (27, "I64", 1, 8),
        (28, "F64", 1, 8),
        (29, "IQ1_M", 256, 56),
        (30, "BF16", 1, 2),
        (34, "TQ1_0", 256, 54),
        (35, "TQ2_0", 256, 66),
        (39, "MXFP4", 32, 17),
        (40, "NVFP4", 64, 36),
        (41, "Q1_0", 128, 18),
        (42, "Q2_0", 64, 18),
    ];

    #[test]
    fn table_matches_llama_cpp() {
        assert_eq!(GgmlType::ALL.len(), EXPECTED.len());
        for &(id, name, elems, bytes) in EXPECTED {
            let t = GgmlType::from_id(id).unwrap_or_else(|| panic!("id {id} missing"));
            assert_eq!(
                (t.id(), t.name(), t.block_elems(), t.block_bytes()),
                (id, name, elems, bytes)
            );
            assert_eq!(GgmlType::from_name(&name.to_ascii_lowercase()), Some(t));
        }
    }

    #[test]
    fn every_id_below_count_is_known_or_removed() {
        for id in 0..43 {
            let known = GgmlType::from_id(id).is_some();
            let removed = removed_type_name(id).is_some();
            assert!(
                known != removed,
                "id {id}: known {known}, removed {removed}"
            );
        }
        assert_eq!(GgmlType::from_id(43), None);
        assert_eq!(removed_type_name(43), None);
    }

    #[test]
    fn tensor_bytes_checks_blocks_and_overflow() {
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[768, 3072]), Some(2_506_752));
        assert_eq!(
            GgmlType::Q6K.tensor_bytes(&[768, 262_144]),
            Some(165_150_720)
        );
        assert_eq!(GgmlType::F32.tensor_bytes(&[]), Some(4));
        assert_eq!(GgmlType::F32.tensor_bytes(&[0, 5]), Some(0));
        assert_eq!(GgmlType::Q4K.tensor_bytes(&[100]), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[1 << 62]), None);
        assert_eq!(
            GgmlType::F32.tensor_bytes(&[1 << 31, 1 << 31, 1 << 31]),
            None
        );
    }

    #[test]
    fn quantized_flag() {
        assert!(!GgmlType::F32.is_quantized());
        assert!(!GgmlType::Bf16.is_quantized());
        assert!(GgmlType::Q8_0.is_quantized());
        assert!(GgmlType::Q2_0.is_quantized());
    }
}
