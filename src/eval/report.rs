//! Evaluation results: serialisable structs (full precision, fractions in [0, 1]) and the
//! text tables in the papers' style (attributes as columns, percent with 2 decimals).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

/// MAP of every attribute, the overall MAP and the random baseline.
#[derive(Debug, Clone, Serialize)]
pub struct MapReport {
    /// Mean AP over all queries (= per-attribute MAPs weighted by query counts).
    pub map: f64,
    /// Expected MAP of a uniformly random ranking, same weighting.
    pub random_map: f64,
    pub queries: usize,
    /// Cut-offs of the `*_at` maps.
    pub ks: Vec<usize>,
    /// MAP from approximate top-k lists, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann_map: Option<f64>,
    /// Mean recall@k of the approximate lists against exact, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann_recall_at_k: Option<f64>,
    pub attributes: Vec<AttributeMap>,
}

/// One attribute's results.
#[derive(Debug, Clone, Serialize)]
pub struct AttributeMap {
    pub name: String,
    pub queries: usize,
    pub candidates: usize,
    pub map: f64,
    pub random_map: f64,
    /// Queries whose value no candidate has (their AP counts as 0).
    pub queries_without_relevant: usize,
    /// Queries and candidates left out because the index does not hold them (removed,
    /// or gone after `compact`); 0 for vectors from files.
    pub skipped_items: usize,
    pub precision_at: BTreeMap<usize, f64>,
    pub recall_at: BTreeMap<usize, f64>,
    pub ndcg_at: BTreeMap<usize, f64>,
    /// Per query value: MAP and what the best-ranked candidate was.
    pub values: Vec<ValueBreakdown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann: Option<AnnAttribute>,
}

/// Results for the queries of one value.
#[derive(Debug, Clone, Serialize)]
pub struct ValueBreakdown {
    pub value: String,
    pub queries: usize,
    /// Candidates with this value.
    pub relevant_candidates: usize,
    pub map: f64,
    pub random_map: f64,
    /// Share of these queries whose best-ranked candidate has the same value.
    pub top1_accuracy: f64,
    /// Other values of the best-ranked candidate, with counts, most frequent first.
    pub top1_confused_with: Vec<(String, usize)>,
}

/// What approximate search gives for one attribute.
#[derive(Debug, Clone, Serialize)]
pub struct AnnAttribute {
    /// Neighbours asked for per query.
    pub k: usize,
    pub map: f64,
    /// Mean over queries of |approximate top-k ∩ exact top-k| / min(k, candidates).
    pub recall_at_k: f64,
}

impl MapReport {
    pub fn from_attributes(attributes: Vec<AttributeMap>, ks: Vec<usize>) -> Self {
        let queries: usize = attributes.iter().map(|a| a.queries).sum();
        let weighted = |f: &dyn Fn(&AttributeMap) -> f64| {
            if queries == 0 {
                0.0
            } else {
                attributes
                    .iter()
                    .map(|a| f(a) * a.queries as f64)
                    .sum::<f64>()
                    / queries as f64
            }
        };
        let with_ann = !attributes.is_empty() && attributes.iter().all(|a| a.ann.is_some());
        MapReport {
            map: weighted(&|a| a.map),
            random_map: weighted(&|a| a.random_map),
            queries,
            ks,
            ann_map: with_ann.then(|| weighted(&|a| a.ann.as_ref().map_or(0.0, |x| x.map))),
            ann_recall_at_k: with_ann
                .then(|| weighted(&|a| a.ann.as_ref().map_or(0.0, |x| x.recall_at_k))),
            attributes,
        }
    }

    /// The papers' Table 1: one column per attribute plus the overall MAP, in percent.
    pub fn table(&self) -> String {
        let mut header = vec![String::new()];
        header.extend(self.attributes.iter().map(|a| a.name.clone()));
        header.push("MAP".into());
        let row = |label: &str, f: &dyn Fn(&AttributeMap) -> f64, overall: f64| {
            let mut r = vec![label.to_string()];
            r.extend(self.attributes.iter().map(|a| pct(f(a))));
            r.push(pct(overall));
            r
        };
        let mut rows = vec![header, row("exact", &|a| a.map, self.map)];
        if let (Some(m), Some(k)) = (
            self.ann_map,
            self.attributes.first().and_then(|a| a.ann.as_ref()),
        ) {
            rows.push(row(
                &format!("ann (k={})", k.k),
                &|a| a.ann.as_ref().map_or(0.0, |x| x.map),
                m,
            ));
            rows.push(row(
                &format!("recall@{}", k.k),
                &|a| a.ann.as_ref().map_or(0.0, |x| x.recall_at_k),
                self.ann_recall_at_k.unwrap_or(0.0),
            ));
        }
        rows.push(row("random", &|a| a.random_map, self.random_map));
        for &k in &self.ks {
            for (label, pick) in [("P", 0usize), ("R", 1), ("nDCG", 2)] {
                let f = move |a: &AttributeMap| {
                    let m = match pick {
                        0 => &a.precision_at,
                        1 => &a.recall_at,
                        _ => &a.ndcg_at,
                    };
                    m.get(&k).copied().unwrap_or(0.0)
                };
                let overall = self.weighted(&f);
                rows.push(row(&format!("{label}@{k}"), &f, overall));
            }
        }
        let mut counts = vec!["queries".to_string()];
        counts.extend(self.attributes.iter().map(|a| a.queries.to_string()));
        counts.push(self.queries.to_string());
        rows.push(counts);
        let mut cands = vec!["candidates".to_string()];
        cands.extend(self.attributes.iter().map(|a| a.candidates.to_string()));
        cands.push(String::new());
        rows.push(cands);
        render(&rows)
    }

