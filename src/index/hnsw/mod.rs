//! The search structures over mapped rows: the flat HNSW graph file and its walk
//! ([`graph`]), the parallel builder ([`builder`]), SIMD scoring kernels ([`distance`]),
//! 1-bit codes and their popcount kernels ([`bits`])
//! and brute-force top-k, the ground truth ([`exact`]).

pub mod bits;
pub mod bits4;
pub mod builder;
pub mod distance;
pub mod exact;
pub mod graph;
