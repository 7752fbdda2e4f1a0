//! Metadata values: the borrowed form the reader hands out and the owned form the writer takes.

use crate::cursor::Cursor;
use crate::error::GgufError;

/// Arrays may nest at most this deep (an array of arrays is depth 2).
///
/// The limit bounds the parser's recursion on hostile input; real files use depth 1.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// The type tag of a metadata value, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u32)]
pub enum ValueType {
    /// `u8`
    U8 = 0,
    /// `i8`
    I8 = 1,
    /// `u16`
    U16 = 2,
    /// `i16`
    I16 = 3,
    /// `u32`
    U32 = 4,
    /// `i32`
    I32 = 5,
    /// `f32`
    F32 = 6,
    /// A byte, non-zero meaning true.
    Bool = 7,
    /// Length-prefixed UTF-8.
    String = 8,
    /// Element type, length, elements.
    Array = 9,
    /// `u64`
    U64 = 10,
    /// `i64`
    I64 = 11,
    /// `f64`
    F64 = 12,
}

impl ValueType {
    /// The type with this id, if any.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name gguf-py uses (`"UINT32"`, `"STRING"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "UINT8",
            Self::I8 => "INT8",
            Self::U16 => "UINT16",
            Self::I16 => "INT16",
            Self::U32 => "UINT32",
            Self::I32 => "INT32",
            Self::F32 => "FLOAT32",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::Array => "ARRAY",
            Self::U64 => "UINT64",
            Self::I64 => "INT64",
            Self::F64 => "FLOAT64",
        }
    }

    /// Encoded size of one value, for fixed-size types.
    pub(crate) fn fixed_size(self) -> Option<usize> {
        Some(match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::String | Self::Array => return None,
        })
    }

    /// The fewest bytes one value of this type can occupy; counts are checked against it
    /// before any loop or allocation.
    pub(crate) fn min_size(self) -> u64 {
        match self.fixed_size() {
            Some(n) => n as u64,
            None if self == Self::String => 8,
            None => 4 + 8,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value borrowed from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `f32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// A UTF-8 string.
    Str(&'a str),
    /// An array; elements are decoded as they are visited.
    Array(Array<'a>),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f64`
    F64(f64),
}

impl<'a> Value<'a> {
    /// The stored type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, widened.
    pub(crate) fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as `u32` if it is an integer of any type that fits.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    /// The value as `i32` if it is an integer of any type that fits.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_i128().and_then(|v| i32::try_from(v).ok())
    }

    /// The value as `u64` if it is a non-negative integer of any type.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as `f32` if it is `F32`, or `F64` narrowed.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// The value if it is a `bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is an array.
    pub fn as_array(&self) -> Option<Array<'a>> {
        match *self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }

    /// A copy that owns its strings, for writing into another file.
    pub fn to_owned_value(&self) -> OwnedValue {
        match *self {
            Value::U8(v) => OwnedValue::U8(v),
            Value::I8(v) => OwnedValue::I8(v),
            Value::U16(v) => OwnedValue::U16(v),
            Value::I16(v) => OwnedValue::I16(v),
            Value::U32(v) => OwnedValue::U32(v),
            Value::I32(v) => OwnedValue::I32(v),
            Value::F32(v) => OwnedValue::F32(v),
            Value::Bool(v) => OwnedValue::Bool(v),
            Value::Str(v) => OwnedValue::Str(v.to_owned()),
            Value::Array(a) => OwnedValue::Array(a.to_owned_array()),
            Value::U64(v) => OwnedValue::U64(v),
            Value::I64(v) => OwnedValue::I64(v),
            Value::F64(v) => OwnedValue::F64(v),
        }
    }
}

/// An array value: its element type, length and the still-encoded elements.
///
/// Elements were fully validated when the file was parsed; visiting them only decodes.
/// Fixed-size elements are reached in O(1), strings and nested arrays by walking.
#[derive(Clone, Copy, PartialEq)]
pub struct Array<'a> {
    elem_type: ValueType,
    len: usize,
    raw: &'a [u8],
    base: u64,
    depth: u32,
}

