//! The query engine on top of [`crate::index::Index`]: top-k by one attribute or by a
//! weighted sum of per-attribute cosine similarities (candidates gathered from each
//! attribute's graph, then re-scored exactly), re-ranking of a given list, and label
//! filters.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::catalog::ValueId;
use crate::error::{Error, Result};
use crate::index::distance::dot_f32;
use crate::index::exact::top_k_by;
use crate::index::{Hit, Index, SearchOptions};

/// An attribute and its weight in the similarity sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub attr: String,
    pub weight: f32,
}

impl Weighted {
    /// Parses `name` (weight 1) or `name=weight`.
    pub fn parse(s: &str) -> Result<Weighted> {
        let (attr, weight) = match s.rsplit_once('=') {
            Some((a, w)) => {
                let w: f32 = w
                    .parse()
                    .map_err(|_| Error::Usage(format!("{s:?}: weight {w:?} is not a number")))?;
                (a, w)
            }
            None => (s, 1.0),
        };
        if attr.is_empty() {
            return Err(Error::Usage(format!("{s:?}: no attribute name")));
        }
        if weight.is_infinite() && weight > 0.0 {
            return Err(Error::Usage(format!(
                "{s:?}: the weight is too large (at most {:e}, the largest 32-bit float)",
                f32::MAX
            )));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::Usage(format!(
                "{s:?}: the weight must be a positive number"
            )));
        }
        Ok(Weighted {
            attr: attr.to_string(),
            weight,
        })
    }
}

/// What the query is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An item already in the index: its own vector for each attribute.
    Item(String),
    /// One vector per weighted attribute (same order), or a single vector used for all.
    Vectors(Vec<Vec<f32>>),
}

/// Items whose labels satisfy every condition: `attribute=value` pairs; values of the
/// same attribute are alternatives (`color=red`, `color=blue` means red or blue).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelFilter {
    allowed: BTreeMap<usize, BTreeSet<ValueId>>,
}

impl LabelFilter {
    /// Parses `attr=value` conditions against the index's label schema (see [`Self::new`]).
    pub fn parse(index: &Index, conditions: &[String]) -> Result<LabelFilter> {
        let pairs = conditions
            .iter()
            .map(|c| {
                c.split_once('=')
                    .map(|(a, v)| (a.to_string(), v.to_string()))
                    .ok_or_else(|| Error::Usage(format!("filter {c:?}: expected attribute=value")))
            })
            .collect::<Result<Vec<_>>>()?;
        LabelFilter::new(index, &pairs)
    }

    /// The filter of (attribute, value) conditions, checked against the index's labels.
    pub fn new(index: &Index, conditions: &[(String, String)]) -> Result<LabelFilter> {
        let schema = index.schema().ok_or_else(|| {
            Error::Usage(format!(
                "{}: the index has no labels to filter on (it was built without a catalog)",
                index.dir().display()
            ))
        })?;
        let mut allowed: BTreeMap<usize, BTreeSet<ValueId>> = BTreeMap::new();
        for (name, value) in conditions {
            let a = schema.attribute_index(name)?;
            let values = &schema.attributes[a].values;
            let v = values.iter().position(|x| x == value).ok_or_else(|| {
                Error::Usage(format!(
                    "filter \"{name}={value}\": {name} has no value {value:?} (values: {})",
                    values.join(", ")
                ))
            })?;
            allowed.entry(a).or_default().insert(v as ValueId);
        }
        Ok(LabelFilter { allowed })
    }

    pub fn matches(&self, index: &Index, row: usize) -> bool {
        self.allowed
            .iter()
            .all(|(&a, vs)| index.label(row, a).is_some_and(|v| vs.contains(&v)))
    }
}

/// A top-k query.
#[derive(Debug, Clone)]
pub struct Query {
    pub target: Target,
    pub attrs: Vec<Weighted>,
    pub k: usize,
    /// Graph search breadth per attribute (ignored when `exact`).
    pub ef: usize,
    /// Brute force over the mapped rows instead of the graphs.
    pub exact: bool,
    pub filter: Option<LabelFilter>,
    /// When the target is an item, whether it may appear in its own results.
    pub include_self: bool,
}

/// Below this fraction of matching rows, a filtered query is answered by brute force
/// over the matching rows (the graph walk would visit mostly rejected nodes).
const EXACT_FILTER_FRACTION: f64 = 0.05;

