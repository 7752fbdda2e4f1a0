//! A small reader for SentencePiece's `tokenizer.model` (a `ModelProto` protobuf).
//!
//! Only the fields the GGUF conversion needs are decoded: every piece (`piece`, `score`, `type`),
//! and a few `TrainerSpec` / `NormalizerSpec` fields that say what kind of tokenizer this is.
//! Unknown fields are skipped as the protobuf wire format allows, so newer SentencePiece files
//! still load. The reader never panics: truncated varints, lengths past the end, invalid UTF-8,
//! group wire types and out-of-range enum values are all typed errors.

use thiserror::Error;

/// The kind of a SentencePiece piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceType {
    /// An ordinary piece.
    Normal,
    /// The unknown-token piece.
    Unknown,
    /// A control symbol such as `<bos>`; never produced from text.
    Control,
    /// A piece the user declared; always matched as a whole.
    UserDefined,
    /// A piece present in the vocabulary but never produced.
    Unused,
    /// A byte-fallback piece `<0xNN>`.
    Byte,
}

impl PieceType {
    fn from_wire(value: u64) -> Option<Self> {
        Some(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece's text (spaces appear as U+2581).
    pub piece: String,
    /// The piece's score (a log probability for unigram models, a merge rank for BPE models).
    pub score: f32,
    /// The piece's kind.
    pub kind: PieceType,
}

/// The algorithm a SentencePiece model was trained with (`TrainerSpec.ModelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// Unigram language model (SentencePiece's default).
    Unigram,
    /// Byte-pair encoding (Gemma's tokenizers).
    Bpe,
    /// Whitespace-delimited words.
    Word,
    /// Single characters.
    Char,
}

/// The `TrainerSpec` fields the converter reports (defaults as in `sentencepiece_model.proto`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    /// Training algorithm.
    pub model_type: ModelType,
    /// Declared vocabulary size.
    pub vocab_size: Option<u32>,
    /// Whether unknown bytes fall back to `<0xNN>` pieces.
    pub byte_fallback: bool,
    /// Id of the unknown piece.
    pub unk_id: i32,
    /// Id of the beginning-of-sequence piece (-1: none).
    pub bos_id: i32,
    /// Id of the end-of-sequence piece (-1: none).
    pub eos_id: i32,
    /// Id of the padding piece (-1: none).
    pub pad_id: i32,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            vocab_size: None,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// The `NormalizerSpec` fields the converter reports (defaults as in the proto).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// Name of the normalization rule (`nmt_nfkc`, `identity`, ...).
    pub name: Option<String>,
    /// Whether a space is prepended to the input.
    pub add_dummy_prefix: bool,
    /// Whether runs of whitespace are collapsed.
    pub remove_extra_whitespaces: bool,
    /// Whether spaces are replaced by U+2581.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self { name: None, add_dummy_prefix: true, remove_extra_whitespaces: true, escape_whitespaces: true }
    }
}

/// A decoded `tokenizer.model`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SentencePieceModel {
    /// Every piece, in id order.
    pub pieces: Vec<Piece>,
    /// Training settings.
    pub trainer: TrainerSpec,
    /// Normalization settings.
    pub normalizer: NormalizerSpec,
}