impl<'a> Array<'a> {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem_type
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements (little-endian, as in the file).
    pub fn raw_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            cursor: Cursor::with_base(self.raw, self.base),
            elem_type: self.elem_type,
            remaining: self.len,
            depth: self.depth,
        }
    }

    /// The elements as `&str` without copying, if this is an array of strings.
    pub fn strings(&self) -> Option<StrIter<'a>> {
        (self.elem_type == ValueType::String).then(|| StrIter { inner: self.iter() })
    }

    /// Element `i`.
    pub fn get(&self, i: usize) -> Option<Value<'a>> {
        if i >= self.len {
            return None;
        }
        match self.elem_type.fixed_size() {
            Some(size) => {
                let start = i * size;
                let bytes = self.raw.get(start..start + size)?;
                let mut c = Cursor::with_base(bytes, self.base + start as u64);
                Some(decode_validated(&mut c, self.elem_type, self.depth))
            }
            None => self.iter().nth(i),
        }
    }

    /// A copy that owns its strings.
    pub fn to_owned_array(&self) -> OwnedArray {
        fn collect<T>(a: &Array<'_>, f: impl Fn(Value<'_>) -> Option<T>) -> Vec<T> {
            a.iter().filter_map(f).collect()
        }
        match self.elem_type {
            ValueType::U8 => OwnedArray::U8(collect(self, |v| match v {
                Value::U8(x) => Some(x),
                _ => None,
            })),
            ValueType::I8 => OwnedArray::I8(collect(self, |v| match v {
                Value::I8(x) => Some(x),
                _ => None,
            })),
            ValueType::U16 => OwnedArray::U16(collect(self, |v| match v {
                Value::U16(x) => Some(x),
                _ => None,
            })),
            ValueType::I16 => OwnedArray::I16(collect(self, |v| match v {
                Value::I16(x) => Some(x),
                _ => None,
            })),
            ValueType::U32 => OwnedArray::U32(collect(self, |v| match v {
                Value::U32(x) => Some(x),
                _ => None,
            })),
            ValueType::I32 => OwnedArray::I32(collect(self, |v| match v {
                Value::I32(x) => Some(x),
                _ => None,
            })),
            ValueType::F32 => OwnedArray::F32(collect(self, |v| match v {
                Value::F32(x) => Some(x),
                _ => None,
            })),
            ValueType::Bool => OwnedArray::Bool(collect(self, |v| v.as_bool())),
            ValueType::String => OwnedArray::Str(collect(self, |v| v.as_str().map(str::to_owned))),
            ValueType::Array => {
                OwnedArray::Array(collect(self, |v| v.as_array().map(|a| a.to_owned_array())))
            }
            ValueType::U64 => OwnedArray::U64(collect(self, |v| match v {
                Value::U64(x) => Some(x),
                _ => None,
            })),
            ValueType::I64 => OwnedArray::I64(collect(self, |v| match v {
                Value::I64(x) => Some(x),
                _ => None,
            })),
            ValueType::F64 => OwnedArray::F64(collect(self, |v| match v {
                Value::F64(x) => Some(x),
                _ => None,
            })),
        }
    }
}

/// Shows type and length only: a vocabulary's raw bytes are megabytes.
impl std::fmt::Debug for Array<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("elem_type", &self.elem_type)
            .field("len", &self.len)
            .field("offset", &self.base)
            .finish_non_exhaustive()
    }
}

impl<'a> IntoIterator for Array<'a> {
    type Item = Value<'a>;
    type IntoIter = ArrayIter<'a>;
    fn into_iter(self) -> ArrayIter<'a> {
        self.iter()
    }
}

/// Iterator over an [`Array`]'s elements.
#[derive(Debug, Clone)]
pub struct ArrayIter<'a> {
    cursor: Cursor<'a>,
    elem_type: ValueType,
    remaining: usize,
    depth: u32,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(decode_validated(
            &mut self.cursor,
            self.elem_type,
            self.depth,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// Iterator over an array of strings, borrowing each from the file.
#[derive(Debug, Clone)]
pub struct StrIter<'a> {
    inner: ArrayIter<'a>,
}

impl<'a> Iterator for StrIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.inner.next().and_then(|v| v.as_str())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for StrIter<'_> {}

/// Decodes a value the parser has already validated; failure would be a bug in this crate.
fn decode_validated<'a>(cursor: &mut Cursor<'a>, ty: ValueType, depth: u32) -> Value<'a> {
    match parse_value(cursor, ty, depth, false) {
        Ok(v) => v,
        Err(e) => unreachable!("metadata was validated at parse time, yet re-decoding failed: {e}"),
    }
}

/// Reads one value of type `ty`; `depth` is the nesting level of the array holding it
/// (0 at top level). With `check` false, strings inside arrays are skipped by length without
/// UTF-8 validation: for re-decoding what an earlier checked pass accepted.
pub(crate) fn parse_value<'a>(
    cur: &mut Cursor<'a>,
    ty: ValueType,
    depth: u32,
    check: bool,
) -> Result<Value<'a>, GgufError> {
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.u8("u8 value")?),
        ValueType::I8 => Value::I8(cur.u8("i8 value")? as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array("u16 value")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array("i16 value")?)),
        ValueType::U32 => Value::U32(cur.u32("u32 value")?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array("i32 value")?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array("f32 value")?)),
        ValueType::Bool => Value::Bool(cur.u8("bool value")? != 0),
        ValueType::String => Value::Str(cur.string("string value")?),
        ValueType::U64 => Value::U64(cur.u64("u64 value")?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array("i64 value")?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array("f64 value")?)),
        ValueType::Array => Value::Array(parse_array(cur, depth + 1, check)?),
    })
}

