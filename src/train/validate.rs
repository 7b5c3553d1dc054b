//! Retrieval MAP of a model on a split's query and candidate lists (validation after each
//! epoch, test after training): each query ranked against every candidate labelled with
//! its attribute, by dot product of the attribute's embeddings; exact AP from the
//! evaluation module.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::catalog::{Catalog, LabelledRef};
use crate::error::{Error, Result};
use crate::eval::ap::{average_precision, expected_random_ap, relevant_ranks, RankScratch};
use crate::model::{Head, Model};
use crate::progress::ProgressMode;

use super::cache::FeatureCache;
use super::data::ImageStore;

/// MAP (%) of one split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitMap {
    /// Mean AP over every query (= per-attribute MAPs weighted by query counts).
    pub overall: f64,
    /// Per attribute index: (MAP %, number of queries).
    pub per_attribute: BTreeMap<usize, (f64, usize)>,
    /// Expected MAP (%) of a random ranking, overall and per attribute.
    pub random_overall: f64,
    pub random_per_attribute: BTreeMap<usize, f64>,
}

impl SplitMap {
    pub fn per_attribute_named(&self, names: &[String]) -> BTreeMap<String, f64> {
        self.per_attribute
            .iter()
            .map(|(&a, &(m, _))| (names[a].clone(), m))
            .collect()
    }
}

/// How to embed items in eval mode.
pub enum Embedder<'a> {
    /// Decoded images through the whole model.
    Images {
        model: &'a Model,
        store: &'a ImageStore,
    },
    /// Cached backbone maps through the head.
    Cached {
        head: &'a Head,
        cache: &'a FeatureCache,
    },
}

const EMBED_BATCH: usize = 32;

