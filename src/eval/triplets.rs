//! Triplet relation prediction accuracy (Zappos50k / CSN protocol).
//!
//! A triplet `(a, b, c)` under a condition says that item `a` is closer to `c` than to
//! `b` for that condition's attribute. It counts as correct when, in that attribute's
//! space, `s(a, c) > s(a, b)` with `s` the inner product; a tie counts as wrong (and is
//! reported). Products are summed in f64, so the result does not depend on threads.

use rayon::prelude::*;

use super::report::{ConditionAccuracy, TripletReport};
use super::VectorSource;
use crate::error::{Error, Result};

/// The triplets of one condition, as rows of the [`VectorSource`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionTriplets {
    /// Condition (attribute) name: the key of its vectors.
    pub name: String,
    /// `[a, b, c]` rows: `a` should be closer to `c` than to `b`.
    pub triplets: Vec<[usize; 3]>,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Accuracy per condition and overall (the fraction of all triplets that are correct).
pub fn evaluate_triplets(
    source: &dyn VectorSource,
    conditions: &[ConditionTriplets],
) -> Result<TripletReport> {
    let mut per_condition = Vec::with_capacity(conditions.len());
    for cond in conditions {
        let dim = source.dim(&cond.name)?;
        let vectors = source.vectors(&cond.name)?;
        let rows = vectors.len().checked_div(dim).unwrap_or(0);
        if let Some(t) = cond.triplets.iter().find(|t| t.iter().any(|&r| r >= rows)) {
            return Err(Error::Usage(format!(
                "condition {:?}: triplet rows {t:?} go past the end of its {rows} vectors",
                cond.name
            )));
        }
        let row = |r: usize| &vectors[r * dim..(r + 1) * dim];
        let (correct, ties, nan) = cond
            .triplets
            .par_iter()
            .map(|&[a, b, c]| {
                let (far, close) = (dot(row(a), row(b)), dot(row(a), row(c)));
                (
                    usize::from(close > far),
                    usize::from(close == far),
                    usize::from(far.is_nan() || close.is_nan()),
                )
            })
            .reduce(|| (0, 0, 0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
        if nan > 0 {
            return Err(Error::Usage(format!(
                "condition {:?}: {nan} triplets have NaN scores (the vectors hold NaN or \
                 infinite values)",
                cond.name
            )));
        }
        let n = cond.triplets.len();
        per_condition.push(ConditionAccuracy {
            name: cond.name.clone(),
            triplets: n,
            correct,
            ties,
            accuracy: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
        });
    }
    let triplets: usize = per_condition.iter().map(|c| c.triplets).sum();
    let correct: usize = per_condition.iter().map(|c| c.correct).sum();
    Ok(TripletReport {
        accuracy: if triplets == 0 {
            0.0
        } else {
            correct as f64 / triplets as f64
        },
        triplets,
        conditions: per_condition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::source::InMemoryVectors;

    #[test]
    fn hand_computed_accuracy() {
        // Rows: 0 = (1, 0), 1 = (0, 1), 2 = (0.6, 0.8), 3 = (1, 0).
        let data = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 1.0, 0.0];
        let src = InMemoryVectors::new(2, vec![("x".into(), data.clone()), ("y".into(), data)])
            .unwrap();
        let conds = vec![
            ConditionTriplets {
                name: "x".into(),
                // s(0,2)=0.6 > s(0,1)=0 correct; s(0,1)=0 < s(0,2) wrong; tie s(0,0)=s(0,3).
                triplets: vec![[0, 1, 2], [0, 2, 1], [0, 0, 3]],
            },
            ConditionTriplets {
                name: "y".into(),
                triplets: vec![[1, 0, 2]],
            },
        ];
        let r = evaluate_triplets(&src, &conds).unwrap();
        assert_eq!(r.triplets, 4);
        assert_eq!(r.conditions[0].correct, 1);
        assert_eq!(r.conditions[0].ties, 1);
        assert!((r.conditions[0].accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.conditions[1].correct, 1);
        assert!((r.accuracy - 0.5).abs() < 1e-12);
        let err = evaluate_triplets(
            &src,
            &[ConditionTriplets {
                name: "x".into(),
                triplets: vec![[0, 1, 9]],
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
