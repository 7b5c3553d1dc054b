//! An index as the evaluation's vector source, and its graphs as the approximate searcher.

use super::{NeighbourSearch, VectorSource};
use crate::error::Result;
use crate::index::{Index, SearchOptions};

impl VectorSource for Index {
    fn dim(&self, attribute: &str) -> Result<usize> {
        Index::dim(self, attribute)
    }
    fn vectors(&self, attribute: &str) -> Result<&[f32]> {
        Index::vectors(self, attribute)
    }
    fn row(&self, id: &str) -> Option<usize> {
        Index::row(self, id)
    }
}

/// HNSW search of an index at a fixed `ef`, for MAP from approximate top-k lists.
pub struct GraphSearch<'a> {
    pub index: &'a Index,
    pub ef: usize,
}

impl NeighbourSearch for GraphSearch<'_> {
    fn search(&self, attribute: &str, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        Ok(self
            .index
            .search(attribute, query, k, self.ef.max(k))?
            .into_iter()
            .map(|h| (h.row, h.score))
            .collect())
    }

    fn search_accepting(
        &self,
        attribute: &str,
        query: &[f32],
        k: usize,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Vec<(usize, f32)>> {
        let mut opts = SearchOptions::new(k, self.ef.max(k));
        opts.accept = Some(accept);
        Ok(self
            .index
            .search_with(attribute, query, &opts)?
            .into_iter()
            .map(|h| (h.row, h.score))
            .collect())
    }
}
