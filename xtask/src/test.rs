//! `cargo xtask test`: the whole test suite, Rust and Python, in one command (what CI runs).
//!
//! 1. `cargo test --workspace`.
//! 2. `cargo build --release -p ggufembed` and `ggufembed fetch`, which prints the cached Q8_0
//!    model's path (fetching it on a clean machine).
//! 3. A virtual environment in `target/py-venv` (made with `python3 -m venv` when missing) with
//!    the pinned test requirements of `python/requirements-test.txt`, and this checkout's
//!    package built by maturin and installed into it (`pip install .`, the README's command).
//!    The extension is built with the release profile, so it reuses the dependencies step 2 (and
//!    `cargo xtask` itself) compiled.
//! 4. pytest over `python/tests` and every `crates/*/tests/python`, with `GGUFEMBED_BIN` and
//!    `GGUFEMBED_MODEL` set. pytest's own summary line is the last thing printed.
//!
//! Any failure, including pytest collecting no test at all (its exit code 5), fails the command.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo test --workspace` (run only the Python suite).
    #[arg(long)]
    pub python_only: bool,
    /// Extra arguments for pytest (after `--`), e.g. `-- -k gil -x`.
    #[arg(last = true)]
    pub pytest_args: Vec<String>,
}

/// Runs the suite from the workspace root `root`.
pub fn run(args: &TestArgs, root: &Path) -> Result<()> {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if !args.python_only {
        step("cargo test --workspace");
        run_checked(Command::new(&cargo).args(["test", "--workspace"]).current_dir(root))?;
    }

    step("cargo build --release -p ggufembed");
    run_checked(Command::new(&cargo).args(["build", "--release", "-p", "ggufembed"]).current_dir(root))?;
    let bin = target_dir(root).join("release").join(format!("ggufembed{}", std::env::consts::EXE_SUFFIX));
    step("ggufembed fetch");
    let out = Command::new(&bin)
        .arg("fetch")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("ggufembed fetch failed ({})", out.status);
    }
    let model = String::from_utf8(out.stdout)
        .context("ggufembed fetch printed a non-UTF-8 path")?
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .context("ggufembed fetch printed no path")?;
    println!("model: {}", model.display());

    let venv = target_dir(root).join("py-venv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        step(&format!("python3 -m venv {}", venv.display()));
        run_checked(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    // maturin is called by name from pip's build step, so the venv's bin goes first on PATH.
    let path = prepend_path(&venv.join("bin"))?;
    let pip = |extra: &[&str]| -> Result<()> {
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(extra)
            .env("PATH", &path)
            .current_dir(root);
        run_checked(&mut cmd)
    };
    step("pip install -r python/requirements-test.txt");
    pip(&["-q", "-r", "python/requirements-test.txt"])?;
    step("pip install . (maturin builds crates/ggufembed-py)");
    // No build isolation: maturin comes from the requirements above instead of a fresh download.
    pip(&["-q", "--no-build-isolation", "--no-deps", "--force-reinstall", "."])?;

    let mut dirs = vec![root.join("python").join("tests")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("tests").join("python")))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    dirs.extend(crates);
    step(&format!(
        "pytest {}",
        dirs.iter().map(|d| d.strip_prefix(root).unwrap_or(d).display().to_string()).collect::<Vec<_>>().join(" ")
    ));
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pytest", "-rfE", "-p", "no:cacheprovider"])
        .args(&dirs)
        .args(&args.pytest_args)
        .env("PATH", &path)
        .env("GGUFEMBED_BIN", &bin)
        .env("GGUFEMBED_MODEL", &model)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(root);
    eprintln!("cargo xtask test: {:.0} s before pytest", started.elapsed().as_secs_f64());
    let status = cmd.status().context("running pytest")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(5) => bail!("pytest collected no tests in {dirs:?}"),
        _ => bail!("pytest failed ({status})"),
    }
}

fn step(what: &str) {
    eprintln!("\n== cargo xtask test: {what}");
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `CARGO_TARGET_DIR` if set, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root.join(d) }
        }
        None => root.join("target"),
    }
}

fn prepend_path(dir: &Path) -> Result<OsString> {
    let mut parts = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&old));
    }
    Ok(std::env::join_paths(parts)?)
}
