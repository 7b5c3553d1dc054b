//! Brute-force top-k over mapped rows: the ground truth for the graph search.

use rayon::prelude::*;

use super::distance::dot_f32;

/// Rows per parallel task.
const CHUNK_ROWS: usize = 4096;

/// The `k` rows most similar to `query` among those `accept` admits, best first
/// (ties broken by row id, so results are deterministic).
pub fn top_k(
    rows: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    accept: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<(f32, usize)> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let mut best: Vec<(f32, usize)> = rows
        .par_chunks(CHUNK_ROWS * dim)
        .enumerate()
        .map(|(c, chunk)| {
            let mut local: Vec<(f32, usize)> = Vec::with_capacity(2 * k.max(8));
            for (i, row) in chunk.chunks_exact(dim).enumerate() {
                let r = c * CHUNK_ROWS + i;
                if !accept(r) {
                    continue;
                }
                let s = dot_f32(query, row);
                push_bounded(&mut local, (s, r), k);
            }
            local
        })
        .reduce(Vec::new, |mut a, b| {
            for hit in b {
                push_bounded(&mut a, hit, k);
            }
            a
        });
    best.sort_by(order);
    best.truncate(k);
    best
}

fn order(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the `k` best hits in `v`: appends, and when it holds `2k` hits, keeps the
/// best `k` (amortised O(1) per hit; callers sort and truncate at the end).
fn push_bounded(v: &mut Vec<(f32, usize)>, hit: (f32, usize), k: usize) {
    v.push(hit);
    if v.len() >= 2 * k.max(8) {
        v.select_nth_unstable_by(k - 1, order);
        v.truncate(k);
    }
}

/// The `k` best of rows `0..n` under `score` (`None` skips a row), best first, ties by row.
pub fn top_k_by(
    n: usize,
    k: usize,
    score: &(dyn Fn(usize) -> Option<f32> + Sync),
) -> Vec<(f32, usize)> {
    if k == 0 {
        return Vec::new();
    }
    let chunks: Vec<usize> = (0..n.div_ceil(CHUNK_ROWS)).collect();
    let mut best = chunks
        .par_iter()
        .map(|&c| {
            let mut local: Vec<(f32, usize)> = Vec::with_capacity(2 * k.max(8));
            for r in c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(n) {
                if let Some(s) = score(r) {
                    push_bounded(&mut local, (s, r), k);
                }
            }
            local
        })
        .reduce(Vec::new, |mut a, b| {
            for hit in b {
                push_bounded(&mut a, hit, k);
            }
            a
        });
    best.sort_by(order);
    best.truncate(k);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sorting_everything() {
        let dim = 3;
        let rows: Vec<f32> = (0..3 * 10_000)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let q = [0.3, -0.5, 0.8];
        let got = top_k(&rows, dim, &q, 7, &|r| r % 3 != 0);
        let mut all: Vec<(f32, usize)> = rows
            .chunks_exact(dim)
            .enumerate()
            .filter(|(r, _)| r % 3 != 0)
            .map(|(r, row)| (dot_f32(&q, row), r))
            .collect();
        all.sort_by(order);
        all.truncate(7);
        assert_eq!(got, all);
        assert!(top_k(&rows, dim, &q, 0, &|_| true).is_empty());
    }
}
