//! The crate's one filesystem layer: durable atomic replacement of a file, the one
//! `unsafe` read-only memory map, and directory fsync. Every writer of a file that a
//! reader may open while it is written (index files, embed staging state, training
//! state, model files, the feature cache, logs) goes through here, so they all have
//! the same durability: a reader sees the old file or the new one, never a torn one,
//! and after a crash the file is one of the two.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

/// The temporary name `atomic_write*` writes before the rename: `<name>.tmp` in the same
/// directory (a rename across directories may cross filesystems and is not atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "file".into());
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Replaces `path` with `bytes`: temp file in the same directory, fsync, rename, fsync of
/// the directory. On error the temp file is removed and `path` is unchanged.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes).at(temp_path(path)))
}

/// [`atomic_write`] with the content streamed by `write` into a buffered temp file.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    atomic_write_path(path, |tmp| {
        let file = File::create(tmp).at(tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush().at(tmp)?;
        Ok(())
    })
}

/// [`atomic_write`] for a writer that needs a path of its own (a library that saves to a
/// file name): `write` creates the temp file at the path it is given; this fsyncs it,
/// renames it over `path` and fsyncs the directory.
pub fn atomic_write_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp)
        .and_then(|()| sync_file(&tmp))
        .and_then(|()| crate::failpoint!("fsio::before_rename"))
        .and_then(|()| std::fs::rename(&tmp, path).at(path));
    if let Err(e) = result {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

/// Publishes a temp file a caller wrote itself at [`temp_path`]`(path)`: fsync, rename
/// over `path`, fsync of the directory; on error the temp file is removed.
pub fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    atomic_write_path(path, |t| {
        if t == tmp {
            Ok(())
        } else {
            std::fs::rename(tmp, t).at(t)
        }
    })
}

/// fsyncs a file's data and metadata.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).at(path)
}

/// fsyncs a directory so that new entries, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Opens and maps a whole file read-only.
pub fn map_path(path: &Path) -> Result<Mmap> {
    let file = File::open(path).at(path)?;
    map_readonly(&file, path)
}

/// Maps the whole of an open file read-only (`path` names it in errors).
///
/// This is the crate's only `unsafe` file map. SAFETY: a map is undefined behaviour if
/// the file is modified or truncated while mapped. Every file tailor maps is immutable
/// once written: index files are written once under a fresh generation name and
/// published by the manifest rename, never modified afterwards (updates write new
/// files); staging, cache and merge files are complete (fsynced) before they are mapped
/// and are replaced only by rename, which leaves an existing map on the old inode;
/// `.npy` inputs are the user's, documented as not to be modified while a command runs.
/// Every read of a map goes through bounds-checked slices.
pub fn map_readonly(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: see the function comment: mapped files are never modified in place.
    unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!temp_path(&p).exists());
        assert_eq!(temp_path(&p), dir.path().join("state.json.tmp"));
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        atomic_write(&p, b"old").unwrap();
        let err = atomic_write_with(&p, |w| {
            w.write_all(b"partial").at(&p)?;
            Err(Error::Usage("disk full".into()))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn map_names_the_file() {
        let err = map_path(Path::new("/nonexistent/tailor/x.vec")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tailor/x.vec"),
            "{err}"
        );
    }
}
