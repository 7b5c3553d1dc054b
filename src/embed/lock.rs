//! The batch job's exclusive lock on its work directory.
//!
//! A scheduler retries a shard while its first attempt may still be running; both would
//! append to the same staging files. The job therefore holds an advisory `flock` on
//! `WORK/lock` for its whole run (staging, build, publish, clean-up). The kernel drops a
//! flock when its holder dies, so a killed job never blocks the next one; the file's
//! content (pid, host, start time of the holder) only serves the messages: a second job
//! names the running one, and a job that finds a file left by a dead holder says it
//! takes over.
//!
//! The job removes the work directory (lock file included) when it has published. A job
//! that waited on the old file then holds a lock on an unlinked inode, so after every
//! acquisition the lock file's inode is compared with the path's, and on a mismatch the
//! lock is taken again on the new file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Name of the lock file inside the work directory.
pub const LOCK_FILE: &str = "lock";

/// Who holds (or last held) a work directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
}

impl Holder {
    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            started: utc_now(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "pid {} on host {}, started {}",
            self.pid, self.host, self.started
        )
    }
}

/// A held job lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct JobLock {
    file: File,
    path: PathBuf,
}

impl JobLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the job lock of `work_dir` (created if needed). When another live job holds it:
/// fails at once with [`Error::JobBusy`] naming that job, or, with `wait`, waits for it
/// (calling `notify` once with what it waits for). A lock file left by a dead job is
/// taken over, with a notice saying whose it was.
pub fn acquire(work_dir: &Path, wait: bool, notify: &mut dyn FnMut(String)) -> Result<JobLock> {
    let path = work_dir.join(LOCK_FILE);
    let mut announced = false;
    loop {
        std::fs::create_dir_all(work_dir).at(work_dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file)
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "a job that has not yet recorded itself".into());
                if !wait {
                    return Err(Error::JobBusy {
                        work_dir: work_dir.to_path_buf(),
                        holder,
                    });
                }
                if !announced {
                    notify(format!(
                        "{}: waiting for the embed job running on this output ({holder})",
                        work_dir.display()
                    ));
                    announced = true;
                }
                file.lock().at(&path)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        if !same_file(&file, &path) {
            // The holder finished and removed the directory while we waited: lock the
            // current file instead.
            continue;
        }
        if let Some(previous) = read_holder(&mut file) {
            if !announced {
                notify(format!(
                    "{}: taking over the work directory from {}, which is no longer running (stale lock)",
                    work_dir.display(),
                    previous.describe()
                ));
            }
        }
        let me = serde_json::to_vec(&Holder::me()).expect("json");
        file.set_len(0).at(&path)?;
        file.seek(SeekFrom::Start(0)).at(&path)?;
        file.write_all(&me).at(&path)?;
        file.sync_data().at(&path)?;
        return Ok(JobLock { file, path });
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Unlocking is implicit in closing; clear the record first so that the next job
        // does not report a stale lock after a clean finish.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within
        // it when the name fits (and we stop at the first NUL either way).
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(s) = std::str::from_utf8(&buf[..end]) {
                if !s.is_empty() {
                    return s.to_string();
                }
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_string(secs)
}

/// Calendar date and time of day in UTC of seconds since the Unix epoch (proleptic
/// Gregorian calendar): (year, month, day, hour, minute, second).
pub fn utc_parts(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// Formats seconds since the Unix epoch as UTC, ISO 8601 (`2023-11-14T22:13:20Z`).
pub fn utc_string(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_second_holder_is_refused_and_a_dead_ones_file_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        let mut notes = Vec::new();
        let first = acquire(&work, false, &mut |m| notes.push(m)).unwrap();
        assert!(notes.is_empty());
        let err = acquire(&work, false, &mut |m| notes.push(m)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("wait for it"),
            "{text}"
        );
        drop(first);
        // A holder that died leaves its record behind (the flock is gone).
        let dead = Holder {
            pid: 999_999,
            host: "node7".into(),
            started: "2026-01-01T00:00:00Z".into(),
        };
        std::fs::write(work.join(LOCK_FILE), serde_json::to_vec(&dead).unwrap()).unwrap();
        let _second = acquire(&work, false, &mut |m| notes.push(m)).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("stale lock") && notes[0].contains("pid 999999 on host node7"),
            "{}",
            notes[0]
        );
    }
}
