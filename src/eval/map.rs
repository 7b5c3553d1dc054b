//! MAP over query/candidate sets: blocked exact scoring, per-query metrics, and the
//! same metrics from approximate top-k lists.
//!
//! Per attribute, candidates are packed once ([`PackedCandidates`], a copy of the
//! candidate vectors); query blocks (at most [`MapOptions::query_block`] rows and
//! [`MapOptions::max_block_bytes`] of scores) go to rayon, and each worker scores its
//! block into a `block x candidates` buffer and ranks those rows at once, so the
//! products of one block overlap with the ranking of another and memory stays
//! `threads x block x candidates` floats, never `queries x candidates`.
//!
//! With a [`NeighbourSearch`], each query's top-k list is also turned into a ranking:
//! returned candidates in the searcher's score order, every candidate it did not return
//! ranked after them (as if it scored minus infinity, so ties among them fall back to
//! candidate order). AP of that ranking counts a relevant candidate missing from the list
//! at its position in that tail; when the lists cover all candidates it equals the exact
//! AP. Hits that are not candidates of the attribute (other items of the index) are
//! skipped.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;

use super::ap::{self, RankScratch};
use super::kernel::{pack_queries, score_block, AlignedBuf, PackedCandidates};
use super::metrics::{self, Confusion};
use super::report::{AnnAttribute, AttributeMap, MapReport, ValueBreakdown};
use super::{AttributeSet, NeighbourSearch, VectorSource};
use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressMode};

/// Settings of [`evaluate_map`].
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// Cut-offs for precision, recall and nDCG.
    pub ks: Vec<usize>,
    /// Largest number of queries scored per block; blocks are then evened out so that
    /// every thread gets the same number, in multiples of the kernel's tile rows. Every
    /// block streams all packed candidates once, so larger blocks read them less often
    /// (384 measured about 10% faster than 192 at 23,000 x 1024-d candidates).
    pub query_block: usize,
    /// Cap on one block's score buffer (`block x candidates` floats), per thread.
    pub max_block_bytes: usize,
    /// With a searcher: how many neighbours to ask for per query.
    pub ann_k: usize,
    pub progress: ProgressMode,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            ks: vec![1, 10, 50],
            query_block: 384,
            max_block_bytes: 64 << 20,
            ann_k: 100,
            progress: ProgressMode::Quiet,
        }
    }
}

/// What one query contributes.
#[derive(Debug, Clone, Default)]
struct QueryOutcome {
    ap: f64,
    random_ap: f64,
    relevant: u32,
    /// (precision, recall, nDCG) per cut-off of [`MapOptions::ks`].
    at_k: Vec<[f64; 3]>,
    /// Value of the best-ranked candidate.
    top1_value: Option<u16>,
    /// AP and recall@k from the approximate list.
    ann: Option<(f64, f64)>,
}

/// One worker's buffers: the packed query block, its score rows (the largest buffer:
/// `block x candidates` floats), the ranking scratch and the approximate-list row.
#[derive(Default)]
struct WorkerScratch {
    qbuf: AlignedBuf,
    scores: Vec<f32>,
    ranks: RankScratch,
    ann_row: Vec<f32>,
}

/// Buffers kept per rayon thread across blocks and attributes, so the score rows are
/// allocated (and their pages faulted in) once per thread, not once per block.
struct WorkerPool {
    slots: Vec<Mutex<WorkerScratch>>,
    /// The current attribute's packed candidates, reused from one attribute to the next.
    packed: Mutex<PackedCandidates>,
}

/// A worker's buffers: its thread's slot, or private ones when the slot is busy (a
/// nested call on the same thread).
enum HeldScratch<'a> {
    Slot(MutexGuard<'a, WorkerScratch>),
    Own(Box<WorkerScratch>),
}

impl std::ops::Deref for HeldScratch<'_> {
    type Target = WorkerScratch;
    fn deref(&self) -> &WorkerScratch {
        match self {
            HeldScratch::Slot(g) => g,
            HeldScratch::Own(b) => b,
        }
    }
}

