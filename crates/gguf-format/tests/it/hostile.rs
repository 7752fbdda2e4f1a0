//! Hostile input: every malformation is a typed error naming what and where, never a panic,
//! never an allocation sized from an unchecked header number.

use gguf_format::{GgmlType, Gguf, GgufError, GgufWriter, OwnedArray, OwnedValue, ValueType};

use crate::support::Raw;

fn parse(bytes: &[u8]) -> GgufError {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("hostile input parsed"),
        Err(e) => {
            // Every message is one lowercase line.
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.ends_with('.'), "{msg}");
            assert!(msg.starts_with(|c: char| !c.is_uppercase()), "{msg}");
            e
        }
    }
}

/// A small file touching every value type, nested arrays and several tensor types.
fn rich_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "gemma-embedding")
        .unwrap();
    w.add_metadata("u8", 1u8).unwrap();
    w.add_metadata("i8", -1i8).unwrap();
    w.add_metadata("u16", 2u16).unwrap();
    w.add_metadata("i16", -2i16).unwrap();
    w.add_metadata("u32", 3u32).unwrap();
    w.add_metadata("i32", -3i32).unwrap();
    w.add_metadata("f32", 0.5f32).unwrap();
    w.add_metadata("bool", true).unwrap();
    w.add_metadata("u64", 4u64).unwrap();
    w.add_metadata("i64", -4i64).unwrap();
    w.add_metadata("f64", 0.25f64).unwrap();
    w.add_metadata("tokens", vec!["<pad>", "<eos>", "\u{2581}a"])
        .unwrap();
    w.add_metadata("scores", vec![0.0f32, 1.0, 2.0]).unwrap();
    w.add_metadata(
        "nested",
        OwnedArray::Array(vec![
            OwnedArray::Str(vec!["x".into()]),
            OwnedArray::Array(vec![OwnedArray::Bool(vec![true])]),
        ]),
    )
    .unwrap();
    w.add_tensor("a", &[64, 2], GgmlType::Q8_0).unwrap();
    w.add_tensor("b", &[3], GgmlType::F32).unwrap();
    w.add_tensor("c", &[256], GgmlType::Q4K).unwrap();
    w.to_bytes(&[&[7; 136], &[8; 12], &[9; 144]]).unwrap()
}

#[test]
fn every_truncation_is_an_error_at_or_before_the_cut() {
    let bytes = rich_file();
    let file = Gguf::parse(&bytes[..]).unwrap();
    let data_end = file
        .tensors()
        .map(|t| t.offset as usize + t.data.len())
        .max()
        .unwrap();
    for cut in 0..bytes.len() {
        match Gguf::parse(&bytes[..cut]) {
            Ok(_) => assert!(cut >= data_end, "parsed when cut at {cut} < {data_end}"),
            Err(e) => {
                assert!(cut < data_end, "cut at {cut} failed: {e}");
                let at = match e {
                    GgufError::Truncated {
                        offset,
                        needed,
                        available,
                        ..
                    } => {
                        assert!(needed > available);
                        offset + available
                    }
                    GgufError::TooLong {
                        offset,
                        needed,
                        available,
                        ..
                    } => {
                        assert!(needed > available);
                        offset
                    }
                    GgufError::TensorOutOfBounds { end, file_len, .. } => {
                        assert!(end > file_len);
                        file_len
                    }
                    other => panic!("cut at {cut}: unexpected {other}"),
                };
                assert!(at <= cut as u64, "cut at {cut}: error points at {at}");
            }
        }
    }
}

#[test]
fn bad_magic() {
    let err = parse(b"GGML\x03\0\0\0");
    assert!(
        matches!(
            err,
            GgufError::BadMagic {
                found: [b'G', b'G', b'M', b'L']
            }
        ),
        "{err}"
    );
    let err = parse(b"GG");
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                what: "magic",
                offset: 0,
                needed: 4,
                available: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, 0xFFFF_FFFF] {
        let err = parse(&Raw::header(v, 0, 0).bytes);
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version } if version == v),
            "{err}"
        );
    }
    let err = parse(&Raw::header(0x0300_0000, 0, 0).bytes);
    assert!(
        matches!(
            err,
            GgufError::BigEndian {
                version: 0x0300_0000
            }
        ),
        "{err}"
    );
}

