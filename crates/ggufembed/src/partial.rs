//! Our temporary output files (`.ggufembed-<pid>-<random>.partial`, beside the output): made,
//! removed on SIGINT/SIGTERM/SIGHUP, and cleaned up when an earlier run was killed too hard to
//! remove its own (SIGKILL, a power cut).
//!
//! A signal handler is process-wide state, so this module holds the CLI's one registry of live
//! temporary files and its one extra thread (signal-hook's iterator, started only when the first
//! temporary file is made); the libraries keep neither.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, SystemTime};

/// Prefix and suffix of every temporary file this tool makes.
const PREFIX: &str = ".ggufembed-";
const SUFFIX: &str = ".partial";

/// A temporary file untouched this long, whose process is gone, is an abandoned one. A live run
/// writes its file continually (every batch, every converted tensor), so an hour without a write
/// is far past any pause of ours, yet short enough that leftovers do not pile up.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Paths of the temporary files this process has made and not yet renamed or removed.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HANDLER: Once = Once::new();

/// A temporary file beside `dir`'s eventual output; removed when dropped unless kept.
pub struct PartialFile {
    file: Option<tempfile::NamedTempFile>,
}

/// tempfile's errors end with the temporary file's name (`… at path "/dir/.ggufembed-….partial"`),
/// a name the user never chose; the caller's message names the output and its folder instead.
fn without_temporary_name(e: std::io::Error) -> std::io::Error {
    match e.to_string().rsplit_once(" at path ") {
        Some((cause, _)) => std::io::Error::new(e.kind(), cause.to_owned()),
        None => e,
    }
}

impl PartialFile {
    /// Creates a temporary file in `dir` with mode `0666 & !umask` (what a plain `File::create`
    /// of the output would get), registered for removal on a terminating signal.
    pub fn create_in(dir: &Path) -> std::io::Result<PartialFile> {
        HANDLER.call_once(install_handler);
        let mut builder = tempfile::Builder::new();
        let prefix = format!("{PREFIX}{}-", std::process::id());
        builder.prefix(&prefix).suffix(SUFFIX).rand_bytes(8);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        // Registered under the lock before the file exists: a signal in between then finds
        // the path and removes nothing, never a file it does not know about.
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let file = builder.tempfile_in(dir).map_err(without_temporary_name)?;
        live.push(file.path().to_owned());
        Ok(PartialFile { file: Some(file) })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        self.file.as_ref().expect("present until persisted").path()
    }

    pub fn as_file(&self) -> &File {
        self.file.as_ref().expect("present until persisted").as_file()
    }

    /// Renames the file to `to` (atomically replacing whatever regular file is there).
    pub fn persist(mut self, to: &Path) -> std::io::Result<()> {
        let file = self.file.take().expect("persisted once");
        let path = file.path().to_owned();
        let result = file.persist(to).map(drop).map_err(|e| {
            // Put it back so Drop removes it.
            let err = std::io::Error::new(e.error.kind(), e.error.to_string());
            self.file = Some(e.file);
            err
        });
        if result.is_ok() {
            forget(&path);
        }
        result
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let path = file.path().to_owned();
            drop(file); // tempfile removes it
            forget(&path);
        }
    }
}

fn forget(path: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != path);
}

/// Removes every registered temporary file, then lets the signal do what it would have done.
fn install_handler() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return; // no handler: the files are then cleaned by the next run
        };
        let spawned = std::thread::Builder::new().name("ggufembed-signals".into()).spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
                for path in live.iter() {
                    let _ = std::fs::remove_file(path);
                }
                // Keep the lock: nothing may make a new temporary file now. The default action
                // terminates the process with the signal's status, as the shell expects.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        });
        drop(spawned);
    }
}

/// The process id encoded in one of our temporary file names, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is running, when the system can say (Linux's `/proc`); `None` when it
/// cannot.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.join("self").exists().then(|| proc.join(pid.to_string()).exists())
}

/// Removes temporary files of ours in `dir` that earlier runs abandoned: named as this module
/// names them, regular files, untouched for [`STALE_AFTER`], and (where the system can tell)
/// not owned by a running process. Anything else is left alone; failures are ignored, since
/// this is housekeeping.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else { continue };
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if !meta.is_file() || !old || pid == std::process::id() || process_alive(pid) == Some(true) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Whether `name` is one of the names this module gives.
#[cfg(test)]
pub fn is_ours(name: &str) -> bool {
    owner_pid(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_exactly() {
        assert_eq!(owner_pid(".ggufembed-123-aB9xYz01.partial"), Some(123));
        for name in [
            ".ggufembed-123-.partial",
            ".ggufembed-x-abc.partial",
            "ggufembed-123-abc.partial",
            ".ggufembed-123-abc.partial.keep",
            ".ggufembed-123-a/b.partial",
            ".ggufembed-123.partial",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn a_failed_creation_does_not_name_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let e = PartialFile::create_in(&not_a_dir).err().expect("a file is not a folder");
        let msg = e.to_string();
        assert!(!msg.contains(".partial") && !msg.contains("at path"), "{msg}");
        assert!(msg.contains("Not a directory"), "{msg}");
        assert!(!LIVE.lock().unwrap().iter().any(|l| l.starts_with(&not_a_dir)), "nothing registered");
    }

    #[test]
    fn created_files_are_ours_and_go_away_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartialFile::create_in(dir.path()).unwrap();
        let name = p.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(is_ours(&name), "{name}");
        assert!(LIVE.lock().unwrap().iter().any(|l| l == p.path()));
        let path = p.path().to_owned();
        drop(p);
        assert!(!path.exists());
        assert!(!LIVE.lock().unwrap().iter().any(|l| l == &path));
    }

    #[test]
    fn only_old_abandoned_files_of_ours_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        let make = |name: &str, mtime: SystemTime| {
            let p = dir.path().join(name);
            let f = File::create(&p).unwrap();
            f.set_modified(mtime).unwrap();
            p
        };
        // pid 0 is never a user process, so /proc/0 never exists: "not running".
        let stale = make(".ggufembed-0-abcdef12.partial", old);
        let fresh = make(".ggufembed-0-fresh123.partial", SystemTime::now());
        let mine = make(&format!(".ggufembed-{}-mine1234.partial", std::process::id()), old);
        let other = make(".ggufembed-notours.partial", old);
        let user = make("results.partial", old);
        remove_stale(dir.path());
        assert!(!stale.exists(), "an old abandoned file of ours is removed");
        for kept in [&fresh, &mine, &other, &user] {
            assert!(kept.exists(), "{} must stay", kept.display());
        }
    }
}
