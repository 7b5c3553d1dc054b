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
pub mod error;
pub mod eval;
pub mod index;
pub mod model;
pub mod npy;
pub mod progress;
pub mod query;
pub mod train;

pub use error::{Error, Result};
