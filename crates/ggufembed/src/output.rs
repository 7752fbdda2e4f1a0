//! Where results go: standard output, or a file that appears only when complete.
//!
//! [`Output::open`] looks at the path before any work is done, so a mistake costs nothing:
//! - a new path or an existing regular file is written under a temporary name in the same
//!   directory and renamed over it when the command succeeds (on any error the temporary file
//!   is removed, so a failed run never leaves a truncated file that looks finished). A new file
//!   gets `0666 & !umask`, as the shell's `>` would give it; a replaced file keeps its mode.
//! - a symbolic link is followed: its target is written (or created), the link stays.
//! - a character device or a FIFO (`/dev/null`, a terminal, a named pipe) is written in
//!   place: renaming over it would replace the node with a regular file (as root, turning
//!   `/dev/null` into a file for every other program).
//! - a path to one of the process's open descriptors (`/dev/stdout`, `/dev/stderr`,
//!   `/dev/fd/N`, `/proc/self/fd/N`) is written in place, appending, whatever the descriptor
//!   holds: with standard output redirected to a file (`>> log`), the kernel shows `/dev/stdout`
//!   as that very file, and replacing it would throw away what the file held (and what other
//!   commands of the same redirection wrote before this one).
//! - a directory, a block device or a socket is refused.
//!
//! Write errors name the path (or standard output), so a full disk says where.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::partial::PartialFile;

/// Symbolic links followed at most (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// An output sink; call [`Output::commit`] when everything is written.
pub struct Output {
    sink: Sink,
    /// How errors name the target.
    name: String,
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    /// Written under a temporary name, renamed over `path` on commit.
    Replace { tmp: PartialFile, out: BufWriter<File>, path: PathBuf },
    /// A character device, a FIFO or an open descriptor, written in place at `path`.
    InPlace { out: BufWriter<File>, path: PathBuf },
}

/// What is at an output path once symbolic links are followed.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing yet: a new file in this directory.
    New(PathBuf),
    /// A regular file, replaced atomically; its permissions carry over.
    Regular(PathBuf),
    /// A character device or FIFO, written in place.
    Stream(PathBuf),
    /// One of this process's open descriptors (`/dev/stdout`, `/dev/fd/N`), whatever it holds:
    /// written in place, appending.
    Descriptor(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::New(p) | Target::Regular(p) | Target::Stream(p) | Target::Descriptor(p) => p,
        }
    }
}

/// Follows symbolic links from `path` and says what is there, refusing what cannot be an
/// output. Checks only; creates nothing.
///
/// The kind of file is asked of the kernel with the links followed (so `/dev/stdout`, a link
/// through `/proc`, says what standard output really is); only a dangling link is followed by
/// hand, to the file it names.
pub fn resolve(path: &Path) -> Result<Target> {
    if names_open_descriptor(path) {
        return match path.metadata() {
            Ok(m) if m.is_dir() => bail!("cannot write {}: it is a directory", path.display()),
            Ok(_) => Ok(Target::Descriptor(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("cannot write {}: no such open file descriptor", path.display())
            }
            Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
        };
    }
    let meta = match path.metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return new_file(path),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    };
    let ty = meta.file_type();
    if ty.is_dir() {
        bail!("cannot write {}: it is a directory (give a file name)", path.display());
    }
    if ty.is_file() {
        let real = path.canonicalize().with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(Target::Regular(real));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_char_device() || ty.is_fifo() {
            return Ok(Target::Stream(path.to_owned()));
        }
        if ty.is_block_device() {
            bail!("refusing to write {}: it is a block device", path.display());
        }
        if ty.is_socket() {
            bail!("cannot write {}: it is a socket", path.display());
        }
    }
    bail!("cannot write {}: not a regular file", path.display())
}

/// Whether `path`, or a symbolic link on the way from it, is an entry of a process's descriptor
/// table (`/proc/PID/fd/N`, `/proc/PID/task/TID/fd/N`): `/dev/stdout` links to
/// `/proc/self/fd/1`, `/dev/fd` to `/proc/self/fd`. Those entries are links too, to whatever
/// the descriptor holds, so following them would find a regular file to replace.
fn names_open_descriptor(path: &Path) -> bool {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        if current.parent().and_then(|d| d.canonicalize().ok()).is_some_and(|d| is_fd_table(&d)) {
            return true;
        }
        match current.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => match current.read_link() {
                Ok(link) => current = if link.is_absolute() { link } else { parent_dir(&current).join(link) },
                Err(_) => return false,
            },
            _ => return false,
        }
    }
    false
}

