//! Inputs for evaluation: vector sources (`.npy` files, in-memory matrices) and the
//! query/candidate sets and triplet lists, from a catalog or from list files.
//!
//! List files name items by the ids of the vector source (one id per row, `IDS.txt`):
//! - queries / candidates: lines `item_id attribute value` (value: any token; values are
//!   numbered per attribute in order of first appearance, candidates first);
//! - triplets: lines `a b c condition` (`a` is closer to `c` than to `b`).
//!
//! Blank lines and lines starting with `#` are skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::triplets::ConditionTriplets;
use super::{AttributeSet, VectorSource};
use crate::catalog::{read_lines, Catalog, LabelledRef};
use crate::error::{Error, Result};

/// Row-major matrices held in memory, one per attribute, rows named by ids.
#[derive(Debug, Clone, Default)]
pub struct InMemoryVectors {
    dims: BTreeMap<String, usize>,
    matrices: BTreeMap<String, Vec<f32>>,
    rows: HashMap<String, usize>,
}

impl InMemoryVectors {
    /// Matrices of `dim` columns; rows are named "0", "1", ... until [`with_ids`] names
    /// them. Every matrix must have the same number of rows.
    ///
    /// [`with_ids`]: InMemoryVectors::with_ids
    pub fn new(dim: usize, matrices: Vec<(String, Vec<f32>)>) -> Result<Self> {
        let mut v = InMemoryVectors::default();
        let mut rows = None;
        for (name, data) in matrices {
            if dim == 0 || data.len() % dim != 0 {
                return Err(Error::DimensionMismatch {
                    attribute: name,
                    expected: dim,
                    got: data.len(),
                });
            }
            let n = data.len() / dim;
            if *rows.get_or_insert(n) != n {
                return Err(Error::Usage(format!(
                    "attribute {name:?} has {n} rows, others have {}",
                    rows.unwrap_or(0)
                )));
            }
            v.dims.insert(name.clone(), dim);
            v.matrices.insert(name, data);
        }
        v.rows = (0..rows.unwrap_or(0)).map(|i| (i.to_string(), i)).collect();
        Ok(v)
    }

