//! What a report records about where and how it was measured, and process-level counters.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The facts printed at the top of every report.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// UTC time of the run, `HH:MM:SS`.
    pub time: String,
    /// Host name, reduced to `[A-Za-z0-9-]`.
    pub host: String,
    /// CPU model string from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// Kernel instruction set the runtime dispatched to (CPU detection until an engine is open).
    pub isa: String,
    /// Kernel release.
    pub kernel: String,
    /// Compiler that built xtask and the runtime (same invocation).
    pub rustc: String,
    /// `git rev-parse HEAD` of the tree that was built.
    pub commit: String,
    /// Uncommitted changes to tracked files when the run started (0 means a clean tree).
    pub dirty_files: usize,
}

impl Machine {
    /// Gathers everything; nothing here fails the run (unknowns are written as such).
    pub fn detect() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (date, time) = utc_date_time(now);
        Machine {
            date,
            time,
            host: sanitize(&read_trim("/proc/sys/kernel/hostname").unwrap_or_else(|| "host".into())),
            cpu: cpu_model().unwrap_or_else(|| "unknown CPU".into()),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            isa: isa_name().to_string(),
            kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            rustc: env!("XTASK_RUSTC_VERSION").to_string(),
            commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            dirty_files: git(&["status", "--porcelain", "--untracked-files=no"])
                .map(|s| s.lines().count())
                .unwrap_or(0),
        }
    }

    /// `<date>-<host>-<isa>`, the run folder under `profiles/`.
    pub fn folder_name(&self) -> String {
        format!("{}-{}-{}", self.date, self.host, self.isa)
    }

    /// The markdown bullet list of these facts plus the model's.
    pub fn markdown(&self, model: &ModelInfo) -> String {
        let commit = if self.dirty_files == 0 {
            self.commit.clone()
        } else {
            format!("{} (+{} uncommitted tracked files at run time)", self.commit, self.dirty_files)
        };
        crate::render::bullets(&[
            ("date", format!("{} {} UTC", self.date, self.time)),
            ("host", self.host.clone()),
            ("CPU", format!("{} ({} logical CPUs available; kernels: {})", self.cpu, self.cores, self.isa)),
            ("kernel", self.kernel.clone()),
            ("compiler", format!("{} (release profile, debug = line-tables-only)", self.rustc)),
            ("commit", commit),
            ("model", format!("{} ({} bytes)", model.path.display(), model.size)),
            ("model SHA-256", model.sha256.clone()),
        ])
    }
}

/// The model file a run used.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Where it was read from.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
}

impl ModelInfo {
    /// Hashes the file (about a second for the 330 MB Q8_0 model).
    pub fn of(path: &Path) -> anyhow::Result<Self> {
        let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = f.metadata()?.len();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(ModelInfo { path: path.to_path_buf(), size, sha256: hex::encode(hasher.finalize()) })
    }
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(crate::workspace_root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Keeps host names safe as a folder name.
pub fn sanitize(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() { "host".into() } else { trimmed.to_string() }
}

/// The best vector extension the CPU offers, using the names the kernels use.
fn isa_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni") {
            return "avx512vnni";
        }
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "avx2";
        }
        "x86_64"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// UTC calendar date and time of a Unix timestamp (days-from-civil inverse, Howard Hinnant's
/// algorithm), so no date crate is needed for a folder name.
pub fn utc_date_time(unix_secs: u64) -> (String, String) {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60),
    )
}

/// Process CPU time (all threads, user + system) in seconds.
pub fn cpu_seconds() -> f64 {
    cpu_time::ProcessTime::try_now().map(|t| t.as_duration().as_secs_f64()).unwrap_or(f64::NAN)
}

/// Threads of this process right now (`/proc/self/status`).
pub fn thread_count() -> Option<usize> {
    status_field("Threads:").and_then(|v| v.parse().ok())
}

/// Peak resident set size in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:").and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok()).map(|kb| kb * 1024)
}

fn status_field(key: &str) -> Option<String> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// Waits for and takes an exclusive advisory lock on `path`; it is released when the file is
/// dropped.
pub fn hold_lock(path: &Path) -> anyhow::Result<fs::File> {
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).with_context(|| format!("opening lock file {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!("waiting for the lock on {}", path.display());
        file.lock().with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(utc_date_time(0), ("1970-01-01".into(), "00:00:00".into()));
        // 2000-02-29 12:34:56 UTC, a leap day in a century leap year.
        assert_eq!(utc_date_time(951_827_696), ("2000-02-29".into(), "12:34:56".into()));
        // 2025-10-25 00:00:00 UTC
        assert_eq!(utc_date_time(1_761_350_400).0, "2025-10-25");
        // 2100-03-01, after a skipped century leap day.
        assert_eq!(utc_date_time(4_107_542_400).0, "2100-03-01");
    }

    #[test]
    fn host_names_become_folder_safe() {
        assert_eq!(sanitize("build.box_01"), "build-box-01");
        assert_eq!(sanitize("..."), "host");
        assert_eq!(sanitize("abc"), "abc");
    }

    #[test]
    fn this_process_has_threads_and_cpu_time() {
        assert!(thread_count().unwrap() >= 1);
        assert!(cpu_seconds() > 0.0);
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