/// `/proc/PID/fd` or `/proc/PID/task/TID/fd` (a canonical path).
fn is_fd_table(dir: &Path) -> bool {
    let parts: Vec<_> = dir.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["/", "proc", pid, "fd"] => number(pid),
        ["/", "proc", pid, "task", tid, "fd"] => number(pid) && number(tid),
        _ => false,
    }
}

/// Where a path that does not exist yet will be created: itself, or the end of the chain of
/// symbolic links it starts (a dangling link gets its target created, as the shell's `>` does).
fn new_file(path: &Path) -> Result<Target> {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINKS {
        match current.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                let link = current.read_link().with_context(|| format!("cannot read link {}", current.display()))?;
                current = if link.is_absolute() { link } else { parent_dir(&current).join(link) };
            }
            Ok(_) => bail!("cannot write {}: {} changed while being checked", path.display(), current.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = parent_dir(&current);
                return match dir.metadata() {
                    Ok(m) if m.is_dir() => Ok(Target::New(current)),
                    Ok(_) => bail!("cannot write {}: {} is not a directory", path.display(), dir.display()),
                    Err(e) => Err(e).with_context(|| format!("cannot write {}: directory {}", path.display(), dir.display())),
                };
            }
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
    bail!("cannot write {}: too many levels of symbolic links", path.display())
}

