//! Retrieval metrics from the ranks of the relevant candidates ([`super::ap::relevant_ranks`]):
//! precision, recall and nDCG at a cut-off, and the per-value confusion counts of the
//! best-ranked candidate.
//!
//! Conventions for a query with no relevant candidate: precision 0, recall 0, nDCG 0
//! (as AP is 0 there), so such queries lower the means instead of being dropped.

/// Relevant candidates among the first `k` (ranks ascending).
pub fn hits_at(ranks: &[u32], k: usize) -> usize {
    ranks.partition_point(|&r| (r as usize) <= k)
}

/// Precision at `k`: relevant candidates in the top `k`, divided by `k`. When fewer than
/// `k` candidates exist, still divided by `k` (the usual trec_eval convention).
pub fn precision_at(ranks: &[u32], k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    hits_at(ranks, k) as f64 / k as f64
}

/// Recall at `k`: relevant candidates in the top `k` over all relevant; 0 when none.
pub fn recall_at(ranks: &[u32], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    hits_at(ranks, k) as f64 / ranks.len() as f64
}

/// nDCG at `k` with binary gains: `sum_{rank<=k} 1/log2(rank+1)` over the same sum for the
/// ideal ranking (`min(R, k)` relevant candidates on top); 0 when nothing is relevant.
pub fn ndcg_at(ranks: &[u32], k: usize) -> f64 {
    let ideal: f64 = (1..=ranks.len().min(k))
        .map(|i| 1.0 / ((i + 1) as f64).log2())
        .sum();
    if ideal == 0.0 {
        return 0.0;
    }
    let dcg: f64 = ranks[..hits_at(ranks, k)]
        .iter()
        .map(|&r| 1.0 / ((r + 1) as f64).log2())
        .sum();
    dcg / ideal
}

/// Per value of an attribute: how often the best-ranked candidate of a query with that
/// value carries each value. `counts[query_value][top1_value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(values: usize) -> Self {
        Confusion {
            counts: vec![vec![0; values]; values],
        }
    }
    pub fn add(&mut self, query_value: u16, top1_value: u16) {
        self.counts[query_value as usize][top1_value as usize] += 1;
    }
    /// Share of queries of `value` whose best candidate has the same value.
    pub fn accuracy(&self, value: usize) -> f64 {
        let row = &self.counts[value];
        let total: usize = row.iter().sum();
        if total == 0 {
            0.0
        } else {
            row[value] as f64 / total as f64
        }
    }
    /// The other values the best candidate of `value`'s queries had, most frequent first
    /// (ties by value id).
    pub fn confused_with(&self, value: usize) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self.counts[value]
            .iter()
            .enumerate()
            .filter(|&(w, &c)| w != value && c > 0)
            .map(|(w, &c)| (w, c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_metrics_hand_computed() {
        let ranks = [1, 3, 4];
        assert_eq!(hits_at(&ranks, 3), 2);
        assert!((precision_at(&ranks, 2) - 0.5).abs() < 1e-12);
        assert!((recall_at(&ranks, 3) - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((ndcg_at(&ranks, 3) - dcg / idcg).abs() < 1e-12);
        assert_eq!(ndcg_at(&[], 3), 0.0);
        assert_eq!(recall_at(&[], 3), 0.0);
        assert_eq!(ndcg_at(&[1, 2], 5), 1.0);
    }

    #[test]
    fn confusion_counts() {
        let mut c = Confusion::new(3);
        c.add(0, 0);
        c.add(0, 2);
        c.add(0, 2);
        c.add(0, 1);
        assert!((c.accuracy(0) - 0.25).abs() < 1e-12);
        assert_eq!(c.confused_with(0), vec![(2, 2), (1, 1)]);
        assert_eq!(c.accuracy(1), 0.0);
    }
}
