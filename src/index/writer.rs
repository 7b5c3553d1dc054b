//! The writers' protocol (index-format.md, "Commit protocol"): the writer lock,
//! generation numbers and file names, checking what a writer reads, publishing a new
//! manifest, and garbage collection. A [`NewGeneration`] that is dropped without being
//! published deletes the files it wrote, so a writer that fails (ENOSPC, a bad input)
//! leaves the directory as it found it and the next writer can run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::disk::format::crc32;
use super::disk::manifest::{Manifest, MANIFEST_FILE};
use super::disk::store::Tombstones;
use crate::error::{Error, IoContext, Result};
use crate::fsio;

/// File in an index directory that writers hold an exclusive lock on (`flock`) while
/// they change the index. Not part of the index; readers ignore it.
pub const WRITER_LOCK_FILE: &str = "writer.lock";

/// The exclusive writer lock of an index directory; released on drop, and by the kernel
/// when the process dies (so a killed writer never leaves a stale lock).
pub struct WriterLock {
    file: std::fs::File,
    dir: PathBuf,
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Unlock explicitly: a child forked by another thread meanwhile shares the open
        // file (until its exec closes it), and closing ours alone would leave it locked.
        let _ = self.file.unlock();
    }
}

impl WriterLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes the writer lock of `dir` without waiting: [`Error::Locked`] if another writer
/// (process or handle) holds it.
pub fn lock_writer(dir: &Path) -> Result<WriterLock> {
    if !dir.is_dir() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            reason: "no such index directory".into(),
        });
    }
    let path = dir.join(WRITER_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(WriterLock {
            file,
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// File name of a generation's file: `g000042.<suffix>`.
pub(crate) fn file_name(gen: u64, suffix: &str) -> String {
    format!("g{gen:06}.{suffix}")
}

/// Generation number in a file name written by [`file_name`].
pub(crate) fn generation_of(file: &str) -> Option<u64> {
    let rest = file.strip_prefix('g')?;
    let (digits, _) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One past the highest generation named by the manifest or by any file present
/// (leftovers of an interrupted build are never reused while they might be mapped).
fn next_generation(dir: &Path) -> u64 {
    let mut max = Manifest::read(dir).map(|m| m.generation).unwrap_or(0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Some(g) = e.file_name().to_str().and_then(generation_of) {
                max = max.max(g);
            }
        }
    }
    max + 1
}

/// The generation a writer is writing. Dropped without [`NewGeneration::publish`] (an
/// error, a panic), it deletes every file of its generation: the writer holds the lock
/// and the number is fresh, so those files are its own partial output.
pub(crate) struct NewGeneration<'a> {
    lock: &'a WriterLock,
    gen: u64,
    published: bool,
}

impl<'a> NewGeneration<'a> {
    pub fn start(lock: &'a WriterLock) -> NewGeneration<'a> {
        NewGeneration {
            gen: next_generation(lock.dir()),
            lock,
            published: false,
        }
    }

    pub fn number(&self) -> u64 {
        self.gen
    }

    pub fn dir(&self) -> &Path {
        self.lock.dir()
    }

    /// Name of this generation's file with `suffix`, and its path.
    pub fn file(&self, suffix: &str) -> (String, PathBuf) {
        let name = file_name(self.gen, suffix);
        let path = self.dir().join(&name);
        (name, path)
    }

    /// Commits `manifest` (which must carry this generation): fsyncs the directory (the
    /// new files' entries), replaces `manifest.json` atomically, then deletes generation
    /// files the new manifest does not name.
    pub fn publish(mut self, manifest: &Manifest) -> Result<()> {
        debug_assert_eq!(manifest.generation, self.gen);
        let dir = self.dir().to_path_buf();
        fsio::sync_dir(&dir)?;
        crate::failpoint!("index::before_commit")?;
        manifest.commit(&dir)?;
        self.published = true;
        collect_garbage(&dir, manifest);
        Ok(())
    }
}

impl Drop for NewGeneration<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let dir = self.lock.dir();
        // A commit whose final directory fsync failed has still renamed the manifest
        // into place: its files are the index now.
        if Manifest::read(dir).is_ok_and(|m| m.generation == self.gen) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().and_then(generation_of) == Some(self.gen) {
                // Best effort: what is left costs space, never correctness.
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_file(fsio::temp_path(&dir.join(MANIFEST_FILE)));
    }
}

/// Deletes `g*` files the manifest does not name (older generations, leftovers).
/// Readers that mapped them keep their maps; a reader that read the old manifest but has
/// not opened its files yet re-reads the manifest ([`super::Index::open`]).
fn collect_garbage(dir: &Path, manifest: &Manifest) {
    let keep: HashSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            if generation_of(file).is_some() && !keep.contains(file) && file != MANIFEST_FILE {
                // Best effort: a leftover file costs space, never correctness.
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Checks files a writer is about to read against the manifest, so that it never copies
/// damage into a freshly checksummed generation: each named file's length and crc32
/// (reads it in full), and a tombstone file's set bits against its header. `names`
/// selects the files (`None`: every file the manifest lists). Fails with
/// [`Error::Corrupted`] naming the first damaged file.
pub(crate) fn check_inputs(dir: &Path, manifest: &Manifest, names: Option<&[&str]>) -> Result<()> {
    for f in &manifest.files {
        if names.is_some_and(|n| !n.contains(&f.name.as_str())) {
            continue;
        }
        let path = dir.join(&f.name);
        let len = std::fs::metadata(&path).at(&path)?.len();
        if len != f.len {
            return Err(Error::corrupted(
                &path,
                format!(
                    "is {len} bytes, the manifest records {}; refusing to write a new \
                     generation from it (run `tailor index verify`)",
                    f.len
                ),
            ));
        }
        let crc = if len == 0 {
            crc32(&[])
        } else {
            crc32(&fsio::map_path(&path)?)
        };
        if crc != f.crc32 {
            return Err(Error::corrupted(
                &path,
                format!(
                    "crc32 {crc:08x} differs from the manifest's {:08x}; refusing to write a \
                     new generation from it (run `tailor index verify`)",
                    f.crc32
                ),
            ));
        }
    }
    if let Some(name) = &manifest.tombstones {
        if names.is_none_or(|n| n.contains(&name.as_str())) {
            let path = dir.join(name);
            let t = Tombstones::open(&path)?;
            t.check()?;
            if t.removed != manifest.removed {
                return Err(Error::corrupted(
                    &path,
                    format!(
                        "{} removed rows, the manifest records {}",
                        t.removed, manifest.removed
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Removes a work directory when dropped (merge staging), whatever the outcome.
pub(crate) struct WorkDir(pub PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names() {
        assert_eq!(file_name(3, "ids"), "g000003.ids");
        assert_eq!(generation_of("g000003.a0.vec"), Some(3));
        assert_eq!(generation_of("g1234567.ids"), Some(1234567));
        assert_eq!(generation_of("manifest.json"), None);
        assert_eq!(generation_of("g.ids"), None);
        assert_eq!(generation_of("gx1.ids"), None);
    }
}
