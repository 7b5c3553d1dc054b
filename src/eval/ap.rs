//! Ranks of the relevant candidates in one query's ranking and their average precision,
//! without sorting the candidate list; the exact AP of a random ranking.
//!
//! **Tie rule.** Candidates are ranked by descending score; candidates with equal scores
//! are ranked by their position in the candidate list, earlier first. This is the order of
//! a stable sort by descending score (`np.argsort(-s, kind="stable")`), so the result never
//! depends on the sort algorithm, the thread count or the blocking.
//!
//! **Method.** Only the `R` relevant candidates are sorted. A monotone key maps scores
//! to about `8 R` buckets spanning the relevant scores (plus one bucket below and one
//! above them); every candidate adds one to its bucket's count, and only candidates whose
//! bucket also holds a relevant candidate (a few percent) are compared with those
//! relevant candidates one by one. The rank of relevant candidate `j` is then one plus
//! the candidates of the buckets above its own plus those of its own bucket that rank
//! before it. The cost is `O(C + R log R)` per query instead of `O(C log C)`, and the
//! pass over the candidates has no data-dependent loads or branches on its common path.

use std::cmp::Ordering;

/// Reusable buffers for [`relevant_ranks`]; one per thread.
#[derive(Debug, Default)]
pub struct RankScratch {
    relevant: Vec<(f32, u32)>,
    /// Per bucket: relevant candidates in higher buckets.
    rel_above: Vec<u32>,
    /// Per bucket: relevant candidates in it.
    rel_here: Vec<u32>,
    /// `LANES` histograms of candidates per bucket.
    counts: Vec<u32>,
    /// Per relevant candidate: candidates of its bucket ranked before it.
    in_bucket_before: Vec<u32>,
    ranks: Vec<u32>,
}

/// Why a score row could not be ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankError {
    /// The score of this candidate position is NaN (a NaN in the vectors).
    NanScore(usize),
}

/// `true` when candidate `(score_a, pos_a)` ranks before `(score_b, pos_b)`.
#[inline]
fn ranks_before(score_a: f32, pos_a: u32, score_b: f32, pos_b: u32) -> bool {
    (score_a > score_b) | ((score_a == score_b) & (pos_a < pos_b))
}

/// Histograms updated round-robin, so that runs of candidates in one bucket (all those
/// far below the relevant ones, say) do not serialise on one memory cell.
const LANES: usize = 4;
/// Candidates whose keys are computed together (a loop the compiler vectorises).
const KEY_BATCH: usize = 64;

/// The bucket map: `key(s) = trunc(clamp((s - lo) * scale + 1, 0, top))`. Every step is
/// monotone non-decreasing in `s` (in floating point too), which is all correctness
/// needs: a score in a strictly higher bucket is strictly higher, so only candidates of
/// the same bucket need comparing.
#[derive(Clone, Copy)]
struct BucketKey {
    lo: f32,
    scale: f32,
    top: f32,
}

impl BucketKey {
    #[inline(always)]
    fn key(&self, s: f32) -> usize {
        // `max` first also maps NaN to 0 (NaN scores are rejected before ranking).
        let k = ((s - self.lo) * self.scale + 1.0).max(0.0).min(self.top);
        // SAFETY: k is finite and in [0, top], top < 2^17.
        unsafe { k.to_int_unchecked::<u32>() as usize }
    }
}

