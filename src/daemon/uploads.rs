//! Upload staging and retention: uploaded or path-submitted inputs copied into the private
//! uploads directory (content-addressed), adopted by a job, swept once no job needs them.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::model::job::{JobMeta, JobPhase};
use crate::runner;

use api::{BackendError, Input};

use super::*;

impl Daemon {
    /// Writes uploaded bytes under the uploads directory (content-addressed, so the same upload
    /// is the same file and the same job), or checks a path submit
    /// ([`inputs::open_path_submit`]). An upload's use is counted (see [`UploadRefs`]): the
    /// caller releases it.
    pub(super) fn materialize(
        &self,
        input: Input,
        what: &str,
        ext: &str,
    ) -> Result<PathBuf, BackendError> {
        match input {
            Input::Path(p) => {
                // Only the checked descriptor is read: copied into the private uploads, the
                // job never opens the operator's path again (it could be swapped meanwhile).
                let (file, resolved) =
                    inputs::open_path_submit(&p, &self.inner.parts.input_dirs, what, ext)?;
                let name = resolved.display().to_string();
                let staging = self.inner.parts.uploads_dir.join("staging");
                let staged = staging.join(format!("{}.path.tmp", ulid::Ulid::new()));
                let limit = if ext == "toml" {
                    TEMPLATE_MAX_BYTES
                } else {
                    u64::MAX - 1
                };
                let copied = inputs::create_private_dir(&staging)
                    .and_then(|()| inputs::copy_to_private(file, &staged, limit));
                let result = match copied {
                    Err(e) => Err(internal(format!("copying {name:?}: {e}"))),
                    Ok(n) if n > limit => Err(BackendError::BadRequest(format!(
                        "{what}: {name} grew past {limit} bytes while being read"
                    ))),
                    Ok(_) => self.adopt_staged(&name, &staged, what, ext),
                };
                let _ = std::fs::remove_file(&staged);
                result
            }
            Input::Staged { name, path: staged } => {
                let result = self.adopt_staged(&name, &staged, what, ext);
                let _ = std::fs::remove_file(&staged);
                result
            }
            Input::Bytes { name, bytes } => {
                use sha2::Digest;
                if bytes.is_empty() {
                    return Err(BackendError::BadRequest(format!(
                        "{what}: the uploaded file {name:?} is empty"
                    )));
                }
                let digest = hex::encode(&sha2::Sha256::digest(&bytes)[..12]);
                let path = self.inner.parts.uploads_dir.join(format!("{digest}.{ext}"));
                self.inner.uploads.place_and_use(&path, || {
                    if path.exists() {
                        return Ok(());
                    }
                    let tmp = path.with_extension(format!("{ext}.{}.tmp", ulid::Ulid::new()));
                    inputs::create_private_file(&tmp)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .map_err(|e| {
                            let _ = std::fs::remove_file(&tmp);
                            internal(format!("storing the upload {name:?}: {e}"))
                        })
                })?;
                Ok(path)
            }
        }
    }

    /// Moves a streamed upload to its content-addressed name (hashing it from disk).
    pub(super) fn adopt_staged(
        &self,
        name: &str,
        staged: &Path,
        what: &str,
        ext: &str,
    ) -> Result<PathBuf, BackendError> {
        use sha2::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(staged)
            .map_err(|e| internal(format!("reading the upload {name:?}: {e}")))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| internal(format!("reading the upload {name:?}: {e}")))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        if total == 0 {
            return Err(BackendError::BadRequest(format!(
                "{what}: the uploaded file {name:?} is empty"
            )));
        }
        let digest = hex::encode(&hasher.finalize()[..12]);
        let path = self.inner.parts.uploads_dir.join(format!("{digest}.{ext}"));
        self.inner.uploads.place_and_use(&path, || {
            if path.exists() {
                return Ok(());
            }
            std::fs::rename(staged, &path)
                .map_err(|e| internal(format!("storing the upload {name:?}: {e}")))
        })?;
        Ok(path)
    }

    /// A file the daemon keeps for an uploaded input (not an operator's path submit).
    pub(super) fn is_upload(&self, p: &Path) -> bool {
        p.parent() == Some(self.inner.parts.uploads_dir.as_path())
    }

    /// At start and every [`UPLOAD_SWEEP_EVERY`]: lets go of the uploads of jobs done more than
    /// `upload_retention` ago (the files go when no other job uses them).
    pub(super) async fn upload_sweeps(&self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            let d = self.clone();
            let swept = tokio::task::spawn_blocking(move || d.sweep_uploads()).await;
            if let Ok(Err(e)) = swept {
                warn!(error = %e, "Upload retention sweep failed; the next one retries.");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(UPLOAD_SWEEP_EVERY) => {}
            }
        }
    }

    /// One retention sweep; returns how many files were removed.
    pub fn sweep_uploads(&self) -> Result<usize, BackendError> {
        let store = self.store();
        let now = self.runtime().settings().clock.now_ms();
        let retention = self.inner.parts.upload_retention.as_millis() as u64;
        let mut removed = 0;
        for job in store.list_jobs().map_err(internal)? {
            if self
                .inner
                .uploads_released
                .lock()
                .expect("released lock")
                .contains(job.as_str())
            {
                continue;
            }
            let Some(meta) = JobMeta::load(store, &job).map_err(internal)? else {
                continue;
            };
            if meta.phase != JobPhase::Done {
                continue;
            }
            let uploads: Vec<&PathBuf> = [&meta.template_path, &meta.recipients_path]
                .into_iter()
                .filter(|p| self.is_upload(p))
                .collect();
            if uploads.is_empty() {
                continue;
            }
            let key = format!("{}{job}", runner::DONE_AT_META);
            let done_at = match store
                .meta_get(&key)
                .map_err(internal)?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(t) => t,
                // Done before this was recorded: the retention counts from now.
                None => {
                    store
                        .meta_put(&key, now.to_string().as_bytes())
                        .map_err(internal)?;
                    now
                }
            };
            if now.saturating_sub(done_at) < retention {
                continue;
            }
            self.inner
                .uploads_released
                .lock()
                .expect("released lock")
                .insert(job.to_string());
            for p in uploads {
                if self.inner.uploads.count(p) > 0 && self.inner.uploads.release(p) {
                    removed += 1;
                }
            }
            info!(job = %job, "Uploads of a done job removed (admin.upload_retention).");
        }
        Ok(removed)
    }
}

/// Largest template file accepted.
pub const TEMPLATE_MAX_BYTES: u64 = 1 << 20;

/// Reads a template file, bounded by [`TEMPLATE_MAX_BYTES`].
pub(super) fn read_template(path: &Path) -> Result<String, BackendError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TEMPLATE_MAX_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| BackendError::BadRequest(format!("template {}: {e}", path.display())))?;
    if text.len() as u64 > TEMPLATE_MAX_BYTES {
        return Err(BackendError::BadRequest(format!(
            "template {}: larger than {TEMPLATE_MAX_BYTES} bytes",
            path.display()
        )));
    }
    Ok(text)
}

/// Removes staged upload files when dropped.
pub(super) struct StagedCleanup(pub(super) Vec<PathBuf>);

impl Drop for StagedCleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