fn parse_array<'a>(cur: &mut Cursor<'a>, depth: u32, check: bool) -> Result<Array<'a>, GgufError> {
    let type_offset = cur.offset();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: type_offset,
            max: MAX_ARRAY_DEPTH,
        });
    }
    let id = cur.u32("array element type")?;
    let elem_type = ValueType::from_id(id).ok_or(GgufError::UnknownValueType {
        id,
        offset: type_offset,
    })?;
    let len = cur.count("array length", elem_type.min_size())?;
    let start = cur.position();
    let base = cur.offset();
    match elem_type.fixed_size() {
        // `count` checked len * size against the remaining bytes, so this cannot overflow.
        Some(size) => {
            cur.take(len * size as u64, "array elements")?;
        }
        None if elem_type == ValueType::String => cur.skip_strings(len, check)?,
        None => {
            for _ in 0..len {
                parse_value(cur, elem_type, depth, check)?;
            }
        }
    }
    let raw = cur.since(start);
    Ok(Array {
        elem_type,
        len: len as usize,
        raw,
        base,
        depth,
    })
}

/// A metadata value the writer owns.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OwnedValue {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `f32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// A string.
    Str(String),
    /// An array.
    Array(OwnedArray),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f64`
    F64(f64),
}

/// An array the writer owns; every element has the same type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OwnedArray {
    /// `u8` elements.
    U8(Vec<u8>),
    /// `i8` elements.
    I8(Vec<i8>),
    /// `u16` elements.
    U16(Vec<u16>),
    /// `i16` elements.
    I16(Vec<i16>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f32` elements.
    F32(Vec<f32>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// String elements.
    Str(Vec<String>),
    /// Array elements (each with its own element type). llama.cpp cannot read these.
    Array(Vec<OwnedArray>),
    /// `u64` elements.
    U64(Vec<u64>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `f64` elements.
    F64(Vec<f64>),
}

impl OwnedValue {
    /// The type tag this value is written with.
    pub fn value_type(&self) -> ValueType {
        match self {
            OwnedValue::U8(_) => ValueType::U8,
            OwnedValue::I8(_) => ValueType::I8,
            OwnedValue::U16(_) => ValueType::U16,
            OwnedValue::I16(_) => ValueType::I16,
            OwnedValue::U32(_) => ValueType::U32,
            OwnedValue::I32(_) => ValueType::I32,
            OwnedValue::F32(_) => ValueType::F32,
            OwnedValue::Bool(_) => ValueType::Bool,
            OwnedValue::Str(_) => ValueType::String,
            OwnedValue::Array(_) => ValueType::Array,
            OwnedValue::U64(_) => ValueType::U64,
            OwnedValue::I64(_) => ValueType::I64,
            OwnedValue::F64(_) => ValueType::F64,
        }
    }
}

impl OwnedArray {
    /// The element type tag.
    pub fn elem_type(&self) -> ValueType {
        match self {
            OwnedArray::U8(_) => ValueType::U8,
            OwnedArray::I8(_) => ValueType::I8,
            OwnedArray::U16(_) => ValueType::U16,
            OwnedArray::I16(_) => ValueType::I16,
            OwnedArray::U32(_) => ValueType::U32,
            OwnedArray::I32(_) => ValueType::I32,
            OwnedArray::F32(_) => ValueType::F32,
            OwnedArray::Bool(_) => ValueType::Bool,
            OwnedArray::Str(_) => ValueType::String,
            OwnedArray::Array(_) => ValueType::Array,
            OwnedArray::U64(_) => ValueType::U64,
            OwnedArray::I64(_) => ValueType::I64,
            OwnedArray::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            OwnedArray::U8(v) => v.len(),
            OwnedArray::I8(v) => v.len(),
            OwnedArray::U16(v) => v.len(),
            OwnedArray::I16(v) => v.len(),
            OwnedArray::U32(v) => v.len(),
            OwnedArray::I32(v) => v.len(),
            OwnedArray::F32(v) => v.len(),
            OwnedArray::Bool(v) => v.len(),
            OwnedArray::Str(v) => v.len(),
            OwnedArray::Array(v) => v.len(),
            OwnedArray::U64(v) => v.len(),
            OwnedArray::I64(v) => v.len(),
            OwnedArray::F64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for OwnedValue {
            fn from(x: $t) -> Self { OwnedValue::$v(x) }
        }
        impl From<Vec<$t>> for OwnedArray {
            fn from(x: Vec<$t>) -> Self { OwnedArray::$v(x) }
        }
        impl From<Vec<$t>> for OwnedValue {
            fn from(x: Vec<$t>) -> Self { OwnedValue::Array(OwnedArray::$v(x)) }
        }
    )*};
}

from_scalar!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, u64 => U64, i64 => I64, f64 => F64);