/// Whether `a` and `b` are the same existing file (hard links and symbolic links included).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.metadata(), b.metadata()) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            (x.dev(), x.ino()) == (y.dev(), y.ino())
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => a.canonicalize().ok() == b.canonicalize().ok(),
        _ => false,
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl Output {
    /// Standard output for `None`; else the file at `path`, checked now (see the module docs).
    pub fn open(path: Option<&Path>) -> Result<Output> {
        let Some(path) = path else {
            return Ok(Output { sink: Sink::Stdout(BufWriter::new(io::stdout())), name: "standard output".into() });
        };
        let name = path.display().to_string();
        let sink = match resolve(path)? {
            Target::Stream(target) | Target::Descriptor(target) => {
                // Appending: a file behind a descriptor keeps what it holds, as `>>` would, and
                // what earlier writers to a shared `>` wrote stays before this output (a device
                // or a FIFO has no end to append at, so this changes nothing for them).
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&target)
                    .with_context(|| format!("cannot open {name}"))?;
                Sink::InPlace { out: BufWriter::new(file), path: target }
            }
            target @ (Target::New(_) | Target::Regular(_)) => {
                let path = target.path().to_owned();
                let dir = parent_dir(&path);
                crate::partial::remove_stale(dir);
                let tmp = PartialFile::create_in(dir)
                    .with_context(|| format!("cannot write {name}: cannot create a file in {}", dir.display()))?;
                if let Target::Regular(existing) = &target {
                    let perms = existing.metadata().with_context(|| format!("cannot write {name}"))?.permissions();
                    tmp.as_file().set_permissions(perms).with_context(|| format!("cannot write {name}"))?;
                }
                let out = BufWriter::new(tmp.as_file().try_clone().with_context(|| format!("cannot write {name}"))?);
                Sink::Replace { tmp, out, path }
            }
        };
        Ok(Output { sink, name })
    }

    /// Fails if this output would replace or write into the file at `other` (the model the run
    /// reads: it is memory-mapped, so the run would even succeed, and the model would be gone).
    pub fn refuse_to_replace(&self, other: &Path, what: &str) -> Result<()> {
        if let Sink::Replace { path, .. } | Sink::InPlace { path, .. } = &self.sink
            && same_file(path, other)
        {
            bail!("refusing to write the output over the {what} {}", other.display());
        }
        Ok(())
    }

    /// Flushes and, for a replaced file, moves it into place.
    pub fn commit(self) -> Result<()> {
        let name = self.name;
        match self.sink {
            Sink::Stdout(mut w) => w.flush().with_context(|| format!("cannot write to {name}")),
            Sink::InPlace { mut out, .. } => out.flush().with_context(|| format!("cannot write {name}")),
            Sink::Replace { tmp, mut out, path } => {
                out.flush().with_context(|| format!("cannot write {name}"))?;
                tmp.as_file().sync_all().with_context(|| format!("cannot write {name}"))?;
                drop(out);
                tmp.persist(&path).with_context(|| format!("cannot move the output into place at {}", path.display()))
            }
        }
    }

    fn context(&self, e: io::Error) -> io::Error {
        let what = match self.sink {
            Sink::Stdout(_) => format!("cannot write to {}", self.name),
            _ => format!("cannot write {}", self.name),
        };
        // The kind is kept so a closed pipe is still recognised as one.
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = match &mut self.sink {
            Sink::Stdout(w) => w.write(buf),
            Sink::Replace { out, .. } => out.write(buf),
            Sink::InPlace { out, .. } => out.write(buf),
        };
        r.map_err(|e| self.context(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = match &mut self.sink {
            Sink::Stdout(w) => w.flush(),
            Sink::Replace { out, .. } => out.flush(),
            Sink::InPlace { out, .. } => out.flush(),
        };
        r.map_err(|e| self.context(e))
    }
}

/// The header of a version 1.0 `.npy` file holding a C-order little-endian f32 matrix.
pub fn npy_header(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + dict + padding + '\n', a multiple of 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parses() {
        let h = npy_header(3, 768);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let dict = std::str::from_utf8(&h[10..]).unwrap();
        assert!(dict.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 768), }"));
        assert!(dict.ends_with('\n'));
    }

    #[test]
    fn a_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut o = Output::open(Some(&path)).unwrap();
        o.write_all(b"partial").unwrap();
        drop(o); // an error path: never committed
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary file removed");
        let mut o = Output::open(Some(&path)).unwrap();
        o.write_all(b"done\n").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done\n");
    }

    #[test]
    fn directories_and_missing_directories_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Output::open(Some(dir.path())).err().unwrap());
        assert!(e.contains("is a directory"), "{e}");
        let e = format!("{:#}", Output::open(Some(&dir.path().join("no/such/out.jsonl"))).err().unwrap());
        assert!(e.contains("no/such"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_in_place_and_a_symlink_is_followed() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let mut o = Output::open(Some(&fifo)).unwrap();
        o.write_all(b"through the pipe\n").unwrap();
        o.commit().unwrap();
        // Checked before joining: a replaced FIFO is never opened, and the reader would wait.
        assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo(), "the FIFO is still a FIFO");
        assert_eq!(reader.join().unwrap(), b"through the pipe\n");

        let target = dir.path().join("real.jsonl");
        std::fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        let mut o = Output::open(Some(&link)).unwrap();
        o.write_all(b"new\n").unwrap();
        o.commit().unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");

        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("created.jsonl", &dangling).unwrap();
        let mut o = Output::open(Some(&dangling)).unwrap();
        o.write_all(b"x").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("created.jsonl")).unwrap(), "x");
        assert!(dangling.symlink_metadata().unwrap().file_type().is_symlink());
    }

    /// A file reached through this process's descriptor table is appended to in place (not
    /// replaced), and refused when it is the file the run must not touch.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_open_descriptor_is_appended_to_in_place() {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "old\n").unwrap();
        let ino = path.metadata().unwrap().ino();
        let held = File::open(&path).unwrap();
        let fd = held.as_raw_fd();
        for (i, via) in [format!("/proc/self/fd/{fd}"), format!("/dev/fd/{fd}")].iter().enumerate() {
            let via = Path::new(via);
            assert_eq!(resolve(via).unwrap(), Target::Descriptor(via.to_owned()));
            let mut o = Output::open(Some(via)).unwrap();
            let e = o.refuse_to_replace(&path, "model").unwrap_err();
            assert!(format!("{e}").contains("refusing to write the output over the model"), "{e}");
            writeln!(o, "new {i}").unwrap();
            o.commit().unwrap();
            assert_eq!(path.metadata().unwrap().ino(), ino, "replaced through {}", via.display());
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew 0\nnew 1\n");
        // A link to a descriptor path is one too; a plain file whose folder is named `fd` is not.
        let link = dir.path().join("to-fd");
        std::os::unix::fs::symlink(format!("/dev/fd/{fd}"), &link).unwrap();
        assert_eq!(resolve(&link).unwrap(), Target::Descriptor(link.clone()));
        std::fs::create_dir(dir.path().join("fd")).unwrap();
        let plain = dir.path().join("fd").join("1");
        std::fs::write(&plain, "").unwrap();
        assert!(matches!(resolve(&plain).unwrap(), Target::Regular(_)));
        drop(held);
        let e = resolve(Path::new(&format!("/proc/self/fd/{fd}"))).unwrap_err();
        assert!(format!("{e}").contains("no such open file descriptor"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_follow_the_umask_and_replaced_files_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The umask of this process, read the way a shell's `>` would apply it.
        let probe = dir.path().join("probe");
        File::create(&probe).unwrap();
        let want = probe.metadata().unwrap().permissions().mode() & 0o777;
        let new = dir.path().join("new.jsonl");
        let mut o = Output::open(Some(&new)).unwrap();
        o.write_all(b"x").unwrap();
        o.commit().unwrap();
        assert_eq!(new.metadata().unwrap().permissions().mode() & 0o777, want, "as File::create");

        let existing = dir.path().join("existing.jsonl");
        std::fs::write(&existing, "old").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut o = Output::open(Some(&existing)).unwrap();
        o.write_all(b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(existing.metadata().unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "new");
    }
}