/// The 1-based ranks, ascending, of the candidates whose label equals `value`, when the
/// candidates are ranked by `scores` under the tie rule of this module.
///
/// `scores[i]` and `labels[i]` describe candidate `i`. The returned slice borrows
/// `scratch`; it is empty when no candidate is relevant.
pub fn relevant_ranks<'s>(
    scores: &[f32],
    labels: &[u16],
    value: u16,
    scratch: &'s mut RankScratch,
) -> Result<&'s [u32], RankError> {
    debug_assert_eq!(scores.len(), labels.len());
    assert!(scores.len() < u32::MAX as usize, "too many candidates");
    let RankScratch {
        relevant,
        rel_above,
        rel_here,
        counts,
        in_bucket_before,
        ranks,
    } = scratch;
    relevant.clear();
    ranks.clear();
    // The NaN scan goes first: streaming the row brings it into cache for the scattered
    // reads of the relevant scores.
    if scores.iter().fold(false, |nan, s| nan | s.is_nan()) {
        let pos = scores.iter().position(|s| s.is_nan()).unwrap_or(0);
        return Err(RankError::NanScore(pos));
    }
    gather_relevant(scores, labels, value, relevant);
    let r = relevant.len();
    if r == 0 {
        return Ok(ranks);
    }
    // Ranking order: descending score, then ascending position.
    relevant.sort_unstable_by(|a, b| match b.0.partial_cmp(&a.0) {
        Some(Ordering::Equal) | None => a.1.cmp(&b.1),
        Some(o) => o,
    });
    let (hi, lo) = (relevant[0].0, relevant[r - 1].0);

    // Interior buckets 1..=inner hold the relevant scores; 0 is below them all and
    // inner + 1 above. About 8 buckets per relevant candidate keep the compared share
    // small. Relevant scores whose spread overflows (infinite or huge vectors) put
    // everything in one bucket: slow but exact.
    let inner = (8 * r).next_power_of_two().clamp(64, 1 << 16);
    let key = if (hi - lo).is_finite() {
        let span = (hi - lo).max(lo.abs() * 1e-6).max(f32::MIN_POSITIVE);
        let scale = (inner - 1) as f32 / span;
        BucketKey {
            lo,
            scale: if scale.is_finite() { scale } else { f32::MAX },
            top: (inner + 1) as f32,
        }
    } else {
        BucketKey {
            lo: 0.0,
            scale: 0.0,
            top: 0.0,
        }
    };
    let nb = inner + 2;
    rel_here.clear();
    rel_here.resize(nb, 0);
    for &(s, _) in relevant.iter() {
        rel_here[key.key(s)] += 1;
    }
    rel_above.clear();
    rel_above.resize(nb, 0);
    let mut above = 0u32;
    for b in (0..nb).rev() {
        rel_above[b] = above;
        above += rel_here[b];
    }
    in_bucket_before.clear();
    in_bucket_before.resize(r, 0);
    counts.clear();
    counts.resize(LANES * nb, 0);

    let (relevant, rel_above, rel_here) = (&relevant[..], &rel_above[..], &rel_here[..]);
    let mut compare_in_bucket = |k: usize, s: f32, pos: usize| {
        // Compare with the relevant candidates of this bucket (contiguous in ranking
        // order); a relevant candidate never ranks before itself.
        let first = rel_above[k] as usize;
        let end = first + rel_here[k] as usize;
        for (before, &(rs, rp)) in in_bucket_before[first..end]
            .iter_mut()
            .zip(&relevant[first..end])
        {
            *before += ranks_before(s, pos as u32, rs, rp) as u32;
        }
    };
    let mut keys = [0u32; KEY_BATCH];
    // Candidates of the batch whose bucket holds relevant ones, collected without a
    // branch (about one in six on random scores: too many for a predictable branch).
    let mut hot = [0u8; KEY_BATCH];
    for (batch, chunk) in scores.chunks(KEY_BATCH).enumerate() {
        for (k, &s) in keys.iter_mut().zip(chunk) {
            *k = key.key(s) as u32;
        }
        let keys = &keys[..chunk.len()];
        let mut n_hot = 0;
        for (i, &k) in keys.iter().enumerate() {
            let k = k as usize;
            debug_assert!(k < nb);
            // SAFETY: `BucketKey::key` clamps to `top <= inner + 1 < nb`, and the lane
            // offset is below `LANES * nb = counts.len()`; `rel_here` holds `nb` entries.
            unsafe {
                *counts.get_unchecked_mut((i % LANES) * nb + k) += 1;
                *hot.get_unchecked_mut(n_hot) = i as u8;
                n_hot += (*rel_here.get_unchecked(k) != 0) as usize;
            }
        }
        let base = batch * KEY_BATCH;
        for &i in &hot[..n_hot] {
            let i = i as usize;
            compare_in_bucket(keys[i] as usize, chunk[i], base + i);
        }
    }
    // rank_j = 1 + candidates in buckets above j's + those of j's bucket before it.
    let mut j = 0;
    let mut candidates_above = 0u32;
    for b in (0..nb).rev() {
        for _ in 0..rel_here[b] {
            ranks.push(1 + candidates_above + in_bucket_before[j]);
            j += 1;
        }
        candidates_above += (0..LANES).map(|l| counts[l * nb + b]).sum::<u32>();
    }
    Ok(ranks)
}

