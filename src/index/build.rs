//! Building, extending and shrinking an index. Every operation writes the files of a
//! new generation, fsyncs them, then commits by replacing `manifest.json` atomically;
//! files of older generations are deleted only after the commit. A crash at any point
//! leaves the previous manifest and all the files it names intact.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::disk::format::{FileEntry, INDEX_FORMAT_VERSION};
use super::disk::manifest::{
    AttributeEntry, CompactKind, Manifest, ManifestParams, EF_CONSTRUCTION_RANGE, FORMAT_NAME,
    M_RANGE,
};
use super::disk::store::{
    write_compact, write_ids, write_labels, write_tombstones, write_vectors,
    write_vectors_streamed, VectorFile, NO_LABEL,
};
use super::hnsw::builder::{self, HnswBuilder};
use super::hnsw::distance::normalize;
use super::hnsw::graph::{draw_level, MemGraph};
use super::reader::Index;
use super::writer::{check_inputs, file_name, lock_writer, NewGeneration, WriterLock};
use crate::catalog::{Labels, Schema};
use crate::error::{Error, IoContext, Result};
use crate::progress::{Progress, ProgressMode};

/// The order of the rows in a new index's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowOrder {
    /// The input's order: row `i` is input item `i`.
    #[default]
    Input,
    /// The first attribute's graph order: nodes near each other in that graph are stored
    /// near each other (see [`HnswBuilder::locality_order`]), so a walk of a graph larger
    /// than the CPU caches reads fewer pages and cache lines. Ids, labels and every
    /// attribute's rows follow the same order; searches return the same items.
    Graph,
}

impl std::str::FromStr for RowOrder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "input" => Ok(RowOrder::Input),
            "graph" => Ok(RowOrder::Graph),
            _ => Err(format!("unknown row order {s:?}: expected input or graph")),
        }
    }
}

/// Graph and storage parameters of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildParams {
    /// Neighbours per node on the upper levels (level 0 keeps up to `2 * m`).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Compact copy for the graph walk.
    pub compact: CompactKind,
    /// Re-scoring tier between a few-bit walk and the f32 rows (int8 or none).
    pub rescore: CompactKind,
    /// Seed for the levels of nodes added by [`add`].
    pub seed: u64,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            m: 16,
            ef_construction: 200,
            compact: CompactKind::Int8,
            rescore: CompactKind::None,
            seed: 0,
        }
    }
}

/// One attribute's vectors: `rows` is items x dim, row-major (may be a mapped file).
pub struct AttributeInput<'a> {
    pub name: String,
    pub dim: usize,
    pub rows: &'a [f32],
}

/// Labels of the items: the schema and, per item and schema attribute, a value.
#[derive(Debug, Clone)]
pub struct ItemLabels {
    pub schema: Schema,
    pub labels: Labels,
}

pub struct BuildInput<'a> {
    /// External ids, one per row, unique.
    pub ids: Vec<String>,
    pub attributes: Vec<AttributeInput<'a>>,
    pub labels: Option<ItemLabels>,
    /// Recorded verbatim in the manifest (the embedder's identity and configuration).
    pub model: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttributeSummary {
    pub name: String,
    pub dim: usize,
    pub graph_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub dir: PathBuf,
    pub generation: u64,
    pub items: usize,
    pub added: usize,
    pub attributes: Vec<AttributeSummary>,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoveSummary {
    pub dir: PathBuf,
    pub generation: u64,
    pub removed: usize,
    pub already_removed: usize,
    pub live: usize,
}

/// Builds an index of `input` into `out_dir` (created if needed) and publishes it
/// atomically; an index already there stays readable until the new manifest is in place.
/// Holds the directory's writer lock throughout.
pub fn build(
    out_dir: &Path,
    input: &BuildInput,
    params: &BuildParams,
    progress: ProgressMode,
) -> Result<BuildSummary> {
    build_in_order(out_dir, input, params, RowOrder::Input, progress)
}

/// [`build`] with the rows stored in `order`.
pub fn build_in_order(
    out_dir: &Path,
    input: &BuildInput,
    params: &BuildParams,
    order: RowOrder,
    progress: ProgressMode,
) -> Result<BuildSummary> {
    check_params(params)?;
    check_ids(&input.ids, &HashSet::new())?;
    check_attributes(input, None)?;
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let lock = lock_writer(out_dir)?;
    build_locked(&lock, input, params, order, progress, Rows::Normalize)
}

/// How [`build_locked`] takes the input rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// Normalise them (user input).
    Normalize,
    /// Copy them bit for bit: rows of an index, already normalised. Normalising again
    /// moves some values by an ulp, so `compact` would not be a fixed point.
    Verbatim,
}

