//! Files that hold personal data or secrets, private to the owner: [`create_private_dir`],
//! [`create_private_file`] (never through a link, never over something already there) and
//! [`PrivateFile`] (written aside, synced and renamed over its target). The store, the
//! daemon's uploads and every report use them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of the directories corriere creates (store, uploads): the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files corriere writes (uploads, reports): the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) private to the owner, and makes it private if it was not.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Creates `path` as a new file private to the owner: fails if anything (a file, a symbolic
/// link) is already there, so the file is never someone else's with laxer permissions.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A private file that replaces `target` once written: written under a new temporary name in
/// `target`'s directory ([`create_private_file`]: 0600, never through a link) and renamed
/// over `target` by [`PrivateFile::persist`]. Whatever was at `target` (a file open to others,
/// a symbolic link to elsewhere) is replaced, never written through. Dropped unpersisted, the
/// temporary file is removed.
pub struct PrivateFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
}

impl PrivateFile {
    /// Starts replacing `target`.
    pub fn create(target: &Path) -> std::io::Result<PrivateFile> {
        let name = target.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", ulid::Ulid::new()));
        let tmp = target.with_file_name(tmp_name);
        let file = create_private_file(&tmp)?;
        Ok(PrivateFile {
            file: Some(file),
            tmp,
            target: target.to_owned(),
        })
    }

    /// Syncs the file and renames it over the target.
    pub fn persist(mut self) -> std::io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        std::fs::rename(&self.tmp, &self.target)?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl std::io::Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("persisted")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