impl std::ops::DerefMut for HeldScratch<'_> {
    fn deref_mut(&mut self) -> &mut WorkerScratch {
        match self {
            HeldScratch::Slot(g) => g,
            HeldScratch::Own(b) => b,
        }
    }
}

impl WorkerPool {
    fn new() -> Self {
        WorkerPool {
            slots: (0..rayon::current_num_threads().max(1))
                .map(|_| Mutex::new(WorkerScratch::default()))
                .collect(),
            packed: Mutex::new(PackedCandidates::pack(&[], 0, &[])),
        }
    }

    fn take(&self) -> HeldScratch<'_> {
        let slot = rayon::current_thread_index().unwrap_or(0) % self.slots.len();
        match self.slots[slot].try_lock() {
            Ok(guard) => HeldScratch::Slot(guard),
            // A poisoned slot only means another block failed; its buffers are fine.
            Err(std::sync::TryLockError::Poisoned(p)) => HeldScratch::Slot(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => HeldScratch::Own(Box::default()),
        }
    }
}

/// Evaluates every attribute set against `source`'s vectors (exact), and against
/// `searcher`'s top-k lists when given.
pub fn evaluate_map(
    source: &dyn VectorSource,
    sets: &[AttributeSet],
    searcher: Option<&dyn NeighbourSearch>,
    options: &MapOptions,
) -> Result<MapReport> {
    let total_queries: usize = sets.iter().map(|s| s.queries.len()).sum();
    let progress = Progress::new("eval map", total_queries as u64, options.progress);
    let workers = WorkerPool::new();
    let mut attributes = Vec::with_capacity(sets.len());
    for set in sets {
        attributes.push(evaluate_attribute(
            source, set, searcher, options, &progress, &workers,
        )?);
    }
    progress.finish();
    Ok(MapReport::from_attributes(attributes, options.ks.clone()))
}

