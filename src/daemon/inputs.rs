//! Where a job's inputs come from, and how long uploads live: [`open_path_submit`] (a path
//! submit reads only a regular file inside `admin.input_dirs`, never through a symbolic link,
//! checked on the opened file) and [`UploadRefs`] (who still uses an uploaded file: a job, or a
//! request in progress; an upload nobody uses is removed).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::api::BackendError;
use super::TEMPLATE_MAX_BYTES;

pub use crate::files::{
    create_private_dir, create_private_file, PrivateFile, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE,
};

/// The one answer for a path outside the allowed directories, whether or not it exists: the
/// API must not tell a caller which files exist elsewhere.
fn outside(what: &str, p: &Path) -> BackendError {
    BackendError::Forbidden(format!(
        "{what}: {} is not a file inside the directories listed in admin.input_dirs",
        p.display()
    ))
}

/// Checks a path submit and returns the checked open file and its resolved path. The caller
/// reads only that descriptor (copying it into the daemon's private uploads): the path itself
/// may be swapped for a link, a FIFO or another file right after the check.
///
/// - path submits are off unless `input_dirs` lists directories (resolved at start);
/// - the name must end in the expected extension;
/// - the containing directory, resolved, must be inside an allowed directory;
/// - the file is opened with `O_NOFOLLOW` (a symbolic link is refused, whatever it points at)
///   and `O_NONBLOCK` (a FIFO cannot hang the daemon), then checked on the open descriptor: a
///   regular file with a single name (no hard link from elsewhere), whose resolved path is
///   still inside an allowed directory.
///
/// No error quotes the file's content; a path outside the directories gets the same answer
/// whether it exists or not.
pub fn open_path_submit(
    p: &Path,
    input_dirs: &[PathBuf],
    what: &str,
    ext: &str,
) -> Result<(File, PathBuf), BackendError> {
    if input_dirs.is_empty() {
        return Err(BackendError::Forbidden(format!(
            "{what}: path submits are off; upload the file (multipart), or list the directories \
             the daemon may read in admin.input_dirs"
        )));
    }
    let allowed: &[&str] = if ext == "toml" {
        &["toml"]
    } else {
        &["csv", "txt", "xlsx", "xlsm", "ods"]
    };
    let has = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !has.as_deref().is_some_and(|e| allowed.contains(&e)) {
        return Err(BackendError::BadRequest(format!(
            "{what}: {} must end in .{}",
            p.display(),
            allowed.join(" or .")
        )));
    }
    let inside = |resolved: &Path| input_dirs.iter().any(|d| resolved.starts_with(d));
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(outside(what, p));
    };
    let parent = std::fs::canonicalize(parent).map_err(|_| outside(what, p))?;
    if !inside(&parent) {
        return Err(outside(what, p));
    }
    let candidate = parent.join(name);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&candidate)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                BackendError::BadRequest(format!(
                    "{what}: {} is a symbolic link; a path submit reads regular files only",
                    p.display()
                ))
            } else {
                BackendError::BadRequest(format!("{what}: cannot open {}: {e}", p.display()))
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| BackendError::BadRequest(format!("{what}: {}: {e}", p.display())))?;
    if !meta.is_file() {
        return Err(BackendError::BadRequest(format!(
            "{what}: {} is not a regular file",
            p.display()
        )));
    }
    // A second name for a file elsewhere (a hard link made into the directory) would bring that
    // file in as surely as a symbolic link.
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        return Err(BackendError::BadRequest(format!(
            "{what}: {} has more than one hard link; a path submit reads files with one name \
             only (copy it into the directory)",
            p.display()
        )));
    }
    // After opening: where the descriptor really is (a directory swapped for a link between
    // the check above and the open would show here). Without /proc that cannot be checked:
    // refuse rather than trust the path.
    let resolved = std::fs::read_link(format!("/proc/self/fd/{}", fd_of(&file))).map_err(|e| {
        BackendError::Forbidden(format!(
            "{what}: cannot check where {} really is ({e}: is /proc mounted?); path submits \
             need /proc, upload the file (multipart) instead",
            p.display()
        ))
    })?;
    if !inside(&resolved) {
        return Err(outside(what, p));
    }
    if ext == "toml" && meta.len() > TEMPLATE_MAX_BYTES {
        return Err(BackendError::BadRequest(format!(
            "{what}: {} is {} bytes; a template is at most {TEMPLATE_MAX_BYTES}",
            p.display(),
            meta.len()
        )));
    }
    Ok((file, resolved))
}

/// Copies `from` (an open, checked file) into a new private file `to` and returns the bytes
/// copied, at most `limit` + 1 (the caller refuses more than `limit`).
pub fn copy_to_private(from: File, to: &Path, limit: u64) -> std::io::Result<u64> {
    use std::io::Read;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)?;
    let n = std::io::copy(&mut from.take(limit.saturating_add(1)), &mut out)?;
    out.sync_all()?;
    Ok(n)
}

