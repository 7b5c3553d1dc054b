//! tailor: fine-grained, attribute-specific similarity search over product catalogs.
//!
//! One embedding space per attribute (ASEN family of models), one memory-mapped
//! HNSW index per attribute, exact evaluation of retrieval quality.
//!
//! Stages, one module each: [`catalog`] (items, labels, splits, readers, the synthetic
//! catalog), [`model`] (the ASEN family on Candle), [`embed`] (catalog -> vectors),
//! [`index`] (on-disk per-attribute vectors and graphs), [`query`] (search and
//! re-ranking), [`eval`] (MAP, triplet accuracy), [`train`].

pub mod catalog;
pub mod embed;
pub mod encode;
pub mod error;
pub mod eval;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod fsio;
pub mod image_io;
pub mod index;
pub mod model;
pub mod npy;
pub mod progress;
pub mod query;
pub mod show;
pub mod train;

pub use error::{Error, Result};

/// Evaluates a named failpoint (see `failpoints`, behind the `failpoints` feature): an
/// armed point returns its injected error. Without the feature this is `Ok(())`.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        $crate::failpoints::eval($name)
    };
}

/// Evaluates a named failpoint: `Ok(())` (the `failpoints` feature is off).
#[cfg(not(feature = "failpoints"))]
#[doc(hidden)]
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        $crate::Result::<()>::Ok(())
    };
}

/// FNV-1a, 64 bit: a stable hash for assignments that must never change (manifest
/// query/candidate lists, shard K/N).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0;
            h = h.wrapping_mul(0x100000001b3);
        }
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// `<dir>/<name>.<suffix>` beside `path` (work directories and reports of a job).
pub(crate) fn sibling_path(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    path.with_file_name(format!("{name}.{suffix}"))
}
