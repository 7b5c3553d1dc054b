//! Triplet sampling as in the ASEN papers, or from a catalog's own triplet lists.
//!
//! A triplet is (anchor, negative, positive | attribute). Drawn per triplet: an attribute
//! uniformly, one of its values uniformly, an anchor with that value, a negative with a
//! different value of the same attribute, a positive (not the anchor) with the anchor's
//! value. Only attributes and values that can form a triplet take part: a value needs two
//! items, an attribute needs such a value and at least one other labelled value.
//!
//! Every epoch draws fresh triplets from an RNG seeded by (seed, epoch), so an epoch's
//! triplets do not depend on what ran before it: resuming at epoch k draws exactly what
//! an uninterrupted run draws.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{Catalog, TripletList};
use crate::error::{Error, Result};

/// One training triplet: item indices into the catalog and the attribute index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    pub anchor: usize,
    pub negative: usize,
    pub positive: usize,
    pub attribute: usize,
}

/// Items of one attribute grouped by value (only values with at least one item).
#[derive(Debug, Clone)]
struct AttributePool {
    attribute: usize,
    /// Per value present: its items.
    by_value: Vec<Vec<usize>>,
    /// Indices into `by_value` of values with at least two items (anchor + positive).
    anchor_values: Vec<usize>,
}

/// Where triplets come from.
#[derive(Debug, Clone)]
enum Source {
    /// Drawn from labels, the papers' procedure.
    Labels(Vec<AttributePool>),
    /// A fixed list (Zappos/CSN format), shuffled and cycled per epoch.
    Lists(Vec<Triplet>),
}

/// Draws the triplets of each epoch.
#[derive(Debug, Clone)]
pub struct TripletSampler {
    source: Source,
    seed: u64,
}

/// Salt that separates the triplet stream from other uses of the run's seed.
const TRIPLET_STREAM: u64 = 0x7219_1e75;

/// The RNG for a given purpose of a given epoch: independent of every other epoch.
pub fn epoch_rng(seed: u64, epoch: usize, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream.rotate_left(17));
    rng.set_stream(epoch as u64);
    rng
}

impl TripletSampler {
    /// A sampler over the labels of `items` (usually the training split).
    pub fn from_labels(catalog: &Catalog, items: &[usize], seed: u64) -> Result<Self> {
        let mut pools = Vec::new();
        for (attribute, attr) in catalog.schema.attributes.iter().enumerate() {
            let mut by_value: Vec<Vec<usize>> = vec![Vec::new(); attr.values.len()];
            for &item in items {
                if let Some(v) = catalog.labels.get(item, attribute) {
                    let v = v as usize;
                    if v >= by_value.len() {
                        by_value.resize(v + 1, Vec::new());
                    }
                    by_value[v].push(item);
                }
            }
            by_value.retain(|members| !members.is_empty());
            let anchor_values: Vec<usize> = (0..by_value.len())
                .filter(|&v| by_value[v].len() >= 2)
                .collect();
            if by_value.len() >= 2 && !anchor_values.is_empty() {
                pools.push(AttributePool {
                    attribute,
                    by_value,
                    anchor_values,
                });
            }
        }
        if pools.is_empty() {
            return Err(Error::invalid(
                &catalog.source,
                format!(
                    "no attribute can form a triplet from the {} training items: each needs \
                     two items with one value and an item with another value",
                    items.len()
                ),
            ));
        }
        Ok(TripletSampler {
            source: Source::Labels(pools),
            seed,
        })
    }

    /// A sampler over the catalog's triplet lists of `split` (Zappos format: `a b c` means
    /// a is closer to c than to b, so anchor a, negative b, positive c).
    pub fn from_lists(catalog: &Catalog, split: &str, seed: u64) -> Result<Self> {
        let triplets: Vec<Triplet> = catalog
            .triplets
            .iter()
            .filter(|l: &&TripletList| l.split == split)
            .flat_map(|l| {
                l.triplets.iter().map(move |&[a, b, c]| Triplet {
                    anchor: a,
                    negative: b,
                    positive: c,
                    attribute: l.attribute,
                })
            })
            .collect();
        if triplets.is_empty() {
            return Err(Error::invalid(
                &catalog.source,
                format!("the catalog has no triplet lists for split {split:?}"),
            ));
        }
        Ok(TripletSampler {
            source: Source::Lists(triplets),
            seed,
        })
    }

    /// Attributes that take part in training.
    pub fn attributes(&self) -> Vec<usize> {
        let mut a: Vec<usize> = match &self.source {
            Source::Labels(pools) => pools.iter().map(|p| p.attribute).collect(),
            Source::Lists(t) => t.iter().map(|t| t.attribute).collect(),
        };
        a.sort_unstable();
        a.dedup();
        a
    }

    /// Every item some triplet may use (sorted, unique).
    pub fn items(&self) -> Vec<usize> {
        let mut items: Vec<usize> = match &self.source {
            Source::Labels(pools) => pools
                .iter()
                .flat_map(|p| p.by_value.iter().flatten().copied())
                .collect(),
            Source::Lists(t) => t
                .iter()
                .flat_map(|t| [t.anchor, t.negative, t.positive])
                .collect(),
        };
        items.sort_unstable();
        items.dedup();
        items
    }