fn fd_of(file: &File) -> i32 {
    use std::os::fd::AsRawFd;
    file.as_raw_fd()
}

/// Who uses each uploaded file: jobs (until their uploads' retention ends) and requests in
/// progress (a submit, a dry run). A file whose count drops to zero is removed. Cheap to
/// clone; every change happens under one lock, with the file operation it decides.
#[derive(Clone, Default)]
pub struct UploadRefs {
    counts: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

impl UploadRefs {
    /// Runs `place` (which puts the file at `path` when it is not there) and counts one use,
    /// under the lock: a release elsewhere cannot remove the file in between.
    pub fn place_and_use<E>(
        &self,
        path: &Path,
        place: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut counts = self.counts.lock().expect("upload refs lock");
        place()?;
        *counts.entry(path.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    /// One more use of `path` (a job adopting an upload).
    pub fn add(&self, path: &Path) {
        *self
            .counts
            .lock()
            .expect("upload refs lock")
            .entry(path.to_owned())
            .or_insert(0) += 1;
    }

    /// One use fewer; the file is removed when nobody uses it any more. Returns whether it was.
    pub fn release(&self, path: &Path) -> bool {
        let mut counts = self.counts.lock().expect("upload refs lock");
        let left = match counts.get_mut(path) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            counts.remove(path);
            return std::fs::remove_file(path).is_ok();
        }
        false
    }

    /// Uses of `path` now.
    pub fn count(&self, path: &Path) -> usize {
        self.counts
            .lock()
            .expect("upload refs lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A request's use of its uploads, released when the request ends (a dry run, a refused
/// submit: the files go unless a job holds them).
pub struct UploadUse {
    refs: UploadRefs,
    paths: Vec<PathBuf>,
}

impl UploadUse {
    /// Takes over uses already counted for `paths`.
    pub fn new(refs: UploadRefs, paths: Vec<PathBuf>) -> UploadUse {
        UploadUse { refs, paths }
    }

    /// Takes over one more use already counted for `path`.
    pub fn push(&mut self, path: PathBuf) {
        self.paths.push(path);
    }
}

impl Drop for UploadUse {
    fn drop(&mut self) {
        for p in &self.paths {
            self.refs.release(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(d: &Path) -> Vec<PathBuf> {
        vec![std::fs::canonicalize(d).unwrap()]
    }

    #[test]
    fn path_submits_are_off_without_input_dirs() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("r.csv");
        std::fs::write(&f, "fiscal_code\n").unwrap();
        let err = open_path_submit(&f, &[], "recipients", "csv").unwrap_err();
        assert!(matches!(err, BackendError::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("admin.input_dirs"), "{err}");
        assert!(open_path_submit(&f, &dirs(d.path()), "recipients", "csv").is_ok());
    }

    #[test]
    fn symlinks_fifos_and_outside_files_are_refused_without_their_content() {
        let allowed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let secret = elsewhere.path().join("io-api-key");
        std::fs::write(&secret, "SECRET-KEY-VALUE\n").unwrap();
        let outside_csv = elsewhere.path().join("x.csv");
        std::fs::write(&outside_csv, "SECRET-KEY-VALUE\n").unwrap();
        let link = allowed.path().join("key.csv");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let dir_link = allowed.path().join("sub");
        std::os::unix::fs::symlink(elsewhere.path(), &dir_link).unwrap();
        let hard = allowed.path().join("hard.csv");
        std::fs::hard_link(&outside_csv, &hard).unwrap();
        let fifo = allowed.path().join("pipe.csv");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let ok = dirs(allowed.path());
        for (path, want) in [
            (link.clone(), "symbolic link"),
            (dir_link.join("x.csv"), "admin.input_dirs"),
            (outside_csv.clone(), "admin.input_dirs"),
            (elsewhere.path().join("missing.csv"), "admin.input_dirs"),
            (fifo.clone(), "not a regular file"),
            (hard.clone(), "hard link"),
            (allowed.path().join("secret.key"), "must end in"),
        ] {
            let err = open_path_submit(&path, &ok, "recipients", "csv")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{}: {err}", path.display());
            assert!(!err.contains("SECRET"), "{err}");
        }
        // The same answer for a missing file and an existing one outside.
        let a = open_path_submit(&outside_csv, &ok, "r", "csv").unwrap_err();
        let b = open_path_submit(&elsewhere.path().join("nope.csv"), &ok, "r", "csv").unwrap_err();
        assert_eq!(
            a.to_string().replace("x.csv", "?"),
            b.to_string().replace("nope.csv", "?")
        );
    }

    #[test]
    fn an_upload_is_removed_when_its_last_user_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("u.csv");
        let refs = UploadRefs::default();
        refs.place_and_use(&f, || std::fs::write(&f, "x")).unwrap();
        refs.add(&f); // a job adopts it
        drop(UploadUse::new(refs.clone(), vec![f.clone()])); // the request ends
        assert!(f.exists(), "the job still uses it");
        assert!(refs.release(&f));
        assert!(!f.exists());
    }
}
