//! The merge-rank cache (`TokenizerBuilder::build_cached`): the tokenizer it gives is the
//! derived one id for id, and a file that is absent, stale, of another version, truncated,
//! corrupted or unreadable is rebuilt (or, when the directory cannot be written, just not
//! used), never trusted and never a panic.

use std::path::{Path, PathBuf};

use bpe_tokenizer::{CacheError, CacheStatus, Tokenizer, TokenizerBuilder};
use sha2::{Digest, Sha256};

use crate::{reference, support};

/// The one cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("bpe-merges-") && n.ends_with(".bin")))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap_or_default()
}

fn toy() -> TokenizerBuilder {
    Tokenizer::builder()
        .tokens(["<pad>", "<eos>", "<bos>", "<unk>", "▁", "a", "b", "ab", "▁ab", "▁a", "ba", "aba", "b▁a"])
        .scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0])
        .token_types([3, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        .bos_id(2)
        .eos_id(1)
        .unk_id(3)
        .add_bos(true)
        .add_eos(true)
}

const TOY_TEXTS: [&str; 6] = ["ab ab", "aba ba", "bab", "a b ab aba", "x ab", "b ab a"];

fn toy_ids(tok: &Tokenizer) -> Vec<Vec<u32>> {
    TOY_TEXTS.iter().map(|t| tok.encode(t)).collect()
}

/// Builds through the cache in `dir`, checks the ids against the derived tokenizer's and
/// returns the status.
fn cached_toy(dir: &Path) -> CacheStatus {
    let (tok, status) = toy().build_cached(dir).expect("a cache problem is never a build error");
    assert_eq!(toy_ids(&tok), toy_ids(&toy().build().expect("build")), "{status:?}");
    status
}

fn assert_rebuilt(status: CacheStatus, want: impl Fn(&CacheError) -> bool) {
    match status {
        CacheStatus::Derived { why, write } if want(&why) => assert!(write.is_ok(), "{write:?}"),
        other => panic!("unexpected status {other:?}"),
    }
}

fn assert_loaded(status: CacheStatus) {
    assert!(matches!(status, CacheStatus::Loaded), "{status:?}");
}

#[test]
fn first_build_writes_the_cache_and_the_next_loads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("nested").join("tokenizers");
    assert_rebuilt(cached_toy(&cache), |e| matches!(e, CacheError::Absent));
    assert_loaded(cached_toy(&cache));
    assert_loaded(cached_toy(&cache));
}

#[test]
fn corrupted_truncated_or_foreign_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    cached_toy(dir.path());
    let path = cache_file(dir.path());
    let good = std::fs::read(&path).expect("read cache");

    type Case = (&'static str, Vec<u8>, fn(&CacheError) -> bool);
    let cases: Vec<Case> = vec![
        ("flipped byte", { let mut b = good.clone(); b[60] ^= 1; b }, |e| matches!(e, CacheError::Checksum)),
        ("flipped checksum", { let mut b = good.clone(); *b.last_mut().unwrap() ^= 1; b }, |e| matches!(e, CacheError::Checksum)),
        ("truncated", good[..good.len() - 5].to_vec(), |e| matches!(e, CacheError::Length { .. })),
        ("empty", Vec::new(), |e| matches!(e, CacheError::Length { .. })),
        ("appended", { let mut b = good.clone(); b.extend([0; 4]); b }, |e| matches!(e, CacheError::Length { .. })),
        ("huge counts", { let mut b = good.clone(); b[48..56].fill(0xFF); b }, |e| matches!(e, CacheError::Length { .. })),
        ("bad magic", { let mut b = good.clone(); b[0] = b'X'; b }, |e| matches!(e, CacheError::Magic)),
        ("other version", { let mut b = good.clone(); b[8..12].copy_from_slice(&999u32.to_le_bytes()); b },
            |e| matches!(e, CacheError::Version { found: 999, .. })),
    ];
    for (what, bytes, want) in cases {
        std::fs::write(&path, &bytes).expect("write corrupted cache");
        let status = cached_toy(dir.path());
        assert!(matches!(&status, CacheStatus::Derived { why, .. } if want(why)), "{what}: {status:?}");
        assert_rebuilt(status, |_| true);
        assert_eq!(std::fs::read(&path).expect("reread"), good, "{what}: the file is rewritten whole");
        assert_loaded(cached_toy(dir.path()));
    }
}

