//! Per-attribute vector indexes on disk: memory-mapped f32 rows (plus an optional
//! compact f16/int8 copy), a flat HNSW graph per attribute, an id table, optional
//! labels and tombstones, all named by `manifest.json`, the commit point.
//!
//! Build with [`build`] (graphs from the native parallel HNSW builder, written in the
//! flat layout), open with [`Index::open`] (maps files and checks headers; reads no vectors),
//! search with [`Index::search`] / [`Index::search_exact`], update with [`add`] and
//! [`remove`], rebuild without removed items with [`compact`]. The byte layout is in
//! `index-format.md`.
//!
//! Layers, each using only those below it:
//! - [`disk`]: bytes on disk (headers per file kind, mapped stores, the manifest);
//! - [`hnsw`]: graph file and walk, builder, distance kernels, exact top-k;
//! - `reader`: [`Index`] (open, search, verify);
//! - `writer`: the writers' protocol (lock, generations, input checks, publish, GC);
//! - `build` (build, add, remove) and `merge` (merge, compact), the writers.
//!
//! This file only re-exports.

pub(crate) mod disk;
pub(crate) mod hnsw;

mod build;
mod merge;
mod reader;
pub mod set;
mod writer;

pub use build::{
    add, build, build_in_order, remove, AttributeInput, AttributeSummary, BuildInput, BuildParams,
    BuildSummary, ItemLabels, RemoveSummary, RowOrder,
};
pub use disk::format::{
    Dtype, FileEntry, INDEX_FORMAT_OLDEST_SUPPORTED_VERSION, INDEX_FORMAT_VERSION,
};
pub use disk::manifest::{AttributeEntry, CompactKind, Manifest, ManifestParams, MANIFEST_FILE};
pub use merge::{compact, merge};
pub use reader::{verify_dir, FileCheck, Hit, Index, SearchOptions, VerifyReport, NORM_TOLERANCE};
pub use set::IndexSet;
pub use writer::{lock_writer, WriterLock, WRITER_LOCK_FILE};

// The module paths of the flat layout before the split (`super::manifest::Manifest`,
// `super::format::FileEntry`, ...), for crate code written against it.
#[allow(unused_imports)]
pub(crate) use disk::{format, manifest, store};
#[allow(unused_imports)]
pub(crate) use hnsw::graph;

/// Inner-product kernels and normalisation (used by the query engine and the benches).
pub mod distance {
    pub use super::hnsw::distance::{dot_f32, normalize};
}

/// Brute-force top-k, the ground truth of graph searches.
pub mod exact {
    pub use super::hnsw::exact::{top_k, top_k_by};
}