fn evaluate_attribute(
    source: &dyn VectorSource,
    set: &AttributeSet,
    searcher: Option<&dyn NeighbourSearch>,
    options: &MapOptions,
    progress: &Progress,
    workers: &WorkerPool,
) -> Result<AttributeMap> {
    let dim = source.dim(&set.name)?;
    let vectors = source.vectors(&set.name)?;
    if dim == 0 || vectors.len() % dim != 0 {
        return Err(Error::Usage(format!(
            "attribute {:?}: {} floats do not form rows of dimension {dim}",
            set.name,
            vectors.len()
        )));
    }
    let rows = vectors.len() / dim;
    for (what, list) in [("query", &set.queries), ("candidate", &set.candidates)] {
        if let Some(&(row, _)) = list.iter().find(|(r, _)| *r >= rows) {
            return Err(Error::Usage(format!(
                "attribute {:?}: {what} row {row} is past the end of its {rows} vectors",
                set.name
            )));
        }
    }
    let candidate_rows: Vec<usize> = set.candidates.iter().map(|c| c.0).collect();
    // The approximate searcher ranks the candidates only, like the exact ranking does.
    let mut is_candidate_row = vec![false; rows];
    for &r in &candidate_rows {
        is_candidate_row[r] = true;
    }
    let accept = |r: usize| is_candidate_row.get(r).copied().unwrap_or(false);
    let labels: Vec<u16> = set.candidates.iter().map(|c| c.1).collect();
    let mut packed_guard = workers
        .packed
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    packed_guard.repack(vectors, dim, &candidate_rows);
    let packed = &*packed_guard;
    let n = candidate_rows.len();
    let h_n = ap::harmonic(n);
    // Relevant counts per value, for the random baseline and the breakdown.
    let n_values = set.values.len().max(
        labels
            .iter()
            .chain(set.queries.iter().map(|q| &q.1))
            .map(|&v| v as usize + 1)
            .max()
            .unwrap_or(0),
    );
    let mut per_value = vec![0u32; n_values];
    for &l in &labels {
        per_value[l as usize] += 1;
    }
    // Row -> candidate positions, for mapping approximate hits.
    let mut by_row: Vec<(usize, u32)> = candidate_rows
        .iter()
        .enumerate()
        .map(|(p, &r)| (r, p as u32))
        .collect();
    by_row.sort_unstable();

    let block = block_size(set.queries.len(), n, options);
    let blocks: Vec<&[(usize, u16)]> = set.queries.chunks(block).collect();
    let results: Vec<Vec<QueryOutcome>> = blocks
        .par_iter()
        .map(|queries| -> Result<Vec<QueryOutcome>> {
            let mut held = workers.take();
            let WorkerScratch {
                qbuf,
                scores,
                ranks: scratch,
                ann_row,
            } = &mut *held;
            let rows: Vec<usize> = queries.iter().map(|q| q.0).collect();
            pack_queries(vectors, dim, &rows, qbuf);
            // Grown, never shrunk or cleared: the kernel writes every score.
            let len = queries.len() * n;
            if scores.len() < len {
                scores.resize(len, 0.0);
            }
            let scores = &mut scores[..len];
            score_block(qbuf, queries.len(), packed, scores);
            // The block's approximate lists in one batch call (threads over queries).
            let mut ann_lists = match searcher {
                Some(searcher) => {
                    let qs: Vec<&[f32]> = rows
                        .iter()
                        .map(|&r| &vectors[r * dim..(r + 1) * dim])
                        .collect();
                    searcher
                        .search_batch_accepting(&set.name, &qs, options.ann_k, &accept)?
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                None => Vec::new(),
            };
            let mut out = Vec::with_capacity(queries.len());
            for (i, &(row, value)) in queries.iter().enumerate() {
                let row_scores = &scores[i * n..(i + 1) * n];
                let ranks = ap::relevant_ranks(row_scores, &labels, value, scratch)
                    .map_err(|e| nan_error(set, row, e))?;
                let relevant = per_value.get(value as usize).copied().unwrap_or(0);
                let mut outcome = QueryOutcome {
                    ap: ap::average_precision(ranks),
                    random_ap: ap::expected_random_ap_with(h_n, n, relevant as usize),
                    relevant,
                    at_k: options
                        .ks
                        .iter()
                        .map(|&k| {
                            [
                                metrics::precision_at(ranks, k),
                                metrics::recall_at(ranks, k),
                                metrics::ndcg_at(ranks, k),
                            ]
                        })
                        .collect(),
                    top1_value: ap::top1(row_scores).map(|p| labels[p]),
                    ann: None,
                };
                if let Some(hits) = ann_lists.get_mut(i).and_then(Option::take) {
                    ann_row.clear();
                    ann_row.resize(n, f32::NEG_INFINITY);
                    for (hit_row, score) in hits {
                        let start = by_row.partition_point(|&(r, _)| r < hit_row);
                        for &(_, pos) in by_row[start..].iter().take_while(|(r, _)| *r == hit_row) {
                            if ann_row[pos as usize] == f32::NEG_INFINITY {
                                ann_row[pos as usize] = score;
                            }
                        }
                    }
                    let ann_ap = ap::average_precision(
                        ap::relevant_ranks(ann_row, &labels, value, scratch)
                            .map_err(|e| nan_error(set, row, e))?,
                    );
                    // Both top-k lists under the tie rule; unreturned candidates
                    // (minus infinity) never count as found.
                    let k = options.ann_k.min(n);
                    let exact_top: HashSet<u32> = ap::top_k(row_scores, k).into_iter().collect();
                    let found = ap::top_k(ann_row, k)
                        .into_iter()
                        .filter(|p| {
                            ann_row[*p as usize] > f32::NEG_INFINITY && exact_top.contains(p)
                        })
                        .count();
                    let recall = if k == 0 { 1.0 } else { found as f64 / k as f64 };
                    outcome.ann = Some((ann_ap, recall));
                }
                out.push(outcome);
            }
            progress.inc(queries.len() as u64);
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let outcomes: Vec<QueryOutcome> = results.into_iter().flatten().collect();
    Ok(summarise(
        set,
        n,
        &per_value,
        &outcomes,
        options,
        searcher.is_some(),
    ))
}

/// Queries per block: at most `query_block` and `max_block_bytes` of scores, the block
/// count a multiple of the thread count (so no thread idles at the end), rounded up to
/// whole kernel tiles.
pub fn block_size(queries: usize, candidates: usize, options: &MapOptions) -> usize {
    let mr = super::kernel::MR;
    let by_memory = options.max_block_bytes / (4 * candidates.max(1));
    let target = options.query_block.min(by_memory).max(mr);
    let threads = rayon::current_num_threads().max(1);
    let blocks = queries.div_ceil(target).div_ceil(threads).max(1) * threads;
    queries.div_ceil(blocks).div_ceil(mr).max(1) * mr
}

fn nan_error(set: &AttributeSet, row: usize, e: ap::RankError) -> Error {
    let ap::RankError::NanScore(pos) = e;
    Error::Usage(format!(
        "attribute {:?}: the score of query row {row} against candidate row {} is NaN \
         (the vectors hold NaN or infinite values)",
        set.name, set.candidates[pos].0
    ))
}

fn mean(values: impl Iterator<Item = f64>, count: usize) -> f64 {
    if count == 0 {
        0.0
    } else {
        // `+ 0.0`: an empty float sum is -0.0.
        values.sum::<f64>() / count as f64 + 0.0
    }
}

fn summarise(
    set: &AttributeSet,
    candidates: usize,
    per_value: &[u32],
    outcomes: &[QueryOutcome],
    options: &MapOptions,
    with_ann: bool,
) -> AttributeMap {
    let q = outcomes.len();
    let at = |idx: usize, which: usize| mean(outcomes.iter().map(|o| o.at_k[idx][which]), q);
    let value_name = |v: usize| set.values.get(v).cloned().unwrap_or_else(|| v.to_string());
    let mut confusion = Confusion::new(per_value.len());
    for ((_, value), o) in set.queries.iter().zip(outcomes) {
        if let Some(t) = o.top1_value {
            confusion.add(*value, t);
        }
    }
    let mut values = Vec::new();
    for (v, &relevant) in per_value.iter().enumerate() {
        let of_value: Vec<&QueryOutcome> = set
            .queries
            .iter()
            .zip(outcomes)
            .filter(|((_, qv), _)| *qv as usize == v)
            .map(|(_, o)| o)
            .collect();
        if of_value.is_empty() {
            continue;
        }
        values.push(ValueBreakdown {
            value: value_name(v),
            queries: of_value.len(),
            relevant_candidates: relevant as usize,
            map: mean(of_value.iter().map(|o| o.ap), of_value.len()),
            random_map: mean(of_value.iter().map(|o| o.random_ap), of_value.len()),
            top1_accuracy: confusion.accuracy(v),
            top1_confused_with: confusion
                .confused_with(v)
                .into_iter()
                .map(|(w, c)| (value_name(w), c))
                .collect(),
        });
    }
    let ann = with_ann.then(|| AnnAttribute {
        k: options.ann_k,
        map: mean(outcomes.iter().filter_map(|o| o.ann.map(|a| a.0)), q),
        recall_at_k: mean(outcomes.iter().filter_map(|o| o.ann.map(|a| a.1)), q),
    });
    AttributeMap {
        name: set.name.clone(),
        queries: q,
        candidates,
        map: mean(outcomes.iter().map(|o| o.ap), q),
        random_map: mean(outcomes.iter().map(|o| o.random_ap), q),
        queries_without_relevant: outcomes.iter().filter(|o| o.relevant == 0).count(),
        skipped_items: set.skipped,
        precision_at: options
            .ks
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, at(i, 0)))
            .collect(),
        recall_at: options
            .ks
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, at(i, 1)))
            .collect(),
        ndcg_at: options
            .ks
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, at(i, 2)))
            .collect(),
        values,
        ann,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ap::tests::reference_ap;
    use crate::eval::source::InMemoryVectors;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Small integer vectors: exact products in f32 (so every kernel agrees bit for bit)
    /// and many tied scores.
    fn random_case(seed: u64, dim: usize, rows: usize) -> (InMemoryVectors, Vec<AttributeSet>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut mats = Vec::new();
        let mut sets = Vec::new();
        for (a, values) in [(0usize, 3u16), (1, 5)] {
            let data: Vec<f32> = (0..rows * dim)
                .map(|_| rng.gen_range(-2..=2) as f32)
                .collect();
            mats.push((format!("attr{a}"), data));
            let nq = rng.gen_range(1..40);
            let nc = rng.gen_range(1..60);
            sets.push(AttributeSet {
                name: format!("attr{a}"),
                values: (0..values).map(|v| format!("v{v}")).collect(),
                // Value `values - 1` never appears among candidates: no relevant candidate.
                queries: (0..nq)
                    .map(|_| (rng.gen_range(0..rows), rng.gen_range(0..values)))
                    .collect(),
                candidates: (0..nc)
                    .map(|_| (rng.gen_range(0..rows), rng.gen_range(0..values - 1)))
                    .collect(),
                skipped: 0,
            });
        }
        (InMemoryVectors::new(dim, mats).unwrap(), sets)
    }

    fn exact_scores(src: &InMemoryVectors, set: &AttributeSet, q: usize) -> Vec<f32> {
        let dim = src.dim(&set.name).unwrap();
        let v = src.vectors(&set.name).unwrap();
        let qv = &v[q * dim..(q + 1) * dim];
        set.candidates
            .iter()
            .map(|&(c, _)| {
                qv.iter()
                    .zip(&v[c * dim..(c + 1) * dim])
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn map_matches_sort_reference() {
        for seed in 0..6 {
            let (src, sets) = random_case(seed, 1 + seed as usize * 7, 50);
            let opts = MapOptions {
                query_block: 12,
                ..Default::default()
            };
            let report = evaluate_map(&src, &sets, None, &opts).unwrap();
            let mut all = Vec::new();
            for (set, attr) in sets.iter().zip(&report.attributes) {
                let aps: Vec<f64> = set
                    .queries
                    .iter()
                    .map(|&(q, v)| {
                        let labels: Vec<u16> = set.candidates.iter().map(|c| c.1).collect();
                        reference_ap(&exact_scores(&src, set, q), &labels, v)
                    })
                    .collect();
                let want = aps.iter().sum::<f64>() / aps.len() as f64;
                assert!(
                    (attr.map - want).abs() < 1e-12,
                    "seed {seed}: {} vs {want}",
                    attr.map
                );
                let without = set
                    .queries
                    .iter()
                    .filter(|q| !set.candidates.iter().any(|c| c.1 == q.1))
                    .count();
                assert_eq!(attr.queries_without_relevant, without);
                all.extend(aps);
            }
            let overall = all.iter().sum::<f64>() / all.len() as f64;
            assert!((report.map - overall).abs() < 1e-12);
        }
    }

    #[test]
    fn single_candidate_and_hand_computed_map() {
        // 1-D vectors: candidates score 3, 1, 2 against query 1.
        let src = InMemoryVectors::new(1, vec![("a".into(), vec![1.0, 3.0, 1.0, 2.0])]).unwrap();
        let set = AttributeSet {
            name: "a".into(),
            values: vec!["x".into(), "y".into()],
            queries: vec![(0, 0), (0, 1)],
            candidates: vec![(1, 0), (2, 1), (3, 0)],
            skipped: 0,
        };
        let r = evaluate_map(
            &src,
            std::slice::from_ref(&set),
            None,
            &MapOptions::default(),
        )
        .unwrap();
        // Query x: ranking c0(x) c2(x) c1(y) -> AP 1; query y: rank 3 -> AP 1/3.
        assert!((r.map - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        let a = &r.attributes[0];
        assert_eq!(a.values[0].top1_accuracy, 1.0);
        assert_eq!(a.values[1].top1_confused_with, vec![("x".to_string(), 1)]);
        // Random baseline: n=3, r=2 and r=1.
        let want = (ap::expected_random_ap(3, 2) + ap::expected_random_ap(3, 1)) / 2.0;
        assert!((r.random_map - want).abs() < 1e-12);

        let one = AttributeSet {
            candidates: vec![(1, 1)],
            ..set
        };
        let r = evaluate_map(&src, &[one], None, &MapOptions::default()).unwrap();
        assert!((r.map - 0.5).abs() < 1e-12);
        assert!((r.random_map - 0.5).abs() < 1e-12);
    }

    /// Exact search over all rows, returning every row: the lists cover all candidates.
    struct BruteForce<'a>(&'a InMemoryVectors, usize);

    impl NeighbourSearch for BruteForce<'_> {
        fn search(&self, attribute: &str, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
            let dim = self.0.dim(attribute)?;
            let v = self.0.vectors(attribute)?;
            let mut hits: Vec<(usize, f32)> = v
                .chunks(dim)
                .enumerate()
                .map(|(r, row)| (r, row.iter().zip(query).map(|(a, b)| a * b).sum()))
                .collect();
            hits.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            hits.truncate(k.min(self.1));
            Ok(hits)
        }
    }

    #[test]
    fn ann_map_equals_exact_map_when_lists_cover_all_candidates() {
        for seed in 10..14 {
            let (src, sets) = random_case(seed, 9, 50);
            let opts = MapOptions {
                ann_k: 50,
                ..Default::default()
            };
            let r = evaluate_map(&src, &sets, Some(&BruteForce(&src, usize::MAX)), &opts).unwrap();
            for a in &r.attributes {
                let ann = a.ann.as_ref().unwrap();
                assert_eq!(ann.map, a.map, "seed {seed} attribute {}", a.name);
                assert_eq!(ann.recall_at_k, 1.0);
            }
            assert_eq!(r.ann_map, Some(r.map));
        }
    }

    #[test]
    fn truncated_lists_rank_missing_candidates_last() {
        // Candidates score 4, 3, 2, 1; relevant ones are the 2nd and 4th.
        let src =
            InMemoryVectors::new(1, vec![("a".into(), vec![5.0, 4.0, 3.0, 2.0, 1.0])]).unwrap();
        let set = AttributeSet {
            name: "a".into(),
            values: vec!["x".into(), "y".into()],
            queries: vec![(0, 1)],
            candidates: vec![(1, 0), (2, 1), (3, 0), (4, 1)],
            skipped: 0,
        };
        // The searcher returns only the query's own row (not a candidate) and the best
        // candidate: candidates 1..3 rank after it in list order -> relevant at 2 and 4.
        let opts = MapOptions {
            ann_k: 2,
            ..Default::default()
        };
        let r = evaluate_map(
            &src,
            std::slice::from_ref(&set),
            Some(&BruteForce(&src, 2)),
            &opts,
        )
        .unwrap();
        let ann = r.attributes[0].ann.as_ref().unwrap();
        assert!((ann.map - (0.5 + 0.5) / 2.0).abs() < 1e-12);
        // Exact top-2 = candidates 0 and 1; the list held only candidate 0.
        assert!((ann.recall_at_k - 0.5).abs() < 1e-12);
        // Reverse the list order of the tail: relevant candidate 3 now comes first.
        let swapped = AttributeSet {
            candidates: vec![(1, 0), (4, 1), (2, 1), (3, 0)],
            ..set
        };
        let r = evaluate_map(&src, &[swapped], Some(&BruteForce(&src, 2)), &opts).unwrap();
        let ann = r.attributes[0].ann.as_ref().unwrap();
        assert!((ann.map - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_rows_and_nan_are_errors() {
        let src = InMemoryVectors::new(1, vec![("a".into(), vec![1.0, f32::NAN])]).unwrap();
        let set = AttributeSet {
            name: "a".into(),
            values: vec!["x".into()],
            queries: vec![(0, 0)],
            candidates: vec![(1, 0)],
            skipped: 0,
        };
        let err = evaluate_map(
            &src,
            std::slice::from_ref(&set),
            None,
            &MapOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        let past = AttributeSet {
            candidates: vec![(5, 0)],
            ..set
        };
        let err = evaluate_map(&src, &[past], None, &MapOptions::default()).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