pub(super) fn build_locked(
    lock: &WriterLock,
    input: &BuildInput,
    params: &BuildParams,
    row_order: RowOrder,
    progress: ProgressMode,
    rows: Rows,
) -> Result<BuildSummary> {
    let start = Instant::now();
    let out_dir = lock.dir();
    check_params(params)?;
    let n = input.ids.len();
    check_ids(&input.ids, &HashSet::new())?;
    check_attributes(input, None)?;
    let labels = item_labels(input);
    let label_values = label_values(labels, n, out_dir)?;
    let generation = NewGeneration::start(lock);
    let gen = generation.number();
    let mut files: Vec<FileEntry> = Vec::new();
    let mut attributes = Vec::new();
    let mut summaries = Vec::new();
    // Row `i` of the files is input item `order[i]` (`None`: the input's order). Set by
    // the first attribute's graph under `RowOrder::Graph`.
    let mut order: Option<Vec<u32>> = None;
    for (ai, a) in input.attributes.iter().enumerate() {
        let entry = attribute_entry(gen, ai, a, params);
        // Rows are normalised chunk by chunk into the new vector file, and the compact
        // copy and the graph read them back from its map: no copy of the attribute is
        // held in memory (a 10M x 1024 attribute is 41 GB). Reordered rows are first
        // written in the input's order, then copied in the new order from that map.
        let vectors_path = out_dir.join(&entry.vectors);
        let reorder = row_order == RowOrder::Graph && n > 1;
        let (_, input_order_path) = generation.file(&format!("a{ai}.input-order.vec"));
        let first_path = if reorder {
            &input_order_path
        } else {
            &vectors_path
        };
        let first = write_vectors_streamed(
            first_path,
            a.dim,
            n,
            normalized_chunks(a, 0, rows == Rows::Verbatim),
        )?;
        let t = Instant::now();
        let mut graph = None;
        if reorder {
            let unordered = VectorFile::open(first_path)?;
            let rows = unordered.f32_rows()?;
            if order.is_none() {
                let (g, o) = build_graph(&a.name, rows, a.dim, params, true, progress);
                graph = Some(g);
                order = o;
            }
            let order = order.as_deref().expect("set by the first attribute");
            files.push(write_vectors_streamed(
                &vectors_path,
                a.dim,
                n,
                reordered_chunks(rows, a.dim, order),
            )?);
            drop(unordered);
            std::fs::remove_file(first_path).at(first_path)?;
        } else {
            files.push(first);
        }
        let written = VectorFile::open(&vectors_path)?;
        for (name, kind) in compact_files(&entry, params) {
            files.push(write_compact(
                &out_dir.join(name),
                a.dim,
                &[written.f32_rows_bulk()?],
                kind.dtype(),
            )?);
        }
        let graph = match graph {
            Some(g) => g,
            None => build_graph(&a.name, written.f32_rows()?, a.dim, params, false, progress).0,
        };
        files.push(graph.write(&out_dir.join(&entry.graph))?);
        summaries.push(AttributeSummary {
            name: a.name.clone(),
            dim: a.dim,
            graph_seconds: t.elapsed().as_secs_f64(),
        });
        attributes.push(entry);
    }
    let in_order = |item: usize| order.as_ref().map_or(item, |o| o[item] as usize);
    let (ids_name, ids_path) = generation.file("ids");
    let ids: Cow<[String]> = match &order {
        None => Cow::Borrowed(&input.ids),
        Some(_) => Cow::Owned((0..n).map(|r| input.ids[in_order(r)].clone()).collect()),
    };
    let mut head = vec![write_ids(&ids_path, &ids)?];
    let labels_name = match (labels, &label_values) {
        (Some(l), Some(values)) => {
            let (nm, path) = generation.file("labels");
            let k = l.schema.len();
            let values: Cow<[u16]> = match &order {
                None => Cow::Borrowed(values),
                Some(_) => Cow::Owned(
                    (0..n)
                        .flat_map(|r| &values[in_order(r) * k..(in_order(r) + 1) * k])
                        .copied()
                        .collect(),
                ),
            };
            head.push(write_labels(&path, k, &values)?);
            Some(nm)
        }
        _ => None,
    };
    files.splice(0..0, head);
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: INDEX_FORMAT_VERSION,
        generation: gen,
        items: n,
        removed: 0,
        metric: "cosine".into(),
        params: ManifestParams {
            m: params.m,
            ef_construction: params.ef_construction,
            compact: params.compact,
            rescore: params.rescore,
        },
        model: input.model.clone(),
        schema: labels.map(|l| l.schema.clone()),
        ids: ids_name,
        labels: labels_name,
        tombstones: None,
        attributes,
        files,
    };
    generation.publish(&manifest)?;
    Ok(BuildSummary {
        dir: out_dir.to_path_buf(),
        generation: gen,
        items: n,
        added: n,
        attributes: summaries,
        bytes: manifest.files.iter().map(|f| f.len).sum(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Adds items to an existing index without rebuilding its graphs: the new rows are
/// inserted into the existing graphs one by one, and a new generation is published.
/// `input` must have the index's attributes (same names and dimensions) and, if the
/// index has labels, the same schema (labels may be omitted: new items are unlabelled).
pub fn add(dir: &Path, input: &BuildInput, progress: ProgressMode) -> Result<BuildSummary> {
    let start = Instant::now();
    let lock = lock_writer(dir)?;
    let manifest = Manifest::read(dir)?;
    check_inputs(dir, &manifest, None)?;
    let index = Index::open(dir)?;
    let old = index.manifest().clone();
    let n_old = index.len();
    let n_new = input.ids.len();
    let mut existing = HashSet::new();
    for id in &input.ids {
        if index.row(id).is_some() {
            existing.insert(id.clone());
        }
    }
    check_ids(&input.ids, &existing)?;
    check_attributes(input, Some(&index))?;
    let params = BuildParams {
        m: old.params.m,
        ef_construction: old.params.ef_construction,
        compact: old.params.compact,
        rescore: old.params.rescore,
        seed: old.generation,
    };
    let generation = NewGeneration::start(&lock);
    let gen = generation.number();
    let mut files = Vec::new();
    let mut all_ids: Vec<String> = (0..n_old).map(|r| index.id(r).to_string()).collect();
    all_ids.extend(input.ids.iter().cloned());
    let (ids_name, ids_path) = generation.file("ids");
    files.push(write_ids(&ids_path, &all_ids)?);
    let labels = item_labels(input);
    let labels_name = match &old.schema {
        Some(schema) => {
            if let Some(l) = labels {
                if &l.schema != schema {
                    return Err(Error::Usage(
                        "the labels of the new items use a different schema than the index".into(),
                    ));
                }
            }
            let new_values = label_values(labels, n_new, dir)?
                .unwrap_or_else(|| vec![NO_LABEL; n_new * schema.len()]);
            let mut values = Vec::with_capacity((n_old + n_new) * schema.len());
            for r in 0..n_old {
                for a in 0..schema.len() {
                    values.push(index.label(r, a).unwrap_or(NO_LABEL));
                }
            }
            values.extend(new_values);
            let (nm, path) = generation.file("labels");
            files.push(write_labels(&path, schema.len(), &values)?);
            Some(nm)
        }
        None if labels.is_some() => {
            return Err(Error::Usage(format!(
                "{}: the index has no labels; rebuild it with labels to add labelled items",
                dir.display()
            )))
        }
        None => None,
    };
    let tombstones_name = if old.removed > 0 {
        let words = tombstone_words(&index, n_old + n_new);
        let (nm, path) = generation.file("tomb");
        files.push(write_tombstones(&path, n_old + n_new, &words)?);
        Some(nm)
    } else {
        None
    };
    let mut attributes = Vec::new();
    let mut summaries = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.seed ^ 0x9e37_79b9_7f4a_7c15);
    let levels: Vec<usize> = (0..n_new)
        .map(|_| draw_level(params.m, rng.gen()))
        .collect();
    for (ai, a) in input.attributes.iter().enumerate() {
        let dim = a.dim;
        let old_rows = index.vectors(&a.name)?;
        let new_rows = normalized_rows(a, n_old)?;
        let entry = attribute_entry(gen, ai, a, &params);
        files.push(write_vectors(
            &dir.join(&entry.vectors),
            dim,
            &[old_rows, &new_rows],
        )?);
        for (name, kind) in compact_files(&entry, &params) {
            files.push(write_compact(
                &dir.join(name),
                dim,
                &[old_rows, &new_rows],
                kind.dtype(),
            )?);
        }
        let t = Instant::now();
        let builder = HnswBuilder::extend(
            index.graph(&a.name)?,
            builder::Rows::split(old_rows, &new_rows, dim),
            params.ef_construction,
            &levels,
        )?;
        let bar = Progress::new(&format!("{}: inserting", a.name), n_new as u64, progress);
        builder.insert_from(n_old, &bar);
        bar.finish();
        let graph = builder.into_graph();
        files.push(graph.write(&dir.join(&entry.graph))?);
        summaries.push(AttributeSummary {
            name: a.name.clone(),
            dim,
            graph_seconds: t.elapsed().as_secs_f64(),
        });
        attributes.push(entry);
    }
    let manifest = Manifest {
        generation: gen,
        items: n_old + n_new,
        ids: ids_name,
        labels: labels_name,
        tombstones: tombstones_name,
        attributes,
        files,
        ..old
    };
    drop(index);
    generation.publish(&manifest)?;
    Ok(BuildSummary {
        dir: dir.to_path_buf(),
        generation: gen,
        items: n_old + n_new,
        added: n_new,
        attributes: summaries,
        bytes: manifest.files.iter().map(|f| f.len).sum(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Marks items removed (tombstones): searches no longer return them. The vectors and
/// graphs are kept (and reused by the new generation) until [`compact`] rebuilds.
pub fn remove(dir: &Path, ids: &[String]) -> Result<RemoveSummary> {
    let lock = lock_writer(dir)?;
    // `remove` reads the id table and the tombstones and carries every other file's
    // manifest entry (and so its checksum) over unchanged.
    let manifest = Manifest::read(dir)?;
    let mut read: Vec<&str> = vec![&manifest.ids];
    read.extend(manifest.tombstones.as_deref());
    check_inputs(dir, &manifest, Some(&read))?;
    let index = Index::open(dir)?;
    let n = index.len();
    let mut words = tombstone_words(&index, n);
    let (mut removed, mut already) = (0, 0);
    for id in ids {
        let row = index
            .row(id)
            .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
        let (w, b) = (row / 64, row % 64);
        if words[w] >> b & 1 == 1 {
            already += 1;
        } else {
            words[w] |= 1 << b;
            removed += 1;
        }
    }
    let old = index.manifest().clone();
    drop(index);
    let generation = NewGeneration::start(&lock);
    let gen = generation.number();
    let (nm, path) = generation.file("tomb");
    let entry = write_tombstones(&path, n, &words)?;
    let mut files: Vec<FileEntry> = old
        .files
        .iter()
        .filter(|f| Some(&f.name) != old.tombstones.as_ref())
        .cloned()
        .collect();
    files.push(entry);
    let total_removed = old.removed + removed;
    let manifest = Manifest {
        generation: gen,
        removed: total_removed,
        tombstones: Some(nm),
        files,
        ..old
    };
    generation.publish(&manifest)?;
    Ok(RemoveSummary {
        dir: dir.to_path_buf(),
        generation: gen,
        removed,
        already_removed: already,
        live: n - total_removed,
    })
}

pub(super) fn check_params(p: &BuildParams) -> Result<()> {
    if !M_RANGE.contains(&p.m) {
        return Err(Error::Usage(format!(
            "m must be in {}..={}, got {}",
            M_RANGE.start(),
            M_RANGE.end(),
            p.m
        )));
    }
    if !EF_CONSTRUCTION_RANGE.contains(&p.ef_construction) {
        return Err(Error::Usage(format!(
            "ef_construction must be in {}..={}, got {}",
            EF_CONSTRUCTION_RANGE.start(),
            EF_CONSTRUCTION_RANGE.end(),
            p.ef_construction
        )));
    }
    if !p.compact.allows_rescore_tier(p.rescore) {
        return Err(Error::Usage(format!(
            "a re-scoring tier is int8 under a bit1 or bit4 walk (got rescore {} with compact {})",
            kind_name(p.rescore),
            kind_name(p.compact)
        )));
    }
    Ok(())
}

fn kind_name(k: CompactKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{k:?}"))
}

fn check_ids(ids: &[String], existing: &HashSet<String>) -> Result<()> {
    let mut seen = HashSet::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() || id.contains(['\n', '\r']) {
            return Err(Error::Usage(format!(
                "item {i}: id {id:?} is empty or contains a line break"
            )));
        }
        if existing.contains(id) {
            return Err(Error::Usage(format!(
                "item id {id:?} is already in the index (removed items keep their id until \
                 `tailor index compact`)"
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(Error::Usage(format!("item id {id:?} appears twice")));
        }
    }
    if ids.len() >= u32::MAX as usize {
        return Err(Error::Usage("at most 2^32 - 1 items".into()));
    }
    Ok(())
}

fn check_attributes(input: &BuildInput, index: Option<&Index>) -> Result<()> {
    let n = input.ids.len();
    if input.attributes.is_empty() {
        return Err(Error::Usage(
            "an index needs at least one attribute's vectors".into(),
        ));
    }
    let mut names = HashSet::new();
    for a in &input.attributes {
        if a.name.is_empty() || !names.insert(a.name.as_str()) {
            return Err(Error::Usage(format!(
                "attribute name {:?} is empty or repeated",
                a.name
            )));
        }
        if a.dim == 0 {
            return Err(Error::Usage(format!("attribute {:?}: dimension 0", a.name)));
        }
        if a.rows.len() != n * a.dim {
            return Err(Error::Usage(format!(
                "attribute {:?}: {} values for {n} items of dimension {} (expected {})",
                a.name,
                a.rows.len(),
                a.dim,
                n * a.dim
            )));
        }
    }
    if let Some(index) = index {
        let have: Vec<&str> = input.attributes.iter().map(|a| a.name.as_str()).collect();
        let want: Vec<&str> = index.attributes().iter().map(String::as_str).collect();
        if have != want {
            return Err(Error::Usage(format!(
                "new items must have vectors for exactly the index's attributes, in order: {} (got {})",
                want.join(", "),
                have.join(", ")
            )));
        }
        for a in &input.attributes {
            let dim = index.dim(&a.name)?;
            if dim != a.dim {
                return Err(Error::DimensionMismatch {
                    attribute: a.name.clone(),
                    expected: dim,
                    got: a.dim,
                });
            }
        }
    }
    Ok(())
}

/// The input's labels, or none when their schema has no attributes (a catalog of ids
/// and images only): an index stores a label table only for at least one attribute.
fn item_labels<'a>(input: &'a BuildInput) -> Option<&'a ItemLabels> {
    input
        .labels
        .as_ref()
        .filter(|l| !l.schema.attributes.is_empty())
}

/// Label values as stored (item-major, `NO_LABEL` for none), checked against the schema.
fn label_values(labels: Option<&ItemLabels>, n: usize, dir: &Path) -> Result<Option<Vec<u16>>> {
    let Some(l) = labels else { return Ok(None) };
    if l.labels.items() != n {
        return Err(Error::Usage(format!(
            "labels cover {} items, the index input has {n}",
            l.labels.items()
        )));
    }
    let k = l.schema.len();
    let mut values = Vec::with_capacity(n * k);
    for item in 0..n {
        for (a, attr) in l.schema.attributes.iter().enumerate() {
            let v = l.labels.get(item, a);
            if let Some(v) = v {
                if v as usize >= attr.values.len() {
                    return Err(Error::invalid(
                        dir,
                        format!(
                            "item {item}: value {v} of {:?} is past its {} values",
                            attr.name,
                            attr.values.len()
                        ),
                    ));
                }
            }
            values.push(v.unwrap_or(NO_LABEL));
        }
    }
    Ok(Some(values))
}

/// Normalised copy of an attribute's rows; zero or non-finite rows are errors naming
/// the item (`first_row` offsets the reported row number).
fn normalized_rows(a: &AttributeInput, first_row: usize) -> Result<Vec<f32>> {
    let mut rows = a.rows.to_vec();
    normalize_checked(&mut rows, a, first_row)?;
    Ok(rows)
}

/// The normalised rows in chunks of 4,096 rows (16 MiB at 1024-d), checked as by
/// [`normalized_rows`].
/// `verbatim`: the rows are an index's, already normalised; they are passed through
/// unchanged.
fn normalized_chunks<'a>(
    a: &'a AttributeInput,
    first_row: usize,
    verbatim: bool,
) -> impl Iterator<Item = Result<Cow<'a, [f32]>>> + 'a {
    const CHUNK_ROWS: usize = 4096;
    a.rows
        .chunks(CHUNK_ROWS * a.dim)
        .enumerate()
        .map(move |(i, chunk)| {
            if verbatim {
                return Ok(Cow::Borrowed(chunk));
            }
            let mut rows = chunk.to_vec();
            normalize_checked(&mut rows, a, first_row + i * CHUNK_ROWS)?;
            Ok(Cow::Owned(rows))
        })
}

fn normalize_checked(rows: &mut [f32], a: &AttributeInput, first_row: usize) -> Result<()> {
    rows.par_chunks_mut(a.dim)
        .enumerate()
        .try_for_each(|(i, row)| {
            if row.iter().any(|x| !x.is_finite()) {
                return Err(Error::Usage(format!(
                    "attribute {:?}, row {}: non-finite value",
                    a.name,
                    first_row + i
                )));
            }
            if normalize(row) == 0.0 {
                return Err(Error::Usage(format!(
                    "attribute {:?}, row {}: zero vector (cosine undefined)",
                    a.name,
                    first_row + i
                )));
            }
            Ok(())
        })
}

/// Builds an attribute's graph with the native parallel builder, and with `reorder`
/// its nodes renumbered in [`HnswBuilder::locality_order`], which it returns (row `i`
/// of the graph is input row `order[i]`). Levels come from `params.seed`, so one-thread
/// builds are reproducible.
fn build_graph(
    name: &str,
    rows: &[f32],
    dim: usize,
    params: &BuildParams,
    reorder: bool,
    progress: ProgressMode,
) -> (MemGraph, Option<Vec<u32>>) {
    let n = rows.len() / dim;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.seed);
    let levels: Vec<usize> = (0..n).map(|_| draw_level(params.m, rng.gen())).collect();
    let builder = HnswBuilder::new(
        builder::Rows::new(rows, dim),
        params.m,
        2 * params.m,
        params.ef_construction,
        &levels,
    );
    let bar = Progress::new(&format!("{name}: building graph"), n as u64, progress);
    builder.insert_from(0, &bar);
    bar.finish();
    if !reorder {
        return (builder.into_graph(), None);
    }
    let order = builder.locality_order();
    (builder.graph_ordered(Some(&order)), Some(order))
}

/// `rows` (`dim` floats each) in `order`, in chunks for [`write_vectors_streamed`].
fn reordered_chunks<'a>(
    rows: &'a [f32],
    dim: usize,
    order: &'a [u32],
) -> impl Iterator<Item = Result<Cow<'a, [f32]>>> + 'a {
    const CHUNK_ROWS: usize = 4096;
    order.chunks(CHUNK_ROWS).map(move |chunk| {
        let mut out = Vec::with_capacity(chunk.len() * dim);
        for &r in chunk {
            out.extend_from_slice(&rows[r as usize * dim..(r as usize + 1) * dim]);
        }
        Ok(Cow::Owned(out))
    })
}

fn attribute_entry(
    gen: u64,
    ai: usize,
    a: &AttributeInput,
    params: &BuildParams,
) -> AttributeEntry {
    AttributeEntry {
        name: a.name.clone(),
        dim: a.dim,
        vectors: file_name(gen, &format!("a{ai}.vec")),
        compact: compact_file_name(gen, ai, params.compact),
        rescore: compact_file_name(gen, ai, params.rescore),
        graph: file_name(gen, &format!("a{ai}.graph")),
    }
}

fn compact_file_name(gen: u64, ai: usize, kind: CompactKind) -> Option<String> {
    let suffix = match kind {
        CompactKind::None => return None,
        CompactKind::F16 => "f16",
        CompactKind::Int8 => "int8",
        CompactKind::Bit1 => "bit1",
        CompactKind::Bit4 => "bit4",
    };
    Some(file_name(gen, &format!("a{ai}.{suffix}.vec")))
}

/// An attribute's compact files with their kinds: the walk's copy, then the re-scoring
/// tier.
fn compact_files<'e>(
    entry: &'e AttributeEntry,
    params: &BuildParams,
) -> impl Iterator<Item = (&'e str, CompactKind)> {
    let walk = entry.compact.as_deref().map(|n| (n, params.compact));
    let tier = entry.rescore.as_deref().map(|n| (n, params.rescore));
    walk.into_iter().chain(tier)
}

fn tombstone_words(index: &Index, n: usize) -> Vec<u64> {
    let mut words = vec![0u64; n.div_ceil(64)];
    if let Some(t) = index.tombstones() {
        for (w, &x) in words.iter_mut().zip(t.words()) {
            *w = x;
        }
    }
    words
}
