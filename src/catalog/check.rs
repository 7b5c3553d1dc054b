//! Validation and statistics of an opened catalog.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use super::Catalog;

/// An item whose image cannot be used.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageProblem {
    pub item: String,
    pub path: String,
    pub reason: String,
}

/// Result of [`check`]: the catalog parsed (or `open` would have failed); these are the
/// problems found beyond parsing.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    pub items: usize,
    pub images_checked: usize,
    pub missing_images: Vec<ImageProblem>,
    pub unreadable_images: Vec<ImageProblem>,
    /// Items without any label (for labelled formats).
    pub unlabelled_items: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.missing_images.is_empty() && self.unreadable_images.is_empty()
    }
}

/// Checks that every image exists and decodes as `embed` will decode it (the shared
/// loader, [`crate::image_io`]): a file `embed` would reject is reported with the same reason.
pub fn check(catalog: &Catalog) -> CheckReport {
    let results: Vec<Option<(bool, ImageProblem)>> = (0..catalog.items.len())
        .into_par_iter()
        .map(|i| {
            let path = catalog.image_path(i);
            let problem = |reason: String| ImageProblem {
                item: catalog.items[i].id.clone(),
                path: path.display().to_string(),
                reason,
            };
            // The loader embed uses: what it would reject is reported here, with its reason.
            match crate::image_io::decode_rgb(&path) {
                Ok(_) => None,
                Err(e) => Some((e.is_missing(), problem(e.to_string()))),
            }
        })
        .collect();
    let mut report = CheckReport {
        items: catalog.items.len(),
        images_checked: catalog.items.len(),
        ..Default::default()
    };
    for (missing, p) in results.into_iter().flatten() {
        if missing {
            report.missing_images.push(p);
        } else {
            report.unreadable_images.push(p);
        }
    }
    if !catalog
        .schema
        .attributes
        .iter()
        .all(|a| a.values.is_empty())
    {
        report.unlabelled_items = (0..catalog.items.len())
            .filter(|&i| (0..catalog.schema.len()).all(|a| catalog.labels.get(i, a).is_none()))
            .count();
    }
    report
}

/// Per-attribute statistics.
#[derive(Debug, Clone, Serialize)]
pub struct AttributeStats {
    pub name: String,
    pub values: usize,
    pub labelled_items: usize,
    /// value name -> number of items with that value.
    pub value_counts: BTreeMap<String, usize>,
}

/// Split sizes.
#[derive(Debug, Clone, Serialize)]
pub struct SplitStats {
    pub items: usize,
    pub queries: usize,
    pub candidates: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogStats {
    pub source: String,
    pub format: super::CatalogFormat,
    pub items: usize,
    pub attributes: Vec<AttributeStats>,
    pub splits: BTreeMap<String, SplitStats>,
    /// condition -> split -> triplets.
    pub triplets: BTreeMap<String, BTreeMap<String, usize>>,
}

pub fn stats(catalog: &Catalog) -> CatalogStats {
    let attributes = catalog
        .schema
        .attributes
        .iter()
        .enumerate()
        .map(|(a, attr)| {
            let mut counts = vec![0usize; attr.values.len()];
            let mut labelled = 0;
            for i in 0..catalog.items.len() {
                if let Some(v) = catalog.labels.get(i, a) {
                    labelled += 1;
                    counts[v as usize] += 1;
                }
            }
            AttributeStats {
                name: attr.name.clone(),
                values: attr.values.len(),
                labelled_items: labelled,
                value_counts: attr.values.iter().cloned().zip(counts).collect(),
            }
        })
        .collect();
    let mut splits = BTreeMap::new();
    for (name, members) in &catalog.splits.items {
        splits.insert(
            name.clone(),
            SplitStats {
                items: members.len(),
                queries: catalog.splits.queries.get(name).map_or(0, Vec::len),
                candidates: catalog.splits.candidates.get(name).map_or(0, Vec::len),
            },
        );
    }
    let mut triplets: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for list in &catalog.triplets {
        triplets
            .entry(catalog.schema.attributes[list.attribute].name.clone())
            .or_default()
            .insert(list.split.clone(), list.triplets.len());
    }
    CatalogStats {
        source: catalog.source.display().to_string(),
        format: catalog.format,
        items: catalog.items.len(),
        attributes,
        splits,
        triplets,
    }
}