    fn weighted(&self, f: &dyn Fn(&AttributeMap) -> f64) -> f64 {
        if self.queries == 0 {
            return 0.0;
        }
        self.attributes
            .iter()
            .map(|a| f(a) * a.queries as f64)
            .sum::<f64>()
            / self.queries as f64
    }

    /// Per-value breakdown of one attribute: MAP, random MAP, top-1 accuracy and the
    /// most frequent confusions.
    pub fn value_table(&self, attribute: &AttributeMap, confusions: usize) -> String {
        let mut rows = vec![vec![
            attribute.name.clone(),
            "queries".into(),
            "relevant".into(),
            "MAP".into(),
            "random".into(),
            "top1".into(),
            "top-1 confused with".into(),
        ]];
        for v in &attribute.values {
            let conf: Vec<String> = v
                .top1_confused_with
                .iter()
                .take(confusions)
                .map(|(name, c)| format!("{name}:{c}"))
                .collect();
            rows.push(vec![
                v.value.clone(),
                v.queries.to_string(),
                v.relevant_candidates.to_string(),
                pct(v.map),
                pct(v.random_map),
                pct(v.top1_accuracy),
                conf.join(" "),
            ]);
        }
        render(&rows)
    }
}

/// Triplet accuracy per condition and overall.
#[derive(Debug, Clone, Serialize)]
pub struct TripletReport {
    /// Fraction of all triplets with s(a, c) > s(a, b).
    pub accuracy: f64,
    pub triplets: usize,
    pub conditions: Vec<ConditionAccuracy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConditionAccuracy {
    pub name: String,
    pub triplets: usize,
    pub correct: usize,
    /// Triplets with s(a, c) == s(a, b) (counted as wrong).
    pub ties: usize,
    pub accuracy: f64,
}

impl TripletReport {
    /// Conditions as columns plus the overall accuracy, in percent.
    pub fn table(&self) -> String {
        let mut header = vec![String::new()];
        header.extend(self.conditions.iter().map(|c| c.name.clone()));
        header.push("overall".into());
        let mut acc = vec!["accuracy".to_string()];
        acc.extend(self.conditions.iter().map(|c| pct(c.accuracy)));
        acc.push(pct(self.accuracy));
        let mut n = vec!["triplets".to_string()];
        n.extend(self.conditions.iter().map(|c| c.triplets.to_string()));
        n.push(self.triplets.to_string());
        render(&[header, acc, n])
    }
}

/// A fraction as a percentage with 2 decimals.
pub fn pct(x: f64) -> String {
    // `+ 0.0` turns -0.0 (an empty float sum) into 0.0.
    format!("{:.2}", 100.0 * x + 0.0)
}

/// Left-aligned first column, right-aligned others.
fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, queries: usize, map: f64) -> AttributeMap {
        AttributeMap {
            name: name.into(),
            queries,
            candidates: 10,
            map,
            random_map: 0.1,
            queries_without_relevant: 0,
            skipped_items: 0,
            precision_at: BTreeMap::from([(1, 0.5)]),
            recall_at: BTreeMap::from([(1, 0.25)]),
            ndcg_at: BTreeMap::from([(1, 0.5)]),
            values: Vec::new(),
            ann: None,
        }
    }

    #[test]
    fn overall_map_is_weighted_by_queries() {
        let r = MapReport::from_attributes(vec![attr("a", 1, 1.0), attr("b", 3, 0.0)], vec![1]);
        assert!((r.map - 0.25).abs() < 1e-12);
        assert_eq!(r.queries, 4);
        let t = r.table();
        assert!(t.lines().next().unwrap().contains("a"));
        assert!(t.contains("25.00"), "{t}");
        assert!(t.contains("100.00"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["map"], 0.25);
        assert_eq!(json["random_map"], 0.1);
        assert_eq!(json["attributes"][0]["name"], "a");
    }
}
