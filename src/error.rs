//! The library's error type. Every variant names the file, line or item it is about.

use std::path::{Path, PathBuf};

/// Errors of the tailor library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A text input (catalog file, list, manifest) is malformed at a given line.
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A whole input is invalid (not attributable to one line).
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A binary file is malformed, truncated or fails its checksum.
    #[error("{path}: corrupted: {reason}")]
    Corrupted { path: PathBuf, reason: String },
    /// A file was written by an unsupported version of tailor's formats.
    #[error(
        "{path}: format version {found} is not supported (this build reads {supported}); {hint}"
    )]
    IncompatibleVersion {
        path: PathBuf,
        found: u32,
        supported: String,
        hint: String,
    },
    #[error("attribute {attribute:?}: expected dimension {expected}, got {got}")]
    DimensionMismatch {
        attribute: String,
        expected: usize,
        got: usize,
    },
    #[error("unknown attribute {name:?} (known: {known})")]
    UnknownAttribute { name: String, known: String },
    #[error("unknown item {id:?}")]
    UnknownItem { id: String },
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{0}")]
    Usage(String),
    /// Another writer holds the index directory's writer lock.
    #[error("index {} is being written by another process", dir.display())]
    Locked { dir: PathBuf },
    /// Another batch job holds the work directory's job lock (and the job would not wait).
    #[error(
        "{}: another embed job on this output is running ({holder}); retry later, or wait for it",
        work_dir.display()
    )]
    JobBusy { work_dir: PathBuf, holder: String },
    /// The batch job rejected more of the catalog's items than it may (unreadable images).
    #[error(
        "{}: {rejected} of {selected} items rejected ({:.2}%), more than the allowed {:.2}%; see {}",
        catalog.display(),
        rate * 100.0,
        max_rate * 100.0,
        report.display()
    )]
    TooManyRejects {
        catalog: PathBuf,
        rejected: usize,
        selected: usize,
        rate: f64,
        max_rate: f64,
        report: PathBuf,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn parse(path: impl AsRef<Path>, line: usize, reason: impl Into<String>) -> Self {
        Error::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
    pub fn invalid(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
    pub fn corrupted(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Adds the path to an `std::io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
