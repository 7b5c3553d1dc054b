//! The search structures over mapped rows: the flat HNSW graph file and its walk
//! ([`graph`]), the parallel builder ([`builder`]), SIMD scoring kernels ([`distance`])
//! and brute-force top-k, the ground truth ([`exact`]).

pub mod builder;
pub mod distance;
pub mod exact;
pub mod graph;