#[test]
fn absurd_counts_and_lengths() {
    let err = parse(&Raw::header(3, 0, 1 << 62).bytes);
    assert!(
        matches!(
            err,
            GgufError::TooLong {
                what: "metadata count",
                offset: 16,
                ..
            }
        ),
        "{err}"
    );

    let mut r = Raw::header(3, 1 << 40, 0);
    r.zeros(100);
    let err = parse(&r.bytes);
    assert!(
        matches!(err, GgufError::TooLong { what: "tensor count", offset: 8, count, .. } if count == 1 << 40),
        "{err}"
    );

    // A key claiming 2^63 bytes.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 63).raw(b"abc").u32(4).u32(0);
    let err = parse(&r.bytes);
    assert!(
        matches!(
            err,
            GgufError::TooLong {
                what: "metadata key",
                offset: 24,
                ..
            }
        ),
        "{err}"
    );

    // A string value claiming 2^63 bytes.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).u64(1 << 63).raw(b"abc");
    let err = parse(&r.bytes);
    assert!(
        matches!(
            err,
            GgufError::TooLong {
                what: "string value",
                offset: 37,
                ..
            }
        ),
        "{err}"
    );

    // An array of 2^40 u32, and of 2^40 strings.
    for elem in [4u32, 8] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(elem).u64(1 << 40).zeros(64);
        let err = parse(&r.bytes);
        assert!(
            matches!(
                err,
                GgufError::TooLong {
                    what: "array length",
                    offset: 41,
                    ..
                }
            ),
            "{err}"
        );
    }

    // Tensor shapes: 2^62 f32 elements overflow the byte size; 2^64 elements overflow the
    // count; 2^62 Q8_0 elements fit in u64 bytes but not in the file.
    type Check = fn(&GgufError) -> bool;
    let cases: [(&[u64], u32, Check); 4] = [
        (&[1 << 31, 1 << 31], 0, |e| {
            matches!(e, GgufError::TensorSizeOverflow { offset: 24, .. })
        }),
        (&[1 << 62, 4], 0, |e| {
            matches!(e, GgufError::ElementCountOverflow { offset: 24, .. })
        }),
        (&[1 << 62], 8, |e| {
            matches!(e, GgufError::TensorOutOfBounds { start: 64, .. })
        }),
        (&[1 << 63], 0, |e| {
            matches!(
                e,
                GgufError::DimTooLarge {
                    offset: 37,
                    dim: 0,
                    ..
                }
            )
        }),
    ];
    for (shape, ty, check) in cases {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("t", shape, ty, 0).pad(32).zeros(64);
        let err = parse(&r.bytes);
        assert!(check(&err), "{shape:?}: {err}");
    }
}

fn one_tensor(shape: &[u64], type_id: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", shape, type_id, offset).pad(32).zeros(data);
    r.bytes
}

#[test]
fn tensor_types() {
    for id in [43, 1000, u32::MAX] {
        let err = parse(&one_tensor(&[32], id, 0, 128));
        assert!(
            matches!(&err, GgufError::UnknownTensorType { id: got, offset: 45, name } if *got == id && name == "t"),
            "{err}"
        );
    }
    for (id, old) in [
        (4, "Q4_2"),
        (5, "Q4_3"),
        (31, "Q4_0_4_4"),
        (33, "Q4_0_8_8"),
        (36, "IQ4_NL_4_4"),
        (38, "IQ4_NL_8_8"),
    ] {
        let err = parse(&one_tensor(&[32], id, 0, 128));
        assert!(
            matches!(err, GgufError::RemovedTensorType { id: got, type_name, offset: 45, .. } if got == id && type_name == old),
            "{err}"
        );
    }
    let err = parse(&one_tensor(&[30], 8, 0, 128));
    assert!(
        matches!(
            err,
            GgufError::PartialBlock {
                ne0: 30,
                block: 32,
                ggml_type: GgmlType::Q8_0,
                ..
            }
        ),
        "{err}"
    );
    // A scalar of a block type is a partial block too.
    let err = parse(&one_tensor(&[], 12, 0, 1024));
    assert!(
        matches!(
            err,
            GgufError::PartialBlock {
                ne0: 1,
                block: 256,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tensor_placement() {
    let err = parse(&one_tensor(&[4], 0, 16, 64));
    assert!(
        matches!(
            err,
            GgufError::MisalignedTensor {
                data_offset: 16,
                alignment: 32,
                ..
            }
        ),
        "{err}"
    );

    let err = parse(&one_tensor(&[4], 0, 32, 40));
    assert!(
        matches!(
            err,
            GgufError::TensorOutOfBounds {
                start: 96,
                end: 112,
                file_len: 104,
                ..
            }
        ),
        "{err}"
    );

    let err = parse(&one_tensor(&[4], 0, u64::MAX - 31, 64));
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { end: u64::MAX, .. }),
        "{err}"
    );

    let mut r = Raw::header(3, 3, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("c", &[8], 0, 64)
        .tensor("b", &[8], 0, 32)
        .pad(32)
        .zeros(160);
    let err = parse(&r.bytes);
    assert!(
        matches!(&err, GgufError::OverlappingTensors { name, other, .. } if name == "b" && other == "a"),
        "{err}"
    );

    // Zero-sized tensors overlap nothing.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("empty", &[0, 8], 0, 0)
        .pad(32)
        .zeros(32);
    let f = Gguf::parse(&r.bytes[..]).unwrap();
    assert_eq!(f.tensor("empty").unwrap().data, &[] as &[u8]);

    // The padding before the data section is missing.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[0], 0, 0);
    let end = r.pos();
    let err = parse(&r.bytes);
    assert!(
        matches!(err, GgufError::Truncated { what: "padding before tensor data", offset, .. } if offset == end),
        "{err}"
    );
}

#[test]
fn tensor_info_limits() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad(32).zeros(32);
    let err = parse(&r.bytes);
    assert!(
        matches!(
            err,
            GgufError::TooManyDims {
                n_dims: 5,
                offset: 33,
                ..
            }
        ),
        "{err}"
    );

    let long = "x".repeat(64);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&long, &[1], 0, 0).pad(32).zeros(32);
    let err = parse(&r.bytes);
    assert!(
        matches!(
            err,
            GgufError::NameTooLong {
                len: 64,
                offset: 24,
                ..
            }
        ),
        "{err}"
    );

    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[1], 0, 0);
    let second = r.pos();
    r.tensor("t", &[1], 0, 32).pad(32).zeros(64);
    let err = parse(&r.bytes);
    assert!(
        matches!(&err, GgufError::DuplicateTensor { name, offset } if name == "t" && *offset == second),
        "{err}"
    );
}