/// A file whose checksum is right but whose contents are wrong for this vocabulary: ids
/// past the vocabulary and a no-split entry that is no character are typed errors, and a
/// valid file of another vocabulary put under this one's name is stale.
#[test]
fn well_formed_but_wrong_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    cached_toy(dir.path());
    let path = cache_file(dir.path());
    let good = std::fs::read(&path).expect("read cache");
    let resum = |mut b: Vec<u8>| {
        let n = b.len() - 32;
        let sum: [u8; 32] = Sha256::digest(&b[..n]).into();
        b[n..].copy_from_slice(&sum);
        b
    };
    let m = u32::from_le_bytes(good[48..52].try_into().unwrap()) as usize;
    assert!(m > 0 && good[52..56] != [0; 4], "the toy has merges and a no-split character");
    let mut bad_id = good.clone();
    bad_id[56 + 4..56 + 8].copy_from_slice(&1000u32.to_le_bytes());
    let mut bad_char = good.clone();
    bad_char[56 + 12 * m..56 + 12 * m + 4].copy_from_slice(&0xD800u32.to_le_bytes());
    for (bytes, want) in [
        (resum(bad_id), (|e: &CacheError| matches!(e, CacheError::IdOutOfRange { index: 0, id: 1000, vocab_size: 13 })) as fn(&CacheError) -> bool),
        (resum(bad_char), |e| matches!(e, CacheError::BadChar { index: 0, value: 0xD800 })),
    ] {
        std::fs::write(&path, bytes).expect("write");
        let status = cached_toy(dir.path());
        assert!(matches!(&status, CacheStatus::Derived { why, .. } if want(why)), "{status:?}");
        assert_loaded(cached_toy(dir.path()));
    }

    // Another vocabulary's valid file, renamed to this vocabulary's name.
    let other = tempfile::tempdir().expect("tempdir");
    let (_, status) = toy().scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.5, -5.0, -6.0, -7.0, -8.0, -9.0]).build_cached(other.path()).expect("build");
    assert_rebuilt(status, |e| matches!(e, CacheError::Absent));
    std::fs::copy(cache_file(other.path()), &path).expect("copy");
    assert_rebuilt(cached_toy(dir.path()), |e| matches!(e, CacheError::Stale));
    assert_loaded(cached_toy(dir.path()));
}

/// A cache that cannot be read or written costs the derivation, nothing else.
#[test]
fn unusable_cache_locations_still_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    cached_toy(dir.path());
    let path = cache_file(dir.path());
    // The file's name taken by a directory: unreadable, and the rename over it fails.
    std::fs::remove_file(&path).expect("remove");
    std::fs::create_dir(&path).expect("mkdir");
    match cached_toy(dir.path()) {
        CacheStatus::Derived { why: CacheError::Io(_), write: Err(_) } => {}
        other => panic!("unexpected status {other:?}"),
    }
    // The cache directory is a regular file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    match cached_toy(&file) {
        CacheStatus::Derived { write: Err(_), .. } => {}
        other => panic!("unexpected status {other:?}"),
    }
    assert!(std::fs::read_dir(dir.path()).expect("list").all(|e| !e.expect("entry").file_name().to_string_lossy().ends_with(".tmp")), "no temporary file is left behind");
}

/// The real vocabulary through the cache (written, then read back): every merge is
/// tokenizer.json's, and every reference text and edge case gets the reference ids.
#[test]
fn cached_gemma_tokenizer_matches_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (written, status) = support::full_builder().build_cached(dir.path()).expect("build");
    assert!(matches!(status, CacheStatus::Derived { why: CacheError::Absent, write: Ok(()) }), "{status:?}");
    let (loaded, status) = support::full_builder().build_cached(dir.path()).expect("build");
    assert!(matches!(status, CacheStatus::Loaded), "{status:?}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::model_dir().join("tokenizer.json")).expect("read tokenizer.json"),
    )
    .expect("parse");
    let vocab: rustc_hash::FxHashMap<&str, u32> = json["model"]["vocab"]
        .as_object()
        .expect("vocab object")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().expect("id") as u32))
        .collect();
    let merges = json["model"]["merges"].as_array().expect("merges");
    for tok in [&written, &loaded] {
        assert_eq!(tok.n_merges(), merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (l, r) = (m[0].as_str().expect("left"), m[1].as_str().expect("right"));
            let merged = vocab[format!("{l}{r}").as_str()];
            assert_eq!(tok.merge_rule(vocab[l], vocab[r]), Some((rank as u32, merged)), "merge {rank}: {l:?} + {r:?}");
        }
    }
    for tok in [&written, &loaded] {
        reference::check_dev(tok, "tokenizer.model via the cache");
        let mut failures = Vec::new();
        for case in &support::edge_cases() {
            reference::check_edge_case(tok, case, &mut failures);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