/// Why a `tokenizer.model` could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SentencePieceError {
    /// The input ended inside a field.
    #[error("tokenizer.model truncated at byte {offset} (needed {needed} more bytes)")]
    Truncated {
        /// Absolute offset where more bytes were needed.
        offset: usize,
        /// How many more bytes were needed.
        needed: usize,
    },
    /// A varint ran longer than 10 bytes.
    #[error("tokenizer.model has an over-long varint at byte {offset}")]
    VarintTooLong {
        /// Absolute offset of the varint.
        offset: usize,
    },
    /// A wire type this reader does not accept (3, 4: groups; 6, 7: undefined).
    #[error("tokenizer.model has unsupported wire type {wire_type} at byte {offset}")]
    BadWireType {
        /// The wire type.
        wire_type: u8,
        /// Absolute offset of the field tag.
        offset: usize,
    },
    /// A known field had the wrong wire type.
    #[error("tokenizer.model field {field} has wire type {wire_type}, expected {expected}")]
    WrongWireType {
        /// Field number.
        field: u64,
        /// Wire type found.
        wire_type: u8,
        /// Wire type expected.
        expected: u8,
    },
    /// A piece's text was not UTF-8.
    #[error("piece {index} of tokenizer.model is not valid UTF-8")]
    InvalidUtf8 {
        /// Index of the piece.
        index: usize,
    },
    /// A piece had a type outside 1..=6.
    #[error("piece {index} of tokenizer.model has unknown type {value}")]
    InvalidPieceType {
        /// Index of the piece.
        index: usize,
        /// The value found.
        value: u64,
    },
    /// `trainer_spec.model_type` outside 1..=4.
    #[error("tokenizer.model has unknown model type {value}")]
    InvalidModelType {
        /// The value found.
        value: u64,
    },
    /// The model holds no pieces at all.
    #[error("tokenizer.model holds no pieces")]
    NoPieces,
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// A field value as it appears on the wire.
enum Value<'a> {
    Varint(u64),
    I64,
    Len(&'a [u8]),
    I32(u32),
}

/// A protobuf message reader over a borrowed slice; `base` is the slice's absolute offset, kept
/// only so errors can name a position in the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SentencePieceError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(SentencePieceError::Truncated {
                offset: self.offset(),
                needed: n - (self.buf.len() - self.pos),
            }),
        }
    }

    fn varint(&mut self) -> Result<u64, SentencePieceError> {
        let start = self.offset();
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SentencePieceError::VarintTooLong { offset: start })
    }

    /// Next field as (field number, value), or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, SentencePieceError> {
        if self.at_end() {
            return Ok(None);
        }
        let tag_offset = self.offset();
        let tag = self.varint()?;
        let wire_type = (tag & 7) as u8;
        let field = tag >> 3;
        let value = match wire_type {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_I64 => {
                self.take(8)?;
                Value::I64
            }
            WIRE_LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| SentencePieceError::Truncated {
                    offset: self.offset(),
                    needed: usize::MAX,
                })?;
                Value::Len(self.take(len)?)
            }
            WIRE_I32 => {
                let b = self.take(4)?;
                Value::I32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(SentencePieceError::BadWireType { wire_type: other, offset: tag_offset }),
        };
        Ok(Some((field, value)))
    }
}

fn wire_type_of(value: &Value<'_>) -> u8 {
    match value {
        Value::Varint(_) => WIRE_VARINT,
        Value::I64 => WIRE_I64,
        Value::Len(_) => WIRE_LEN,
        Value::I32(_) => WIRE_I32,
    }
}

fn expect_varint(field: u64, value: &Value<'_>) -> Result<u64, SentencePieceError> {
    match value {
        Value::Varint(v) => Ok(*v),
        other => Err(SentencePieceError::WrongWireType { field, wire_type: wire_type_of(other), expected: WIRE_VARINT }),
    }
}

fn expect_len<'a>(field: u64, value: &Value<'a>) -> Result<&'a [u8], SentencePieceError> {
    match value {
        Value::Len(b) => Ok(b),
        other => Err(SentencePieceError::WrongWireType { field, wire_type: wire_type_of(other), expected: WIRE_LEN }),
    }
}

/// Protobuf int32 fields are sign-extended to 64 bits on the wire; truncation recovers them.
fn as_int32(v: u64) -> i32 {
    v as u32 as i32
}

