//! An index as the evaluation's vector source, and its graphs as the approximate searcher.

use super::{NeighbourSearch, VectorSource};
use crate::error::Result;
use crate::index::{Index, IndexSet, SearchOptions};

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

impl VectorSource for IndexSet {
    fn dim(&self, attribute: &str) -> Result<usize> {
        IndexSet::dim(self, attribute)
    }
    fn vectors(&self, attribute: &str) -> Result<&[f32]> {
        IndexSet::vectors(self, attribute)
    }
    fn row(&self, id: &str) -> Option<usize> {
        IndexSet::row(self, id)
    }
}

/// HNSW search of every segment of a set at a fixed `ef`, merged (set rows).
pub struct SetGraphSearch<'a> {
    pub set: &'a IndexSet,
    pub ef: usize,
}

impl NeighbourSearch for SetGraphSearch<'_> {
    fn search(&self, attribute: &str, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        Ok(self
            .set
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
            .set
            .search_with(attribute, query, &opts)?
            .into_iter()
            .map(|h| (h.row, h.score))
            .collect())
    }
}