impl From<String> for OwnedValue {
    fn from(x: String) -> Self {
        OwnedValue::Str(x)
    }
}

impl From<&str> for OwnedValue {
    fn from(x: &str) -> Self {
        OwnedValue::Str(x.to_owned())
    }
}

impl From<Vec<String>> for OwnedValue {
    fn from(x: Vec<String>) -> Self {
        OwnedValue::Array(OwnedArray::Str(x))
    }
}

impl From<Vec<&str>> for OwnedValue {
    fn from(x: Vec<&str>) -> Self {
        OwnedValue::Array(OwnedArray::Str(x.into_iter().map(str::to_owned).collect()))
    }
}

impl From<Vec<String>> for OwnedArray {
    fn from(x: Vec<String>) -> Self {
        OwnedArray::Str(x)
    }
}

impl From<OwnedArray> for OwnedValue {
    fn from(x: OwnedArray) -> Self {
        OwnedValue::Array(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn string_array_iterates_without_copies() {
        let bytes = le(&[
            &8u32.to_le_bytes(),
            &2u64.to_le_bytes(),
            &2u64.to_le_bytes(),
            b"ab",
            &3u64.to_le_bytes(),
            "\u{2581}".as_bytes(),
        ]);
        let mut c = Cursor::with_base(&bytes, 100);
        let a = parse_array(&mut c, 1, true).unwrap();
        assert_eq!(a.len(), 2);
        let s: Vec<&str> = a.strings().unwrap().collect();
        assert_eq!(s, ["ab", "\u{2581}"]);
        // The strings point into `bytes`, not into a copy.
        assert!(bytes.as_ptr_range().contains(&s[0].as_ptr()));
        assert_eq!(a.get(1), Some(Value::Str("\u{2581}")));
        assert_eq!(a.get(2), None);
    }

    #[test]
    fn fixed_arrays_index_directly() {
        let bytes = le(&[
            &6u32.to_le_bytes(),
            &3u64.to_le_bytes(),
            &1.5f32.to_le_bytes(),
            &(-2f32).to_le_bytes(),
            &0f32.to_le_bytes(),
        ]);
        let a = parse_array(&mut Cursor::with_base(&bytes, 0), 1, true).unwrap();
        assert_eq!(a.get(1), Some(Value::F32(-2.0)));
        assert_eq!(a.to_owned_array(), OwnedArray::F32(vec![1.5, -2.0, 0.0]));
    }

    #[test]
    fn nested_arrays_are_limited() {
        // MAX_ARRAY_DEPTH + 1 levels of one-element arrays of arrays.
        let mut bytes = Vec::new();
        for _ in 0..MAX_ARRAY_DEPTH + 1 {
            bytes.extend_from_slice(&9u32.to_le_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
        }
        bytes.extend_from_slice(&[0; 64]);
        let err =
            parse_value(&mut Cursor::with_base(&bytes, 0), ValueType::Array, 0, true).unwrap_err();
        assert!(
            matches!(err, GgufError::NestingTooDeep { offset, .. } if offset == 12 * u64::from(MAX_ARRAY_DEPTH)),
            "{err}"
        );
    }

    #[test]
    fn absurd_array_length_is_rejected_before_work() {
        let bytes = le(&[&0u32.to_le_bytes(), &(1u64 << 40).to_le_bytes(), &[0; 16]]);
        let err = parse_array(&mut Cursor::with_base(&bytes, 50), 1, true).unwrap_err();
        assert!(
            matches!(err, GgufError::TooLong { offset: 54, count, available: 16, .. } if count == 1 << 40),
            "{err}"
        );
    }

    #[test]
    fn integer_conversions_check_range() {
        assert_eq!(Value::U64(7).as_u32(), Some(7));
        assert_eq!(Value::I32(-1).as_u32(), None);
        assert_eq!(Value::U64(1 << 40).as_u32(), None);
        assert_eq!(Value::I8(-3).as_i32(), Some(-3));
        assert_eq!(Value::F32(1.0).as_u32(), None);
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
    }
}