impl SentencePieceModel {
    /// Decodes a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SentencePieceError> {
        let mut model = SentencePieceModel::default();
        let mut reader = Reader::new(bytes, 0);
        while let Some((field, value)) = reader.field()? {
            // Offset of the value's first byte, for nested error positions.
            let nested_base = reader.offset() - if let Value::Len(b) = &value { b.len() } else { 0 };
            match field {
                1 => {
                    let msg = expect_len(field, &value)?;
                    let index = model.pieces.len();
                    model.pieces.push(parse_piece(msg, nested_base, index)?);
                }
                2 => model.trainer = parse_trainer(expect_len(field, &value)?, nested_base)?,
                3 => model.normalizer = parse_normalizer(expect_len(field, &value)?, nested_base)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(SentencePieceError::NoPieces);
        }
        Ok(model)
    }
}

fn parse_piece(msg: &[u8], base: usize, index: usize) -> Result<Piece, SentencePieceError> {
    let mut reader = Reader::new(msg, base);
    let mut piece = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => {
                let text = expect_len(field, &value)?;
                piece.piece = std::str::from_utf8(text)
                    .map_err(|_| SentencePieceError::InvalidUtf8 { index })?
                    .to_owned();
            }
            2 => match value {
                Value::I32(bits) => piece.score = f32::from_bits(bits),
                other => {
                    return Err(SentencePieceError::WrongWireType {
                        field,
                        wire_type: wire_type_of(&other),
                        expected: WIRE_I32,
                    });
                }
            },
            3 => {
                let raw = expect_varint(field, &value)?;
                piece.kind =
                    PieceType::from_wire(raw).ok_or(SentencePieceError::InvalidPieceType { index, value: raw })?;
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(msg: &[u8], base: usize) -> Result<TrainerSpec, SentencePieceError> {
    let mut reader = Reader::new(msg, base);
    let mut spec = TrainerSpec::default();
    while let Some((field, value)) = reader.field()? {
        match field {
            3 => {
                let raw = expect_varint(field, &value)?;
                spec.model_type = match raw {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    _ => return Err(SentencePieceError::InvalidModelType { value: raw }),
                };
            }
            4 => spec.vocab_size = Some(expect_varint(field, &value)? as u32),
            35 => spec.byte_fallback = expect_varint(field, &value)? != 0,
            40 => spec.unk_id = as_int32(expect_varint(field, &value)?),
            41 => spec.bos_id = as_int32(expect_varint(field, &value)?),
            42 => spec.eos_id = as_int32(expect_varint(field, &value)?),
            43 => spec.pad_id = as_int32(expect_varint(field, &value)?),
            _ => {}
        }
    }
    Ok(spec)
}

fn parse_normalizer(msg: &[u8], base: usize) -> Result<NormalizerSpec, SentencePieceError> {
    let mut reader = Reader::new(msg, base);
    let mut spec = NormalizerSpec::default();
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => spec.name = Some(String::from_utf8_lossy(expect_len(field, &value)?).into_owned()),
            3 => spec.add_dummy_prefix = expect_varint(field, &value)? != 0,
            4 => spec.remove_extra_whitespaces = expect_varint(field, &value)? != 0,
            5 => spec.escape_whitespaces = expect_varint(field, &value)? != 0,
            _ => {}
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn tag(field: u64, wire: u8, out: &mut Vec<u8>) {
        varint((field << 3) | u64::from(wire), out);
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        tag(field, WIRE_LEN, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut p = Vec::new();
        len_field(1, text.as_bytes(), &mut p);
        tag(2, WIRE_I32, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        if let Some(k) = kind {
            tag(3, WIRE_VARINT, &mut p);
            varint(k, &mut p);
        }
        p
    }

    fn sample() -> Vec<u8> {
        let mut m = Vec::new();
        len_field(1, &piece("<pad>", 0.0, Some(3)), &mut m);
        len_field(1, &piece("▁the", -1.5, None), &mut m);
        len_field(1, &piece("<0x00>", 0.0, Some(6)), &mut m);
        let mut trainer = Vec::new();
        tag(3, WIRE_VARINT, &mut trainer);
        varint(2, &mut trainer);
        tag(35, WIRE_VARINT, &mut trainer);
        varint(1, &mut trainer);
        tag(43, WIRE_VARINT, &mut trainer);
        varint(0, &mut trainer);
        tag(41, WIRE_VARINT, &mut trainer);
        varint(u64::MAX, &mut trainer); // -1 as protobuf int32
        len_field(2, &trainer, &mut m);
        let mut norm = Vec::new();
        len_field(1, b"identity", &mut norm);
        tag(3, WIRE_VARINT, &mut norm);
        varint(0, &mut norm);
        len_field(3, &norm, &mut m);
        // An unknown 64-bit field and an unknown length field must be skipped.
        tag(9, WIRE_I64, &mut m);
        m.extend_from_slice(&[0; 8]);
        len_field(4, b"self test data", &mut m);
        m
    }

    #[test]
    fn decodes_pieces_and_specs() {
        let model = SentencePieceModel::parse(&sample()).unwrap();
        assert_eq!(model.pieces.len(), 3);
        assert_eq!(model.pieces[0], Piece { piece: "<pad>".into(), score: 0.0, kind: PieceType::Control });
        assert_eq!(model.pieces[1], Piece { piece: "▁the".into(), score: -1.5, kind: PieceType::Normal });
        assert_eq!(model.pieces[2].kind, PieceType::Byte);
        assert_eq!(model.trainer.model_type, ModelType::Bpe);
        assert!(model.trainer.byte_fallback);
        assert_eq!(model.trainer.pad_id, 0);
        assert_eq!(model.trainer.bos_id, -1);
        assert_eq!(model.trainer.eos_id, 2, "unset fields keep the proto default");
        assert_eq!(model.normalizer.name.as_deref(), Some("identity"));
        assert!(!model.normalizer.add_dummy_prefix);
        assert!(model.normalizer.remove_extra_whitespaces);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            // A cut may land exactly on a field boundary, which is a valid (shorter) message.
            if let Err(e) = SentencePieceModel::parse(&bytes[..cut]) {
                assert!(
                    matches!(e, SentencePieceError::Truncated { .. } | SentencePieceError::NoPieces),
                    "cut {cut}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(SentencePieceModel::parse(&[]), Err(SentencePieceError::NoPieces));
        // Wire type 3 (start group).
        assert!(matches!(SentencePieceModel::parse(&[0x0b]), Err(SentencePieceError::BadWireType { wire_type: 3, .. })));
        // Eleven continuation bytes.
        let mut long = vec![0x08];
        long.extend_from_slice(&[0xff; 11]);
        assert!(matches!(SentencePieceModel::parse(&long), Err(SentencePieceError::VarintTooLong { .. })));
        // Length past the end.
        assert!(matches!(
            SentencePieceModel::parse(&[0x0a, 0x05, 0x01]),
            Err(SentencePieceError::Truncated { offset: 2, needed: 4 })
        ));
        // Pieces field sent as a varint.
        assert!(matches!(
            SentencePieceModel::parse(&[0x08, 0x01]),
            Err(SentencePieceError::WrongWireType { field: 1, wire_type: 0, expected: 2 })
        ));
        let mut bad_type = Vec::new();
        len_field(1, &piece("x", 0.0, Some(9)), &mut bad_type);
        assert_eq!(
            SentencePieceModel::parse(&bad_type),
            Err(SentencePieceError::InvalidPieceType { index: 0, value: 9 })
        );
        let mut bad_utf8 = Vec::new();
        let mut p = Vec::new();
        len_field(1, &[0xff, 0xfe], &mut p);
        len_field(1, &p, &mut bad_utf8);
        assert_eq!(SentencePieceModel::parse(&bad_utf8), Err(SentencePieceError::InvalidUtf8 { index: 0 }));
    }
}