/// Appends `(score, position)` of every candidate labelled `value`. Labels are tested a
/// block at a time without branches; most blocks hold no match.
fn gather_relevant(scores: &[f32], labels: &[u16], value: u16, out: &mut Vec<(f32, u32)>) {
    const BLOCK: usize = 32;
    for (b, chunk) in labels.chunks(BLOCK).enumerate() {
        if chunk.iter().fold(false, |any, &l| any | (l == value)) {
            for (i, &l) in chunk.iter().enumerate() {
                if l == value {
                    let pos = b * BLOCK + i;
                    out.push((scores[pos], pos as u32));
                }
            }
        }
    }
}

/// Average precision from the ascending 1-based ranks of the relevant candidates:
/// `(1/R) * sum_j j / rank_j`; 0 when there is no relevant candidate.
pub fn average_precision(ranks: &[u32]) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    let sum: f64 = ranks
        .iter()
        .enumerate()
        .map(|(j, &rank)| (j + 1) as f64 / rank as f64)
        .sum();
    sum / ranks.len() as f64 + 0.0
}

/// The exact expected AP of a uniformly random ranking of `n` candidates of which `r`
/// are relevant: `H_n / n + (r - 1) / (n (n - 1)) * (n - H_n)` (`H_n` the harmonic
/// number), 0 when `r == 0`. Derivation: `AP = (1/R) sum_k rel_k prec_k`, and over a
/// random permutation `E[rel_k * hits_k] = R/n + (k-1) R (R-1) / (n (n-1))`.
pub fn expected_random_ap(n: usize, r: usize) -> f64 {
    assert!(
        r <= n,
        "more relevant candidates ({r}) than candidates ({n})"
    );
    if r == 0 {
        return 0.0;
    }
    let nf = n as f64;
    let h = harmonic(n);
    let pair_term = if n > 1 {
        (r as f64 - 1.0) / (nf * (nf - 1.0)) * (nf - h)
    } else {
        0.0
    };
    h / nf + pair_term
}

/// `H_n = sum_{i=1}^n 1/i`, summed from the small terms up for accuracy.
pub fn harmonic(n: usize) -> f64 {
    (1..=n).rev().map(|i| 1.0 / i as f64).sum()
}

/// Memoised harmonic numbers, for many [`expected_random_ap`] calls with one `n`.
pub fn expected_random_ap_with(h_n: f64, n: usize, r: usize) -> f64 {
    if r == 0 {
        return 0.0;
    }
    let nf = n as f64;
    let pair_term = if n > 1 {
        (r as f64 - 1.0) / (nf * (nf - 1.0)) * (nf - h_n)
    } else {
        0.0
    };
    h_n / nf + pair_term
}

/// Position of the best-ranked candidate (tie rule: the earliest of the highest scores).
/// NaN scores are passed over (callers reject rows holding them before ranking).
pub fn top1(scores: &[f32]) -> Option<usize> {
    if scores.is_empty() {
        return None;
    }
    // Lane-wise maxima (a loop the compiler vectorises), then the first position holding
    // the maximum: two cheap passes instead of one with a compare-and-branch per score.
    const W: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; W];
    let chunks = scores.chunks_exact(W);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &s) in lanes.iter_mut().zip(chunk) {
            *m = if s > *m { s } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
    Some(scores.iter().position(|&s| s == max).unwrap_or(0))
}

