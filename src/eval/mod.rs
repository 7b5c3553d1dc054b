//! Exact evaluation of retrieval quality: MAP per attribute with the exact random
//! baseline, precision/recall/nDCG at k, a per-value breakdown, what approximate search
//! costs in MAP, and triplet accuracy.
//!
//! The metric follows the ASEN papers (see `ap` for the tie rule): for one attribute,
//! every query is ranked against every candidate of that attribute by inner product, a
//! candidate is relevant when its value equals the query's, AP is averaged per
//! attribute, and the overall MAP weights attributes by their query counts.
//!
//! Inputs are plain data: vectors come from a [`VectorSource`] (row-major `f32`
//! matrices, one per attribute, rows shared by item id), query and candidate sets are
//! [`AttributeSet`]s of rows and value ids. [`source`] builds both from `.npy` files,
//! catalogs and list files.

pub mod ap;
pub mod index_source;
pub mod kernel;
pub mod map;
pub mod metrics;
pub mod report;
pub mod source;
pub mod triplets;

use crate::error::Result;

pub use map::{evaluate_map, MapOptions};
pub use report::{AttributeMap, MapReport, TripletReport};
pub use triplets::evaluate_triplets;

/// Where per-attribute vectors come from (a set of `.npy` files, an index).
pub trait VectorSource: Sync {
    /// Dimension of `attribute`'s vectors.
    fn dim(&self, attribute: &str) -> Result<usize>;
    /// `attribute`'s vectors: row-major, `dim` floats per row, rows indexed by [`row`].
    ///
    /// [`row`]: VectorSource::row
    fn vectors(&self, attribute: &str) -> Result<&[f32]>;
    /// Row of an item id (the same row in every attribute's matrix).
    fn row(&self, id: &str) -> Option<usize>;
    /// Whether query and candidate items without a row are skipped (and counted in
    /// [`AttributeSet::skipped`]) instead of refused: an index, whose items change with
    /// `remove` and `compact`, answers `None` for removed items, so the exact and the
    /// approximate ranking see one candidate set. Files of vectors refuse a missing item.
    fn skips_absent(&self) -> bool {
        false
    }
}

/// An approximate nearest-neighbour searcher over the same rows as a [`VectorSource`]
/// (an HNSW index at a given `ef`).
pub trait NeighbourSearch: Sync {
    /// Up to `k` rows best matching `query` in `attribute`'s space, best first, each with
    /// its inner-product score.
    fn search(&self, attribute: &str, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>>;

    /// As [`search`](NeighbourSearch::search), but returning only rows for which
    /// `accept` holds (the attribute's candidates), as a filtered graph search does. The
    /// default filters an unfiltered list, which can return fewer than `k`.
    fn search_accepting(
        &self,
        attribute: &str,
        query: &[f32],
        k: usize,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Vec<(usize, f32)>> {
        let mut hits = self.search(attribute, query, k)?;
        hits.retain(|&(row, _)| accept(row));
        Ok(hits)
    }

    /// [`search_accepting`](NeighbourSearch::search_accepting) for many queries, in
    /// query order. The default searches one query after another; an index searcher
    /// spreads them over threads ([`crate::index::Index::search_rows_batch`]).
    fn search_batch_accepting(
        &self,
        attribute: &str,
        queries: &[&[f32]],
        k: usize,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        queries
            .iter()
            .map(|q| self.search_accepting(attribute, q, k, accept))
            .collect()
    }
}

/// The queries and candidates of one attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeSet {
    /// Attribute name (the key of its vectors in the [`VectorSource`]).
    pub name: String,
    /// Value names, indexed by value id.
    pub values: Vec<String>,
    /// Query rows and their value ids.
    pub queries: Vec<(usize, u16)>,
    /// Candidate rows and their value ids, in candidate-list order (the tie order).
    pub candidates: Vec<(usize, u16)>,
    /// Queries and candidates left out because the source has no row for them (an
    /// index's removed items; see [`VectorSource::skips_absent`]).
    pub skipped: usize,
}