    /// The `count` triplets of epoch `epoch` (0-based).
    pub fn epoch(&self, epoch: usize, count: usize) -> Vec<Triplet> {
        let mut rng = epoch_rng(self.seed, epoch, TRIPLET_STREAM);
        match &self.source {
            Source::Labels(pools) => (0..count).map(|_| draw(pools, &mut rng)).collect(),
            Source::Lists(list) => {
                // Shuffle once per epoch and cycle when more triplets are asked for.
                let mut order: Vec<usize> = (0..list.len()).collect();
                order.shuffle(&mut rng);
                (0..count).map(|i| list[order[i % order.len()]]).collect()
            }
        }
    }
}

fn draw(pools: &[AttributePool], rng: &mut ChaCha8Rng) -> Triplet {
    let pool = &pools[rng.gen_range(0..pools.len())];
    let value = pool.anchor_values[rng.gen_range(0..pool.anchor_values.len())];
    let same = &pool.by_value[value];
    let a = rng.gen_range(0..same.len());
    // Positive: any other member of the value (skip over the anchor's slot).
    let mut p = rng.gen_range(0..same.len() - 1);
    if p >= a {
        p += 1;
    }
    // Negative: a value other than the anchor's, then a member of it.
    let mut other = rng.gen_range(0..pool.by_value.len() - 1);
    if other >= value {
        other += 1;
    }
    let others = &pool.by_value[other];
    let n = others[rng.gen_range(0..others.len())];
    Triplet {
        anchor: same[a],
        negative: n,
        positive: same[p],
        attribute: pool.attribute,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::{Attribute, CatalogFormat, Item, Labels, Schema, Splits};

    fn catalog(values: &[[Option<u16>; 2]]) -> Catalog {
        let schema = Schema {
            attributes: vec![
                Attribute {
                    name: "a".into(),
                    values: vec!["x".into(), "y".into(), "z".into()],
                },
                Attribute {
                    name: "b".into(),
                    values: vec!["u".into(), "v".into()],
                },
            ],
        };
        let mut labels = Labels::new(values.len(), 2);
        for (i, row) in values.iter().enumerate() {
            labels.set(i, 0, row[0]);
            labels.set(i, 1, row[1]);
        }
        Catalog {
            source: PathBuf::from("test"),
            format: CatalogFormat::Csv,
            image_root: PathBuf::new(),
            schema,
            items: (0..values.len())
                .map(|i| Item {
                    id: i.to_string(),
                    image: PathBuf::from(format!("{i}.png")),
                })
                .collect(),
            labels,
            splits: Splits {
                items: BTreeMap::new(),
                ..Default::default()
            },
            triplets: Vec::new(),
        }
    }

    #[test]
    fn triplets_respect_labels_and_are_seeded() {
        let rows: Vec<[Option<u16>; 2]> = (0..40)
            .map(|i| [Some((i % 3) as u16), (i % 4 != 0).then_some((i % 2) as u16)])
            .collect();
        let cat = catalog(&rows);
        let items: Vec<usize> = (0..40).collect();
        let s = TripletSampler::from_labels(&cat, &items, 7).unwrap();
        let t = s.epoch(0, 2000);
        let mut per_attr = [0usize; 2];
        for t in &t {
            let va = cat.labels.get(t.anchor, t.attribute).unwrap();
            assert_eq!(cat.labels.get(t.positive, t.attribute), Some(va));
            assert_ne!(cat.labels.get(t.negative, t.attribute), Some(va));
            assert!(cat.labels.get(t.negative, t.attribute).is_some());
            assert_ne!(t.anchor, t.positive);
            per_attr[t.attribute] += 1;
        }
        // Attribute drawn uniformly: both near 1000.
        assert!(per_attr[0] > 900 && per_attr[1] > 900, "{per_attr:?}");
        assert_eq!(s.epoch(0, 2000), t);
        assert_ne!(s.epoch(1, 2000), t);
        let other_seed = TripletSampler::from_labels(&cat, &items, 8).unwrap();
        assert_ne!(other_seed.epoch(0, 2000), t);
    }

    #[test]
    fn attributes_that_cannot_form_triplets_are_left_out() {
        // Attribute b has one value only: no negative exists.
        let rows: Vec<[Option<u16>; 2]> = (0..6).map(|i| [Some(i % 2), Some(1)]).collect();
        let cat = catalog(&rows);
        let s = TripletSampler::from_labels(&cat, &(0..6).collect::<Vec<_>>(), 1).unwrap();
        assert_eq!(s.attributes(), vec![0]);
        // Nothing can form a triplet: a clear error.
        let rows: Vec<[Option<u16>; 2]> = (0..3).map(|i| [Some(i), None]).collect();
        let cat = catalog(&rows);
        let err = TripletSampler::from_labels(&cat, &[0, 1, 2], 1).unwrap_err();
        assert!(err.to_string().contains("no attribute can form a triplet"));
    }

    #[test]
    fn lists_are_shuffled_and_cycled() {
        let mut cat = catalog(&[[Some(0), Some(0)]; 5]);
        cat.triplets.push(TripletList {
            attribute: 1,
            split: "train".into(),
            triplets: vec![[0, 1, 2], [2, 3, 4], [4, 0, 1]],
        });
        let s = TripletSampler::from_lists(&cat, "train", 3).unwrap();
        let t = s.epoch(0, 6);
        assert_eq!(t.len(), 6);
        assert_eq!(t[..3], t[3..]);
        assert!(t
            .iter()
            .any(|t| (t.anchor, t.negative, t.positive) == (2, 3, 4)));
        assert!(t.iter().all(|t| t.attribute == 1));
        assert!(TripletSampler::from_lists(&cat, "test", 3).is_err());
    }
}