/// Answers a query: hits ordered by decreasing weighted similarity.
pub fn search(index: &Index, q: &Query) -> Result<Vec<Hit>> {
    let vectors = query_vectors(index, &q.target, &q.attrs)?;
    let self_row = match &q.target {
        Target::Item(id) if !q.include_self => index.row(id),
        _ => None,
    };
    let accept =
        |r: usize| Some(r) != self_row && q.filter.as_ref().is_none_or(|f| f.matches(index, r));
    let score = |r: usize| weighted_score(index, &q.attrs, &vectors, r);
    let mut exact = q.exact;
    // No query returns more rows than the index has: bounding k and ef here keeps any
    // value (up to usize::MAX) from sizing an allocation.
    let n = index.len();
    let k = q.k.min(n);
    let mut ef = q.ef.min(n).max(k);
    if let Some(f) = &q.filter {
        let matching = (0..index.len()).filter(|&r| f.matches(index, r)).count();
        let fraction = matching as f64 / index.len().max(1) as f64;
        if fraction < EXACT_FILTER_FRACTION {
            exact = true;
        } else {
            // The walk discards non-matching nodes: widen it in proportion.
            ef = ((ef as f64 / fraction).ceil() as usize)
                .min(ef.saturating_mul(20))
                .min(n);
        }
    }
    if exact {
        let found = top_k_by(n, k, &|r| {
            (accept(r) && !index.is_removed(r))
                .then(|| score(r))
                .transpose()
                .ok()
                .flatten()
        });
        return Ok(hits(index, found));
    }
    let accept_ref: &(dyn Fn(usize) -> bool + Sync) = &accept;
    let opts = SearchOptions {
        k: ef,
        ef,
        use_compact: true,
        accept: Some(accept_ref),
        rescore: None,
    };
    let mut candidates: HashSet<usize> = HashSet::new();
    for (w, v) in q.attrs.iter().zip(&vectors) {
        for (_, row) in index.search_rows(&w.attr, v, &opts)? {
            candidates.insert(row);
        }
    }
    let mut found = Vec::with_capacity(candidates.len());
    for r in candidates {
        found.push((score(r)?, r));
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    found.truncate(k);
    Ok(hits(index, found))
}

/// Orders the given items by weighted similarity to the target (the papers'
/// re-ranking of a first-stage result). Unknown ids are errors; removed items and items
/// the filter rejects are dropped. Ties keep the input order.
pub fn rerank(
    index: &Index,
    target: &Target,
    attrs: &[Weighted],
    ids: &[String],
    filter: Option<&LabelFilter>,
) -> Result<Vec<Hit>> {
    let vectors = query_vectors(index, target, attrs)?;
    let mut scored = Vec::with_capacity(ids.len());
    for id in ids {
        let row = index
            .row(id)
            .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
        if index.is_removed(row) || filter.is_some_and(|f| !f.matches(index, row)) {
            continue;
        }
        scored.push((weighted_score(index, attrs, &vectors, row)?, row));
    }
    // Stable sort: equal scores keep their input order.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(hits(index, scored))
}

fn hits(index: &Index, found: Vec<(f32, usize)>) -> Vec<Hit> {
    found
        .into_iter()
        .map(|(score, row)| Hit {
            row,
            id: index.id(row).to_string(),
            score,
        })
        .collect()
}

/// Σ w_a · cos(q_a, x_a) for one row (query vectors already normalised).
fn weighted_score(
    index: &Index,
    attrs: &[Weighted],
    vectors: &[Vec<f32>],
    row: usize,
) -> Result<f32> {
    let mut s = 0.0;
    for (w, q) in attrs.iter().zip(vectors) {
        s += w.weight * dot_f32(q, index.vector(&w.attr, row)?);
    }
    Ok(s)
}

/// Normalised query vector per weighted attribute.
fn query_vectors(index: &Index, target: &Target, attrs: &[Weighted]) -> Result<Vec<Vec<f32>>> {
    if attrs.is_empty() {
        return Err(Error::Usage("a query needs at least one attribute".into()));
    }
    let mut seen = HashSet::new();
    for w in attrs {
        if !seen.insert(w.attr.as_str()) {
            return Err(Error::Usage(format!(
                "attribute {:?} is given twice",
                w.attr
            )));
        }
    }
    match target {
        Target::Item(id) => {
            let row = index
                .row(id)
                .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
            if index.is_removed(row) {
                return Err(Error::Usage(format!(
                    "item {id:?} was removed from the index"
                )));
            }
            attrs
                .iter()
                .map(|w| index.prepare_query(&w.attr, index.vector(&w.attr, row)?))
                .collect()
        }
        Target::Vectors(vs) => {
            if vs.len() != attrs.len() && vs.len() != 1 {
                return Err(Error::Usage(format!(
                    "{} query vectors for {} attributes (give one per attribute, or one for all)",
                    vs.len(),
                    attrs.len()
                )));
            }
            attrs
                .iter()
                .enumerate()
                .map(|(i, w)| index.prepare_query(&w.attr, &vs[if vs.len() == 1 { 0 } else { i }]))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_weights() {
        assert_eq!(Weighted::parse("neckline").unwrap().weight, 1.0);
        let w = Weighted::parse("sleeve_length=0.5").unwrap();
        assert_eq!((w.attr.as_str(), w.weight), ("sleeve_length", 0.5));
        assert!(Weighted::parse("a=x").is_err());
        assert!(Weighted::parse("a=-1").is_err());
        assert!(Weighted::parse("=1").is_err());
        let big = Weighted::parse("a=1e39").unwrap_err().to_string();
        assert!(
            big.contains("too large") && big.contains("3.4028235e38"),
            "{big}"
        );
        let neg = Weighted::parse("a=-1").unwrap_err().to_string();
        assert!(neg.contains("must be a positive number"), "{neg}");
    }
}