#[test]
fn metadata_malformations() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1);
    let second = r.pos();
    r.kv_u32("k", 2);
    let err = parse(&r.bytes);
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, offset } if key == "k" && *offset == second),
        "{err}"
    );

    let mut r = Raw::header(3, 0, 1);
    r.str(b"").u32(4).u32(0);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::EmptyKey { offset: 24 }
    ));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::UnknownValueType { id: 13, offset: 33 }
    ));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(99).u64(0);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::UnknownValueType { id: 99, offset: 37 }
    ));

    // Arrays nested one level deeper than allowed.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9);
    for _ in 0..gguf_format::MAX_ARRAY_DEPTH {
        r.u32(9).u64(1);
    }
    let deepest = r.pos();
    r.u32(0).u64(0).zeros(16);
    let err = parse(&r.bytes);
    assert!(
        matches!(err, GgufError::NestingTooDeep { offset, .. } if offset == deepest),
        "{err}"
    );
}

#[test]
fn invalid_utf8_everywhere() {
    let bad = b"a\xffb";
    let mut r = Raw::header(3, 0, 1);
    r.str(bad).u32(4).u32(0);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::InvalidUtf8 {
            what: "metadata key",
            offset: 32
        }
    ));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(8).str(bad);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::InvalidUtf8 {
            what: "string value",
            offset: 45
        }
    ));

    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(9).u32(8).u64(2).str(b"ok").str(bad);
    let err = parse(&r.bytes);
    assert!(
        matches!(
            err,
            GgufError::InvalidUtf8 {
                what: "string value",
                offset: 67
            }
        ),
        "{err}"
    );

    let mut r = Raw::header(3, 1, 0);
    r.str(bad).u32(1).u64(1).u32(0).u64(0).pad(32).zeros(32);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::InvalidUtf8 {
            what: "tensor name",
            offset: 32
        }
    ));
}

#[test]
fn alignment_key() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.alignment").u32(10).u64(32);
    assert!(matches!(
        parse(&r.bytes),
        GgufError::AlignmentType {
            found: ValueType::U64
        }
    ));
    for a in [0, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        let err = parse(&r.bytes);
        assert!(
            matches!(err, GgufError::InvalidAlignment { alignment } if alignment == u64::from(a)),
            "{err}"
        );
    }
    // A valid non-default alignment moves the data section.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 256)
        .tensor("t", &[1], 0, 0)
        .pad(256)
        .zeros(4);
    let f = Gguf::parse(&r.bytes[..]).unwrap();
    assert_eq!((f.alignment(), f.data_offset()), (256, 256));
}

#[test]
fn writer_refuses_unrepresentable_metadata() {
    let mut deep = OwnedArray::U8(vec![]);
    for _ in 0..gguf_format::MAX_ARRAY_DEPTH {
        deep = OwnedArray::Array(vec![deep]);
    }
    let mut w = GgufWriter::new();
    let err = w.add_metadata("k", OwnedValue::Array(deep)).unwrap_err();
    assert!(matches!(err, GgufError::Unrepresentable { .. }), "{err}");
}