impl Embedder<'_> {
    /// Row-major `[items, dim]` embeddings of `items` in each of `attributes`' spaces
    /// (the backbone runs once per image for all of them).
    fn embed(
        &self,
        items: &[usize],
        attributes: &[usize],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); attributes.len()];
        for chunk in items.chunks(EMBED_BATCH) {
            let no_flip = vec![false; chunk.len()];
            let per_attr: Vec<Tensor> = match self {
                Embedder::Images { model, store } => {
                    let images = store.batch(chunk, &no_flip, device)?;
                    model.embed(&images, attributes)?
                }
                Embedder::Cached { head, cache } => {
                    let maps = cache.gather(chunk, &no_flip, device)?;
                    attributes
                        .iter()
                        .map(|&a| {
                            let ids = Tensor::full(a as u32, chunk.len(), device)?;
                            Ok(head.forward_t(&maps, &ids, false)?.embeddings)
                        })
                        .collect::<Result<_>>()?
                }
            };
            for (o, e) in out.iter_mut().zip(per_attr) {
                o.extend(e.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(out)
    }
}

/// The query and candidate lists of one split, grouped by attribute.
pub struct ValidSet {
    split: String,
    /// attribute -> (queries, candidates)
    by_attribute: BTreeMap<usize, (Vec<LabelledRef>, Vec<LabelledRef>)>,
}

impl ValidSet {
    /// `Ok(None)` when the catalog has no lists for `split`.
    pub fn new(catalog: &Catalog, split: &str) -> Result<Option<ValidSet>> {
        let (Some(queries), Some(candidates)) = (
            catalog.splits.queries.get(split),
            catalog.splits.candidates.get(split),
        ) else {
            return Ok(None);
        };
        let mut by_attribute: BTreeMap<usize, (Vec<LabelledRef>, Vec<LabelledRef>)> =
            BTreeMap::new();
        for q in queries {
            by_attribute.entry(q.attribute).or_default().0.push(*q);
        }
        for c in candidates {
            by_attribute.entry(c.attribute).or_default().1.push(*c);
        }
        by_attribute.retain(|_, (q, c)| !q.is_empty() && !c.is_empty());
        if by_attribute.is_empty() {
            return Ok(None);
        }
        Ok(Some(ValidSet {
            split: split.to_string(),
            by_attribute,
        }))
    }

    /// Every item a query or candidate refers to (sorted, unique).
    pub fn items(&self) -> Vec<usize> {
        let mut items: Vec<usize> = self
            .by_attribute
            .values()
            .flat_map(|(q, c)| q.iter().chain(c).map(|r| r.item))
            .collect();
        items.sort_unstable();
        items.dedup();
        items
    }

    /// MAP of the embeddings `embedder` gives.
    pub fn evaluate(&self, embedder: &Embedder<'_>, device: &Device) -> Result<SplitMap> {
        let mut per_attribute = BTreeMap::new();
        let mut random_per_attribute = BTreeMap::new();
        let (mut ap_sum, mut random_sum, mut n_queries) = (0.0, 0.0, 0usize);
        let mut scratch = RankScratch::default();
        let items = self.items();
        let attributes: Vec<usize> = self.by_attribute.keys().copied().collect();
        let embedded = embedder.embed(&items, &attributes, device)?;
        let row_of = |item: usize| items.binary_search(&item).expect("item of the split");
        for (k, (&attribute, (queries, candidates))) in self.by_attribute.iter().enumerate() {
            let all = &embedded[k];
            let dim = all.len() / items.len();
            let rows = |refs: &[LabelledRef]| -> Vec<f32> {
                refs.iter()
                    .flat_map(|r| {
                        let i = row_of(r.item);
                        all[i * dim..(i + 1) * dim].iter().copied()
                    })
                    .collect()
            };
            let (q, c) = (rows(queries), rows(candidates));
            let c_items = candidates;
            let labels: Vec<u16> = candidates.iter().map(|r| r.value).collect();
            let (mut attr_sum, mut attr_random) = (0.0, 0.0);
            let mut scores = vec![0f32; c_items.len()];
            for (qi, query) in queries.iter().enumerate() {
                let qv = &q[qi * dim..(qi + 1) * dim];
                for (s, cv) in scores.iter_mut().zip(c.chunks_exact(dim)) {
                    *s = qv.iter().zip(cv).map(|(a, b)| a * b).sum();
                }
                let ranks =
                    relevant_ranks(&scores, &labels, query.value, &mut scratch).map_err(|e| {
                        let crate::eval::ap::RankError::NanScore(pos) = e;
                        Error::Usage(format!(
                            "{} split, attribute {attribute}: the model produced a NaN \
                             embedding (score of candidate {pos})",
                            self.split
                        ))
                    })?;
                let relevant = ranks.len();
                attr_sum += average_precision(ranks);
                attr_random += expected_random_ap(c_items.len(), relevant);
            }
            per_attribute.insert(
                attribute,
                (100.0 * attr_sum / queries.len() as f64, queries.len()),
            );
            random_per_attribute.insert(attribute, 100.0 * attr_random / queries.len() as f64);
            ap_sum += attr_sum;
            random_sum += attr_random;
            n_queries += queries.len();
        }
        Ok(SplitMap {
            overall: 100.0 * ap_sum / n_queries as f64,
            per_attribute,
            random_overall: 100.0 * random_sum / n_queries as f64,
            random_per_attribute,
        })
    }
}

/// MAP of `model` on a split of `catalog` ("valid" or "test").
pub fn evaluate(
    model: &Model,
    catalog: &Catalog,
    split: &str,
    progress: ProgressMode,
) -> Result<SplitMap> {
    let set = ValidSet::new(catalog, split)?.ok_or_else(|| {
        Error::invalid(
            &catalog.source,
            format!("the catalog has no query/candidate lists for split {split:?}"),
        )
    })?;
    let store = ImageStore::load(catalog, &set.items(), model.config(), progress)?;
    set.evaluate(
        &Embedder::Images {
            model,
            store: &store,
        },
        model.device(),
    )
}
