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
    /// Removed items have no row here: evaluation skips them on both sides (exact and
    /// graph rankings), as the graph never returns them.
    fn row(&self, id: &str) -> Option<usize> {
        Index::row(self, id).filter(|&r| !self.is_removed(r))
    }
    fn skips_absent(&self) -> bool {
        true
    }
}

/// HNSW search of an index at a fixed `ef`, for MAP from approximate top-k lists.
pub struct GraphSearch<'a> {
    pub index: &'a Index,
    pub ef: usize,
}

impl NeighbourSearch for GraphSearch<'_> {
    fn search(&self, attribute: &str, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        let opts = SearchOptions::new(k, self.ef.max(k));
        Ok(self
            .index
            .search_rows(attribute, query, &opts)?
            .into_iter()
            .map(|(score, row)| (row, score))
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
            .search_rows(attribute, query, &opts)?
            .into_iter()
            .map(|(score, row)| (row, score))
            .collect())
    }

    fn search_batch_accepting(
        &self,
        attribute: &str,
        queries: &[&[f32]],
        k: usize,
        accept: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let mut opts = SearchOptions::new(k, self.ef.max(k));
        opts.accept = Some(accept);
        Ok(self
            .index
            .search_rows_batch(attribute, queries, &opts)?
            .into_iter()
            .map(|found| found.into_iter().map(|(score, row)| (row, score)).collect())
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