/// The `k` best-ranked candidate positions under the tie rule, best first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        let (sa, sb) = (scores[*a as usize], scores[*b as usize]);
        if ranks_before(sa, *a, sb, *b) {
            Ordering::Less
        } else if ranks_before(sb, *b, sa, *a) {
            Ordering::Greater
        } else {
            a.cmp(b)
        }
    };
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    order.sort_unstable_by(cmp);
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Reference: stable sort by descending score, then walk the list.
    pub(crate) fn reference_ranks(scores: &[f32], labels: &[u16], value: u16) -> Vec<u32> {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
        order
            .iter()
            .enumerate()
            .filter(|(_, &i)| labels[i] == value)
            .map(|(k, _)| k as u32 + 1)
            .collect()
    }

    pub(crate) fn reference_ap(scores: &[f32], labels: &[u16], value: u16) -> f64 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
        let (mut hits, mut sum) = (0usize, 0.0f64);
        for (k, &i) in order.iter().enumerate() {
            if labels[i] == value {
                hits += 1;
                sum += hits as f64 / (k + 1) as f64;
            }
        }
        if hits == 0 {
            0.0
        } else {
            sum / hits as f64
        }
    }

    fn ranks(scores: &[f32], labels: &[u16], value: u16) -> Vec<u32> {
        let mut scratch = RankScratch::default();
        relevant_ranks(scores, labels, value, &mut scratch)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn hand_computed_cases() {
        // Ranking: c1 (0.9, rel), c0 (0.5), c3 (0.4, rel), c2 (0.1, rel).
        let scores = [0.5, 0.9, 0.1, 0.4];
        let labels = [0, 1, 1, 1];
        assert_eq!(ranks(&scores, &labels, 1), vec![1, 3, 4]);
        let ap = average_precision(&ranks(&scores, &labels, 1));
        assert!((ap - (1.0 + 2.0 / 3.0 + 3.0 / 4.0) / 3.0).abs() < 1e-12);
        // No relevant candidate: AP 0.
        assert_eq!(average_precision(&ranks(&scores, &labels, 7)), 0.0);
        // Every candidate relevant: AP 1.
        assert_eq!(average_precision(&ranks(&scores, &[2; 4], 2)), 1.0);
        // A single candidate.
        assert_eq!(ranks(&[0.3], &[0], 0), vec![1]);
        assert_eq!(ranks(&[0.3], &[1], 0), Vec::<u32>::new());
    }

    #[test]
    fn ties_are_broken_by_candidate_position() {
        // All equal: the ranking is the candidate order.
        let scores = [0.5; 4];
        assert_eq!(ranks(&scores, &[0, 1, 0, 1], 1), vec![2, 4]);
        assert_eq!(ranks(&scores, &[1, 0, 1, 0], 1), vec![1, 3]);
        // A tie between a relevant and a non-relevant candidate, either order.
        assert_eq!(ranks(&[0.2, 0.7, 0.7], &[0, 1, 0], 1), vec![1]);
        assert_eq!(ranks(&[0.2, 0.7, 0.7], &[0, 0, 1], 1), vec![2]);
        assert_eq!(ranks(&[0.7, 0.2, 0.7], &[0, 0, 1], 1), vec![2]);
    }

    #[test]
    fn matches_reference_on_random_data_with_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut scratch = RankScratch::default();
        for case in 0..400 {
            let n = rng.gen_range(1..300);
            let values = rng.gen_range(1..6);
            // Coarse scores make many ties; some cases use continuous scores.
            let levels = if case % 3 == 0 {
                1_000_000
            } else {
                rng.gen_range(1..8)
            };
            let scores: Vec<f32> = (0..n)
                .map(|_| rng.gen_range(0..levels) as f32 / levels as f32 - 0.5)
                .collect();
            let labels: Vec<u16> = (0..n).map(|_| rng.gen_range(0..values)).collect();
            for value in 0..values + 1 {
                let got = relevant_ranks(&scores, &labels, value, &mut scratch)
                    .unwrap()
                    .to_vec();
                assert_eq!(got, reference_ranks(&scores, &labels, value), "case {case}");
                let ap = average_precision(&got);
                assert!((ap - reference_ap(&scores, &labels, value)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn extreme_score_ranges() {
        // Relevant scores that differ by one ulp, or are huge: the bucket scale must not
        // break the ranking.
        let a = 1.0f32;
        let b = f32::from_bits(a.to_bits() + 1);
        let scores = [a, b, a, b, 0.5, 2.0];
        let labels = [1, 1, 0, 0, 0, 0];
        assert_eq!(
            ranks(&scores, &labels, 1),
            reference_ranks(&scores, &labels, 1)
        );
        let scores = [f32::MAX, -f32::MAX, 0.0, f32::MAX, -f32::MAX];
        let labels = [1, 1, 0, 0, 0];
        assert_eq!(
            ranks(&scores, &labels, 1),
            reference_ranks(&scores, &labels, 1)
        );
        // Infinite scores among the candidates, then among the relevant ones.
        let inf = f32::INFINITY;
        let scores = [inf, 0.25, -inf, 0.5, 0.25, inf, -inf, 0.75];
        for labels in [[0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 1, 1, 1, 0]] {
            assert_eq!(
                ranks(&scores, &labels, 1),
                reference_ranks(&scores, &labels, 1)
            );
        }
    }

    #[test]
    fn nan_scores_are_reported() {
        let mut scratch = RankScratch::default();
        let err = relevant_ranks(&[0.1, f32::NAN], &[0, 1], 0, &mut scratch).unwrap_err();
        assert_eq!(err, RankError::NanScore(1));
    }

    /// Mean AP over every permutation of `n` items with `r` relevant ones.
    fn brute_force_random_ap(n: usize, r: usize) -> f64 {
        fn permute(items: &mut Vec<usize>, k: usize, r: usize, acc: &mut (f64, usize)) {
            if k == items.len() {
                let labels: Vec<u16> = items.iter().map(|&i| u16::from(i < r)).collect();
                let ranks: Vec<u32> = labels
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| l == 1)
                    .map(|(k, _)| k as u32 + 1)
                    .collect();
                acc.0 += average_precision(&ranks);
                acc.1 += 1;
                return;
            }
            for i in k..items.len() {
                items.swap(k, i);
                permute(items, k + 1, r, acc);
                items.swap(k, i);
            }
        }
        let mut acc = (0.0, 0);
        permute(&mut (0..n).collect(), 0, r, &mut acc);
        acc.0 / acc.1 as f64
    }

    #[test]
    fn random_baseline_equals_enumeration() {
        for n in 1..=7 {
            for r in 0..=n {
                let exact = expected_random_ap(n, r);
                let brute = brute_force_random_ap(n, r);
                assert!(
                    (exact - brute).abs() < 1e-12,
                    "n={n} r={r}: {exact} vs {brute}"
                );
                let memo = expected_random_ap_with(harmonic(n), n, r);
                assert!((exact - memo).abs() < 1e-15);
            }
        }
        assert_eq!(expected_random_ap(5, 5), 1.0);
    }

    #[test]
    fn top_k_follows_the_tie_rule() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.9];
        assert_eq!(top_k(&scores, 3), vec![1, 4, 0]);
        assert_eq!(top_k(&scores, 10), vec![1, 4, 0, 2, 3]);
        assert_eq!(top1(&scores), Some(1));
        assert_eq!(top1(&[]), None);
        // Against a scan with the tie rule, with and without a ragged tail.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [1, 15, 16, 17, 40, 100] {
            let scores: Vec<f32> = (0..n).map(|_| rng.gen_range(0..5) as f32).collect();
            let want = (0..n).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
            assert_eq!(top1(&scores), Some(want), "{scores:?}");
        }
        assert_eq!(top1(&[f32::NEG_INFINITY; 3]), Some(0));
    }
}