    /// Names the rows (row i = `ids[i]`).
    pub fn with_ids(mut self, ids: &[String]) -> Result<Self> {
        let rows = self
            .matrices
            .iter()
            .next()
            .map_or(0, |(name, m)| m.len() / self.dims[name]);
        if ids.len() != rows {
            return Err(Error::Usage(format!(
                "{} ids for {rows} vector rows",
                ids.len()
            )));
        }
        self.rows = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(self)
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownAttribute {
            name: name.to_string(),
            known: self.matrices.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

impl VectorSource for InMemoryVectors {
    fn dim(&self, attribute: &str) -> Result<usize> {
        self.dims
            .get(attribute)
            .copied()
            .ok_or_else(|| self.unknown(attribute))
    }
    fn vectors(&self, attribute: &str) -> Result<&[f32]> {
        self.matrices
            .get(attribute)
            .map(Vec::as_slice)
            .ok_or_else(|| self.unknown(attribute))
    }
    fn row(&self, id: &str) -> Option<usize> {
        self.rows.get(id).copied()
    }
}

/// Vectors from `.npy` files (one float32 matrix per attribute, rows aligned with an
/// ids file).
#[derive(Debug, Clone)]
pub struct NpyVectors {
    inner: InMemoryVectors,
}

impl NpyVectors {
    /// Reads `ids` (one id per line) and each `(attribute, file.npy)`; every matrix must
    /// have one row per id.
    pub fn open(ids_path: &Path, files: &[(String, PathBuf)]) -> Result<Self> {
        let ids = read_ids(ids_path)?;
        let mut inner = InMemoryVectors::default();
        for (name, path) in files {
            let m = crate::npy::read_f32_matrix(path)?;
            if m.rows != ids.len() {
                return Err(Error::invalid(
                    path,
                    format!(
                        "{} rows, but {} lists {} ids (one row per id expected)",
                        m.rows,
                        ids_path.display(),
                        ids.len()
                    ),
                ));
            }
            if inner.matrices.contains_key(name) {
                return Err(Error::Usage(format!(
                    "vectors for attribute {name:?} are given twice"
                )));
            }
            inner.dims.insert(name.clone(), m.cols);
            inner.matrices.insert(name.clone(), m.data);
        }
        inner.rows = ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Ok(NpyVectors { inner })
    }
}

impl VectorSource for NpyVectors {
    fn dim(&self, attribute: &str) -> Result<usize> {
        self.inner.dim(attribute)
    }
    fn vectors(&self, attribute: &str) -> Result<&[f32]> {
        self.inner.vectors(attribute)
    }
    fn row(&self, id: &str) -> Option<usize> {
        self.inner.row(id)
    }
}

/// Reads an ids file: one non-empty, unique id per line (surrounding blanks trimmed).
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let id = line.trim();
        if id.is_empty() {
            return Err(Error::parse(
                path,
                i + 1,
                "empty id (one id per line expected)",
            ));
        }
        if let Some(first) = seen.insert(id.to_string(), i + 1) {
            return Err(Error::parse(
                path,
                i + 1,
                format!("duplicate id {id:?} (first on line {first})"),
            ));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

fn row_of(source: &dyn VectorSource, id: &str, what: impl FnOnce() -> String) -> Result<usize> {
    source
        .row(id)
        .ok_or_else(|| Error::Usage(format!("{}: item {id:?} has no vector row", what())))
}

/// Query/candidate sets of a catalog's evaluation split ("valid" or "test"), one per
/// attribute that has queries, in schema order; candidates in list order.
pub fn sets_from_catalog(
    catalog: &Catalog,
    split: &str,
    source: &dyn VectorSource,
) -> Result<Vec<AttributeSet>> {
    let (queries, candidates) = catalog.eval_split(split)?;
    let mut sets: Vec<AttributeSet> = catalog
        .schema
        .attributes
        .iter()
        .map(|a| AttributeSet {
            name: a.name.clone(),
            values: a.values.clone(),
            ..Default::default()
        })
        .collect();
    let place = |r: &LabelledRef, kind: &str| -> Result<Option<(usize, u16)>> {
        let id = &catalog.items[r.item].id;
        if source.skips_absent() && source.row(id).is_none() {
            return Ok(None);
        }
        let row = row_of(source, id, || {
            format!(
                "{} {kind} of attribute {:?} (split {split})",
                catalog.source.display(),
                catalog.schema.attributes[r.attribute].name
            )
        })?;
        Ok(Some((row, r.value)))
    };
    for r in queries {
        match place(r, "query")? {
            Some(p) => sets[r.attribute].queries.push(p),
            None => sets[r.attribute].skipped += 1,
        }
    }
    for r in candidates {
        match place(r, "candidate")? {
            Some(p) => sets[r.attribute].candidates.push(p),
            None => sets[r.attribute].skipped += 1,
        }
    }
    sets.retain(|s| !s.queries.is_empty());
    Ok(sets)
}

/// Fields of the non-blank, non-comment lines of a list file, with 1-based line numbers.
fn fields(path: &Path, expected: usize, form: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut out = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f: Vec<String> = t.split_whitespace().map(str::to_string).collect();
        if f.len() != expected {
            return Err(Error::parse(
                path,
                i + 1,
                format!("expected `{form}`, found {t:?}"),
            ));
        }
        out.push((i + 1, f));
    }
    Ok(out)
}

/// Query/candidate sets from two files of `item_id attribute value` lines. Attributes
/// appear in order of first appearance in the query file.
pub fn sets_from_lists(
    queries_path: &Path,
    candidates_path: &Path,
    source: &dyn VectorSource,
) -> Result<Vec<AttributeSet>> {
    let form = "item_id attribute value";
    let candidates = fields(candidates_path, 3, form)?;
    let queries = fields(queries_path, 3, form)?;
    let mut sets: Vec<AttributeSet> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut value_ids: Vec<HashMap<String, u16>> = Vec::new();
    for (_, f) in &queries {
        if !index.contains_key(&f[1]) {
            index.insert(f[1].clone(), sets.len());
            sets.push(AttributeSet {
                name: f[1].clone(),
                ..Default::default()
            });
            value_ids.push(HashMap::new());
        }
    }
    for (path, lines, is_query) in [
        (candidates_path, &candidates, false),
        (queries_path, &queries, true),
    ] {
        for (line, f) in lines {
            let Some(&a) = index.get(&f[1]) else {
                // Candidates of an attribute without queries do not take part.
                continue;
            };
            let set = &mut sets[a];
            let ids = &mut value_ids[a];
            let next = ids.len();
            if next > u16::MAX as usize - 1 && !ids.contains_key(&f[2]) {
                return Err(Error::parse(path, *line, "more than 65535 values"));
            }
            let value = *ids.entry(f[2].clone()).or_insert(next as u16);
            if value as usize == set.values.len() {
                set.values.push(f[2].clone());
            }
            let row = match source.row(&f[0]) {
                Some(row) => row,
                None if source.skips_absent() => {
                    set.skipped += 1;
                    continue;
                }
                None => {
                    return Err(Error::parse(
                        path,
                        *line,
                        format!("item {:?} has no vector row", f[0]),
                    ))
                }
            };
            if is_query {
                set.queries.push((row, value));
            } else {
                set.candidates.push((row, value));
            }
        }
    }
    Ok(sets)
}

/// Triplets of a catalog's triplet lists for one split ("train", "valid", "test"), one
/// entry per condition that has a list for it.
pub fn triplets_from_catalog(
    catalog: &Catalog,
    split: &str,
    source: &dyn VectorSource,
) -> Result<Vec<ConditionTriplets>> {
    let lists: Vec<_> = catalog
        .triplets
        .iter()
        .filter(|t| t.split == split)
        .collect();
    if lists.is_empty() {
        let have: Vec<&str> = catalog.triplets.iter().map(|t| t.split.as_str()).collect();
        return Err(Error::invalid(
            &catalog.source,
            format!(
                "no triplet lists for split {split:?} (has: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            ),
        ));
    }
    let mut out = Vec::new();
    for list in lists {
        let name = catalog.schema.attributes[list.attribute].name.clone();
        let mut triplets = Vec::with_capacity(list.triplets.len());
        for t in &list.triplets {
            let mut rows = [0usize; 3];
            for (slot, &item) in rows.iter_mut().zip(t) {
                *slot = row_of(source, &catalog.items[item].id, || {
                    format!("{} triplet of condition {name:?}", catalog.source.display())
                })?;
            }
            triplets.push(rows);
        }
        out.push(ConditionTriplets { name, triplets });
    }
    Ok(out)
}

/// Triplets from a file of `a b c condition` lines (item ids; `a` is closer to `c`),
/// conditions in order of first appearance.
pub fn triplets_from_file(
    path: &Path,
    source: &dyn VectorSource,
) -> Result<Vec<ConditionTriplets>> {
    let mut out: Vec<ConditionTriplets> = Vec::new();
    for (line, f) in fields(path, 4, "a b c condition")? {
        let mut rows = [0usize; 3];
        for (slot, id) in rows.iter_mut().zip(&f[..3]) {
            *slot = source.row(id).ok_or_else(|| {
                Error::parse(path, line, format!("item {id:?} has no vector row"))
            })?;
        }
        match out.iter_mut().find(|c| c.name == f[3]) {
            Some(c) => c.triplets.push(rows),
            None => out.push(ConditionTriplets {
                name: f[3].clone(),
                triplets: vec![rows],
            }),
        }
    }
    Ok(out)
}
