//! The read side: [`Index`] opens a generation (maps every file, checks headers and
//! lengths; reads no vectors), answers graph and exact searches, and verifies.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::disk::format::{crc32, Dtype};
use super::disk::manifest::{AttributeEntry, CompactKind, Manifest, MANIFEST_FILE};
use super::disk::store::{int8_scale, quantize, IdTable, LabelTable, Tombstones, VectorFile};
use super::hnsw::bits::{self, Correction, QueryBits, Rotation};
use super::hnsw::bits4::{self, QueryNibbles, Terms};
use super::hnsw::distance::{
    self, dot_f16, dot_f32, dot_i16_i8, prefetch, QueryI16, PREFETCH_COMPACT_LINES,
    PREFETCH_F32_LINES,
};
use super::hnsw::exact;
use super::hnsw::graph::{self, GraphRead, MappedGraph, Scorer, Sim};
use crate::catalog::{Schema, ValueId};
use crate::error::{Error, Result};
use crate::fsio;

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Dense row id in the index.
    pub row: usize,
    /// External item id.
    pub id: String,
    /// Cosine similarity (or weighted sum of them for multi-attribute queries).
    pub score: f32,
}

/// Options of a graph search beyond `k` and `ef`.
#[derive(Clone, Copy)]
pub struct SearchOptions<'a> {
    pub k: usize,
    /// Size of the candidate list of the level-0 walk (raised to `k` if smaller).
    pub ef: usize,
    /// Walk the graph on the compact copy when the index has one (final scores are
    /// always exact, from the f32 rows).
    pub use_compact: bool,
    /// Only rows for which this returns true are returned (removed rows never are).
    pub accept: Option<&'a (dyn Fn(usize) -> bool + Sync)>,
    /// With a compact walk: at most this many of its best candidates are re-scored (at
    /// least `k`; through the re-scoring tier first, if the index has one, then from the
    /// f32 rows). `None`: no cap; re-scoring stops by itself once no remaining
    /// candidate's compact score, plus its quantisation error bound, reaches the k-th
    /// best exact score (typically k plus a few rows for int8; nearly all candidates
    /// for bit1 and bit4 without a tier).
    pub rescore: Option<usize>,
}

impl SearchOptions<'_> {
    pub fn new(k: usize, ef: usize) -> Self {
        SearchOptions {
            k,
            ef,
            use_compact: true,
            accept: None,
            rescore: None,
        }
    }
}

struct AttributeData {
    entry: AttributeEntry,
    vectors: VectorFile,
    compact: Option<VectorFile>,
    /// The int8 re-scoring tier of a few-bit walk.
    rescore: Option<VectorFile>,
    /// The rotation of a bit1 compact copy (from its seed), made once on open.
    rotation: Option<Rotation>,
    graph: MappedGraph,
}

/// An opened index: every file mapped, headers checked, nothing read in full.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    ids: IdTable,
    labels: Option<LabelTable>,
    tombstones: Option<Tombstones>,
    attrs: Vec<AttributeData>,
    names: Vec<String>,
}

/// Result of checking every file's length and crc32 against the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub files: Vec<FileCheck>,
    /// Problems found beyond checksums (structure), or why a file could not be read.
    pub problems: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub name: String,
    pub len: u64,
    pub expected_len: u64,
    pub crc32: Option<u32>,
    pub expected_crc32: u32,
    pub ok: bool,
}

/// Largest distance of a stored f32 row's norm from 1 that `verify` accepts. Rows are
/// normalised at build time (norm in f64, division in f32), which leaves them within a
/// few f32 ulps of 1 (under 1e-6 at 4096 dimensions); anything further was not written
/// by a normalising writer.
pub const NORM_TOLERANCE: f64 = 1e-4;

/// Checks the manifest and the checksums of every file it lists, without opening the
/// index (so it also works on an index too damaged to open). Damage, in the manifest
/// included, is reported in [`VerifyReport::problems`] (`ok` false); `Err` only when the
/// directory or a file cannot be read at all (I/O).
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let manifest = match Manifest::read(dir) {
        Ok(m) => m,
        Err(e @ (Error::Corrupted { .. } | Error::IncompatibleVersion { .. })) => {
            return Ok(VerifyReport {
                dir: dir.to_path_buf(),
                files,
                problems: vec![e.to_string()],
                ok: false,
            })
        }
        Err(e) => return Err(e),
    };
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let (len, crc) = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 && f.len == 0 => (0, Some(crc32(&[]))),
            Ok(meta) if meta.len() == f.len => match fsio::map_path(&path) {
                Ok(map) => (meta.len(), Some(crc32(&map))),
                Err(e) => {
                    problems.push(e.to_string());
                    (meta.len(), None)
                }
            },
            Ok(meta) => (meta.len(), None),
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                (0, None)
            }
        };
        files.push(FileCheck {
            name: f.name.clone(),
            len,
            expected_len: f.len,
            crc32: crc,
            expected_crc32: f.crc32,
            ok: len == f.len && crc == Some(f.crc32),
        });
    }
    let ok = problems.is_empty() && files.iter().all(|f| f.ok);
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        files,
        problems,
        ok,
    })
}

impl Index {
    /// Opens an index directory: reads the manifest, maps every file, checks headers,
    /// lengths and cross-file counts. Cost: the manifest plus one pass over the id
    /// offsets; vectors and graphs are not read.
    ///
    /// A writer may commit between reading the manifest and opening its files, and then
    /// deletes the files of the previous generation: a file the manifest named is gone.
    /// Open then reads the manifest again and retries with the new generation (as long
    /// as the generation keeps changing), so a reader never fails because of a commit;
    /// once open, the maps hold the files whatever writers do.
    pub fn open(dir: &Path) -> Result<Index> {
        let mut manifest = Manifest::read(dir)?;
        loop {
            let generation = manifest.generation;
            match Index::open_generation(dir, manifest) {
                Err(Error::Io { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    let again = Manifest::read(dir)?;
                    if again.generation == generation {
                        return Err(Error::Io { path, source });
                    }
                    manifest = again;
                }
                other => return other,
            }
        }
    }

    fn open_generation(dir: &Path, manifest: Manifest) -> Result<Index> {
        let n = manifest.items;
        let file = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let want = manifest.file(name).map(|f| f.len).unwrap_or(0);
            let got = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            if got != want {
                return Err(Error::corrupted(
                    &path,
                    format!("is {got} bytes, the manifest records {want} (truncated or replaced?)"),
                ));
            }
            Ok(path)
        };
        let count_err = |path: &Path, what: &str, got: usize| {
            Error::corrupted(
                path,
                format!("holds {got} {what}, the manifest records {n} items"),
            )
        };
        let ids_path = file(&manifest.ids)?;
        let ids = IdTable::open(&ids_path)?;
        if ids.len() != n {
            return Err(count_err(&ids_path, "ids", ids.len()));
        }
        let labels = match (&manifest.labels, &manifest.schema) {
            (Some(name), Some(schema)) => {
                let path = file(name)?;
                let t = LabelTable::open(&path)?;
                if t.count != n {
                    return Err(count_err(&path, "label rows", t.count));
                }
                if t.attributes != schema.len() {
                    return Err(Error::corrupted(
                        &path,
                        format!(
                            "has {} label attributes, the schema {}",
                            t.attributes,
                            schema.len()
                        ),
                    ));
                }
                Some(t)
            }
            _ => None,
        };
        let tombstones = match &manifest.tombstones {
            Some(name) => {
                let path = file(name)?;
                let t = Tombstones::open(&path)?;
                if t.count != n {
                    return Err(count_err(&path, "rows", t.count));
                }
                if t.removed != manifest.removed {
                    return Err(Error::corrupted(
                        &path,
                        "removed count disagrees with the manifest",
                    ));
                }
                Some(t)
            }
            None if manifest.removed > 0 => {
                return Err(Error::corrupted(
                    dir.join(MANIFEST_FILE),
                    "removed items but no tombstone file",
                ))
            }
            None => None,
        };
        let mut attrs = Vec::with_capacity(manifest.attributes.len());
        for entry in &manifest.attributes {
            let vpath = file(&entry.vectors)?;
            let vectors = VectorFile::open(&vpath)?;
            if vectors.dtype != Dtype::F32 || vectors.count != n || vectors.dim != entry.dim {
                return Err(Error::corrupted(
                    &vpath,
                    format!(
                        "holds {} {:?} rows of dimension {}, the manifest records {n} f32 rows of {}",
                        vectors.count, vectors.dtype, vectors.dim, entry.dim
                    ),
                ));
            }
            let open_compact = |name: &Option<String>, kind: CompactKind, what: &str| {
                let Some(name) = name else { return Ok(None) };
                let path = file(name)?;
                let c = VectorFile::open(&path)?;
                if c.dtype != kind.dtype() || c.count != n || c.dim != entry.dim {
                    return Err(Error::corrupted(
                        &path,
                        format!(
                            "{what} does not match the f32 rows: it holds {} {:?} rows of \
                             dimension {}, the manifest records {n} {:?} rows of {}",
                            c.count,
                            c.dtype,
                            c.dim,
                            kind.dtype(),
                            entry.dim
                        ),
                    ));
                }
                Ok(Some(c))
            };
            let compact = open_compact(&entry.compact, manifest.params.compact, "compact copy")?;
            let rescore = open_compact(&entry.rescore, manifest.params.rescore, "re-scoring tier")?;
            if let Some(t) = &rescore {
                // A query reads the tier's rows of its candidates only, as the f32 rows.
                t.advise_random();
            }
            let gpath = file(&entry.graph)?;
            let graph = MappedGraph::open(&gpath)?;
            if graph.node_count() != n {
                return Err(count_err(&gpath, "graph nodes", graph.node_count()));
            }
            let rotation = compact
                .as_ref()
                .filter(|c| matches!(c.dtype, Dtype::Bit1 | Dtype::Bit4))
                .map(|c| Rotation::new(c.dim, c.seed));
            attrs.push(AttributeData {
                entry: entry.clone(),
                vectors,
                compact,
                rescore,
                rotation,
                graph,
            });
        }
        let names = manifest.attributes.iter().map(|a| a.name.clone()).collect();
        Ok(Index {
            dir: dir.to_path_buf(),
            manifest,
            ids,
            labels,
            tombstones,
            attrs,
            names,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Rows, including removed ones (row ids are `0..len()`).
    pub fn len(&self) -> usize {
        self.manifest.items
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows not removed.
    pub fn live_len(&self) -> usize {
        self.manifest.items - self.manifest.removed
    }

    /// Embedding attribute names, in manifest order.
    pub fn attributes(&self) -> &[String] {
        &self.names
    }

    fn attr(&self, name: &str) -> Result<&AttributeData> {
        self.attrs
            .iter()
            .find(|a| a.entry.name == name)
            .ok_or_else(|| Error::UnknownAttribute {
                name: name.to_string(),
                known: self.names.join(", "),
            })
    }

    pub fn dim(&self, attr: &str) -> Result<usize> {
        Ok(self.attr(attr)?.entry.dim)
    }

    /// External id of a row. Rows come from this index (`0..len()`); a row past the
    /// end gives an empty string.
    pub fn id(&self, row: usize) -> &str {
        self.ids.get(row).unwrap_or("")
    }

    /// Row of an external id (removed items included; see [`Index::is_removed`]).
    pub fn row(&self, id: &str) -> Option<usize> {
        self.ids.find(id)
    }

    pub fn is_removed(&self, row: usize) -> bool {
        self.tombstones.as_ref().is_some_and(|t| t.is_removed(row))
    }

    pub(crate) fn tombstones(&self) -> Option<&Tombstones> {
        self.tombstones.as_ref()
    }

    pub(crate) fn graph(&self, attr: &str) -> Result<&MappedGraph> {
        Ok(&self.attr(attr)?.graph)
    }

    /// The mapped, L2-normalised f32 rows of an attribute (`len() x dim`, row-major),
    /// for passes over many rows (the map is advised for sequential reading).
    pub fn vectors(&self, attr: &str) -> Result<&[f32]> {
        self.attr(attr)?.vectors.f32_rows_bulk()
    }

    /// One row's vector (read without read-ahead).
    pub fn vector(&self, attr: &str, row: usize) -> Result<&[f32]> {
        let dim = self.dim(attr)?;
        self.attr(attr)?
            .vectors
            .f32_rows()?
            .get(row * dim..(row + 1) * dim)
            .ok_or_else(|| Error::Usage(format!("row {row} is past the end ({} rows)", self.len())))
    }

    pub fn model(&self) -> Option<&serde_json::Value> {
        self.manifest.model.as_ref()
    }

    /// Label schema, when the index carries labels.
    pub fn schema(&self) -> Option<&Schema> {
        self.manifest.schema.as_ref()
    }

    /// Label of a row for a schema attribute (by position in [`Index::schema`]).
    pub fn label(&self, row: usize, attribute: usize) -> Option<ValueId> {
        self.labels.as_ref()?.get(row, attribute)
    }

    /// Normalised copy of a query, checked against the attribute's dimension.
    pub fn prepare_query(&self, attr: &str, query: &[f32]) -> Result<Vec<f32>> {
        let dim = self.dim(attr)?;
        if query.len() != dim {
            return Err(Error::DimensionMismatch {
                attribute: attr.to_string(),
                expected: dim,
                got: query.len(),
            });
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(Error::Usage(format!(
                "query vector for {attr:?} has non-finite values"
            )));
        }
        let mut q = query.to_vec();
        if distance::normalize(&mut q) == 0.0 {
            return Err(Error::Usage(format!(
                "query vector for {attr:?} is all zeros"
            )));
        }
        Ok(q)
    }

    /// Approximate top-`k` by the attribute's graph (`ef` >= k; larger is more exact).
    pub fn search(&self, attr: &str, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        self.search_with(attr, query, &SearchOptions::new(k, ef))
    }

    /// Graph search with options (filter, f32 or compact walk).
    pub fn search_with(&self, attr: &str, query: &[f32], opts: &SearchOptions) -> Result<Vec<Hit>> {
        Ok(self.hits(self.search_rows(attr, query, opts)?))
    }

    /// [`Index::search_with`] without the external ids: `(score, row)`, best first (for
    /// callers that gather candidates by row, such as multi-attribute queries). `k` and
    /// `ef` are clamped to the number of rows, so any value is safe.
    pub fn search_rows(
        &self,
        attr: &str,
        query: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<(f32, usize)>> {
        Ok(self.search_rows_counted(attr, query, opts)?.0)
    }

    /// [`Index::search_rows`] and how many f32 rows its re-scoring read (0 for an f32
    /// walk, whose walk scores are exact): what a compact walk's bound leaves to re-score,
    /// for benches and tuning.
    pub fn search_rows_counted(
        &self,
        attr: &str,
        query: &[f32],
        opts: &SearchOptions,
    ) -> Result<(Vec<(f32, usize)>, usize)> {
        let a = self.attr(attr)?;
        let q = self.prepare_query(attr, query)?;
        let opts = &SearchOptions {
            k: opts.k.min(self.len()),
            ef: opts.ef.min(self.len()),
            ..*opts
        };
        let rows = a.vectors.f32_rows()?;
        let dim = a.entry.dim;
        let accept = |r: u32| {
            let r = r as usize;
            !self.is_removed(r) && opts.accept.is_none_or(|f| f(r))
        };
        let filtered = self.tombstones.is_some() || opts.accept.is_some();
        let accept_ref: Option<&dyn Fn(u32) -> bool> = if filtered { Some(&accept) } else { None };
        let gpath = a.graph.path().to_path_buf();
        let bad = move |n: u32| {
            Error::corrupted(&gpath, format!("neighbour id {n} is past the node count"))
        };
        let ef = opts.ef.max(opts.k);
        let compact = a.compact.as_ref().filter(|_| opts.use_compact);
        let mut found: Vec<(f32, usize)> = match compact {
            None => {
                let s = F32Scorer { rows, dim, q: &q };
                graph::knn(&a.graph, &s, ef, accept_ref, &bad)?
                    .into_iter()
                    .map(|(s, n)| (s, n as usize))
                    .collect()
            }
            Some(c) => {
                // How far a compact score may sit below the exact score. f16: |sum q_i
                // (x_i - h_i)| <= 2^-11 * sum |q_i x_i| <= 2^-11 (relative rounding, unit
                // vectors). int8: see `Int8Margin`. A statistical bound (a few standard
                // deviations of independent rounding errors) is smaller but fails on
                // degenerate vectors whose rounding errors line up, and then the true best
                // row is never re-scored: found by a flaky test on near-equal embeddings
                // of an untrained model.
                let (walk, bound) = match c.dtype {
                    Dtype::F16 => {
                        let s = F16Scorer {
                            rows: c.f16_rows()?,
                            dim,
                            q: &q,
                        };
                        (graph::knn(&a.graph, &s, ef, accept_ref, &bad)?, Bound::F16)
                    }
                    Dtype::Bit1 => {
                        let (corr, codes) = c.bit1_rows()?;
                        let rot = a.rotation.as_ref().expect("made on open for bit1");
                        let qb = QueryBits::new(rot, &q);
                        let s = Bit1Scorer {
                            corr,
                            codes,
                            words: bits::code_words(dim),
                            q: &qb,
                        };
                        (
                            graph::knn(&a.graph, &s, ef, accept_ref, &bad)?,
                            Bound::Bit1(corr, qb),
                        )
                    }
                    Dtype::Bit4 => {
                        let (terms, codes) = c.bit4_rows()?;
                        let rot = a.rotation.as_ref().expect("made on open for bit4");
                        let qn = QueryNibbles::new(rot, &q, dim);
                        let s = Bit4Scorer {
                            terms,
                            codes,
                            bytes: bits4::code_bytes(dim),
                            q: &qn,
                        };
                        (
                            graph::knn(&a.graph, &s, ef, accept_ref, &bad)?,
                            Bound::Bit4(terms, qn),
                        )
                    }
                    _ => {
                        let (scales, codes) = c.int8_rows()?;
                        let q16 = QueryI16::new(&q);
                        let margin = Int8Margin::new(&q, &q16);
                        let s = Int8Scorer {
                            scales,
                            codes,
                            dim,
                            q: &q16,
                        };
                        (
                            graph::knn(&a.graph, &s, ef, accept_ref, &bad)?,
                            Bound::Int8(scales, margin),
                        )
                    }
                };
                // `upper(approx, n)`: the largest exact score row n may have, given its
                // compact score. bit1: see `QueryBits::upper_bound` (index-format.md,
                // "1-bit codes").
                let upper = |approx: f32, n: u32| match &bound {
                    // Plus subnormal rounding and f32 summation, both far below 1e-5.
                    Bound::F16 => approx + 1.0 / 2048.0 + 1e-5,
                    Bound::Int8(sc, m) => sc
                        .get(n as usize)
                        .map_or(f32::INFINITY, |&s| approx + m.of(s)),
                    Bound::Bit1(corr, qb) => corr
                        .get(n as usize)
                        .map_or(f32::INFINITY, |c| qb.upper_bound(approx, *c)),
                    Bound::Bit4(terms, qn) => terms
                        .get(n as usize)
                        .map_or(f32::INFINITY, |t| qn.upper_bound(approx, *t)),
                };
                let cap = opts.rescore.unwrap_or(usize::MAX).max(opts.k);
                let walk = &walk[..walk.len().min(cap)];
                // (upper bound, row) in the order the f32 rows are read.
                let candidates: Vec<(f32, u32)> = match &a.rescore {
                    Some(tier) => {
                        tier_candidates(tier, &q, walk, &upper, opts.k, PREFETCH_TIER_AHEAD)?
                    }
                    None => walk.iter().map(|&(s, n)| (upper(s, n), n)).collect(),
                };
                rescore_exact(rows, dim, &q, &candidates, opts.k)
            }
        };
        let rescored = if compact.is_some() { found.len() } else { 0 };
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        found.truncate(opts.k);
        Ok((found, rescored))
    }

    /// Many queries in one call: [`Index::search_rows`] for each query, spread over the
    /// threads of the current rayon pool (install a pool to choose how many). Results
    /// come in query order and are identical to one call per query; a bad query (wrong
    /// dimension, non-finite or zero values) fails the batch with the error its single
    /// search gives (the first such query's).
    pub fn search_rows_batch(
        &self,
        attr: &str,
        queries: &[&[f32]],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<(f32, usize)>>> {
        use rayon::prelude::*;
        let found: Vec<Result<Vec<(f32, usize)>>> = queries
            .par_iter()
            .map(|q| self.search_rows(attr, q, opts))
            .collect();
        found.into_iter().collect()
    }

    /// [`Index::search_rows_batch`] with external ids: per query, what
    /// [`Index::search_with`] returns.
    pub fn search_batch(
        &self,
        attr: &str,
        queries: &[&[f32]],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        Ok(self
            .search_rows_batch(attr, queries, opts)?
            .into_iter()
            .map(|f| self.hits(f))
            .collect())
    }

    /// Exact top-`k` by brute force over the mapped f32 rows (removed rows skipped).
    pub fn search_exact(&self, attr: &str, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_exact_with(attr, query, k, None)
    }

    pub fn search_exact_with(
        &self,
        attr: &str,
        query: &[f32],
        k: usize,
        accept: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Result<Vec<Hit>> {
        let a = self.attr(attr)?;
        let q = self.prepare_query(attr, query)?;
        let rows = a.vectors.f32_rows_bulk()?;
        let ok = |r: usize| !self.is_removed(r) && accept.is_none_or(|f| f(r));
        let k = k.min(self.len());
        Ok(self.hits(exact::top_k(rows, a.entry.dim, &q, k, &ok)))
    }

    fn hits(&self, found: Vec<(f32, usize)>) -> Vec<Hit> {
        found
            .into_iter()
            .map(|(score, row)| Hit {
                row,
                id: self.id(row).to_string(),
                score,
            })
            .collect()
    }

    /// Checks every file's length and crc32, then the structure of every file (the
    /// list in `index-format.md`, section `tailor index verify`).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = verify_dir(&self.dir)?;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                report.problems.push(e.to_string());
            }
        };
        note(self.ids.check());
        if let Some(t) = &self.tombstones {
            note(t.check());
        }
        for a in &self.attrs {
            note(a.graph.check());
            note(a.vectors.check());
            note(check_norms(&a.vectors));
            for c in a.compact.iter().chain(&a.rescore) {
                let name = &a.entry.name;
                note(c.check());
                note(match (c.dtype, &a.rotation) {
                    (Dtype::Bit4, Some(rot)) => check_bit4_codes(name, &a.vectors, c, rot),
                    (Dtype::Bit1, Some(rot)) => check_bit1_codes(name, &a.vectors, c, rot),
                    (Dtype::Int8, _) => check_int8_codes(name, &a.vectors, c),
                    _ => Ok(()),
                });
            }
        }
        if let (Some(labels), Some(schema)) = (&self.labels, self.schema()) {
            'rows: for row in 0..self.len() {
                for (ai, attr) in schema.attributes.iter().enumerate() {
                    if let Some(v) = labels.get(row, ai) {
                        if v as usize >= attr.values.len() {
                            report.problems.push(format!(
                                "{}: item {:?} has value {v} for {:?}, which has {} values",
                                self.dir.display(),
                                self.id(row),
                                attr.name,
                                attr.values.len()
                            ));
                            break 'rows;
                        }
                    }
                }
            }
        }
        report.ok = report.ok && report.problems.is_empty();
        Ok(report)
    }

    /// Sizes of the index files in bytes: (vectors f32, compact copies and re-scoring
    /// tiers, graphs, other).
    pub fn sizes(&self) -> (u64, u64, u64, u64) {
        let len = |name: &str| self.manifest.file(name).map_or(0, |f| f.len);
        let mut v = (0, 0, 0, 0);
        for a in &self.attrs {
            v.0 += len(&a.entry.vectors);
            v.1 += a.entry.compact.as_deref().map_or(0, len);
            v.1 += a.entry.rescore.as_deref().map_or(0, len);
            v.2 += len(&a.entry.graph);
        }
        let total: u64 = self.manifest.files.iter().map(|f| f.len).sum();
        v.3 = total - v.0 - v.1 - v.2;
        v
    }

    /// Graph degrees (m, m0) of an attribute.
    pub fn graph_degrees(&self, attr: &str) -> Result<(usize, usize)> {
        Ok(self.attr(attr)?.graph.degrees())
    }
}

/// Every f32 row's L2 norm (summed in f64) is within [`NORM_TOLERANCE`] of 1.
fn check_norms(vectors: &VectorFile) -> Result<()> {
    let dim = vectors.dim;
    for (row, x) in vectors.f32_rows_bulk()?.chunks_exact(dim).enumerate() {
        let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if (norm - 1.0).abs() > NORM_TOLERANCE || !norm.is_finite() {
            return Err(Error::corrupted(
                vectors.path(),
                format!(
                    "row {row} has norm {norm:.6}, not 1 within {NORM_TOLERANCE:e} (rows are \
                     stored L2-normalised)"
                ),
            ));
        }
    }
    Ok(())
}

/// The error of a compact row that disagrees with its f32 row (verify check (d)).
fn disagrees(attr: &str, vectors: &VectorFile, copy: &VectorFile, row: usize, what: &str) -> Error {
    Error::corrupted(
        copy.path(),
        format!(
            "attribute {attr:?}: row {row} {what}, which disagrees with the f32 rows of {}",
            vectors.path().display()
        ),
    )
}

/// A bit1 copy agrees with its f32 rows: every row's code and corrections, recomputed
/// with the file's rotation, equal the stored ones (a sign bit may differ only where the
/// rotated coordinate is within 1e-6 of zero; corrections within 1e-5).
fn check_bit1_codes(
    attr: &str,
    vectors: &VectorFile,
    compact: &VectorFile,
    rot: &Rotation,
) -> Result<()> {
    let (corr, codes) = compact.bit1_rows()?;
    let dim = vectors.dim;
    let words = bits::code_words(dim);
    let mut code = vec![0u64; words];
    let mut rotated = Vec::new();
    let fail = |row: usize, what: String| Err(disagrees(attr, vectors, compact, row, &what));
    for (row, x) in vectors.f32_rows_bulk()?.chunks_exact(dim).enumerate() {
        let want = bits::encode_row(rot, x, &mut code, &mut rotated);
        let stored = &codes[row * words..(row + 1) * words];
        for (w, (&a, &b)) in code.iter().zip(stored).enumerate() {
            let diff = a ^ b;
            for bit in 0..64 {
                if diff >> bit & 1 == 1 && rotated[w * 64 + bit].abs() > 1e-6 {
                    return fail(
                        row,
                        format!("has code bit {} = {}", w * 64 + bit, b >> bit & 1),
                    );
                }
            }
        }
        let got = corr[row];
        if (got.dot - want.dot).abs() > 1e-5 || (got.residual - want.residual).abs() > 1e-5 {
            return fail(
                row,
                format!(
                    "has corrections dot {} residual {} (recomputed: {} {})",
                    got.dot, got.residual, want.dot, want.residual
                ),
            );
        }
    }
    Ok(())
}

/// A bit4 copy agrees with its f32 rows: every row's terms, recomputed with the file's
/// rotation, equal the stored ones within 1e-5 (relative to the larger of 1 and the
/// term for `cnorm`), and every code equals the recomputed one, except by one step where
/// the rotated coordinate lies within 1e-3 steps of a rounding boundary.
fn check_bit4_codes(
    attr: &str,
    vectors: &VectorFile,
    compact: &VectorFile,
    rot: &Rotation,
) -> Result<()> {
    let (terms, codes) = compact.bit4_rows()?;
    let dim = vectors.dim;
    let bytes = bits4::code_bytes(dim);
    let mut code = vec![0u8; bytes];
    let mut rotated = Vec::new();
    let fail = |row: usize, what: String| Err(disagrees(attr, vectors, compact, row, &what));
    let near = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0);
    for (row, x) in vectors.f32_rows_bulk()?.chunks_exact(dim).enumerate() {
        let want = bits4::encode_row(rot, x, &mut code, &mut rotated);
        let got = terms[row];
        if !(near(got.lo, want.lo)
            && near(got.step, want.step)
            && near(got.err, want.err)
            && near(got.cnorm, want.cnorm))
        {
            return fail(
                row,
                format!(
                    "has bit4 terms lo {} step {} err {} cnorm {} (recomputed: {} {} {} {})",
                    got.lo, got.step, got.err, got.cnorm, want.lo, want.step, want.err, want.cnorm
                ),
            );
        }
        let stored = &codes[row * bytes..(row + 1) * bytes];
        for i in 0..bits4::coded_dim(dim) {
            let (a, b) = (bits4::nibble(&code, i), bits4::nibble(stored, i));
            if a == b {
                continue;
            }
            let at = rotated.get(i).map_or(0.0, |&y| (y - want.lo) / want.step);
            let boundary = (at - at.floor() - 0.5).abs() < 1e-3;
            if !(boundary && a.abs_diff(b) == 1) {
                return fail(row, format!("has code {b} at rotated coordinate {i}"));
            }
        }
    }
    Ok(())
}

/// An int8 copy agrees with its f32 rows: every row's scale equals the recomputed one
/// (`max |x| / 127`) within `1e-6` relative, and every code equals `round(x / scale)`,
/// except by one where `x / scale` lies within `1e-3` of a rounding boundary. The
/// re-scoring tier's bound, and so the exactness of the results, rests on this.
fn check_int8_codes(attr: &str, vectors: &VectorFile, copy: &VectorFile) -> Result<()> {
    let (scales, codes) = copy.int8_rows()?;
    let dim = vectors.dim;
    let fail = |row: usize, what: String| Err(disagrees(attr, vectors, copy, row, &what));
    for (row, x) in vectors.f32_rows_bulk()?.chunks_exact(dim).enumerate() {
        let want = int8_scale(x);
        let got = scales[row];
        if (got - want).abs() > 1e-6 * want.abs() {
            return fail(row, format!("has int8 scale {got} (recomputed: {want})"));
        }
        let stored = &codes[row * dim..(row + 1) * dim];
        for (i, (&v, &c)) in x.iter().zip(stored).enumerate() {
            let q = quantize(v, want);
            if q == c {
                continue;
            }
            let at = v / want;
            let boundary = (at - at.floor() - 0.5).abs() < 1e-3;
            if !(boundary && q.abs_diff(c) == 1) {
                return fail(row, format!("has code {c} at dimension {i}"));
            }
        }
    }
    Ok(())
}

struct F32Scorer<'a> {
    rows: &'a [f32],
    dim: usize,
    q: &'a [f32],
}
impl Scorer for F32Scorer<'_> {
    #[inline]
    fn score(&self, n: u32) -> f32 {
        let at = n as usize * self.dim;
        self.rows
            .get(at..at + self.dim)
            .map_or(f32::NEG_INFINITY, |r| dot_f32(self.q, r))
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        let at = n as usize * self.dim;
        if let Some(r) = self.rows.get(at..at + self.dim) {
            prefetch(bytemuck::cast_slice(r), PREFETCH_F32_LINES);
        }
    }
}

struct F16Scorer<'a> {
    rows: &'a [u16],
    dim: usize,
    q: &'a [f32],
}
impl Scorer for F16Scorer<'_> {
    #[inline]
    fn score(&self, n: u32) -> f32 {
        let at = n as usize * self.dim;
        self.rows
            .get(at..at + self.dim)
            .map_or(f32::NEG_INFINITY, |r| dot_f16(self.q, r))
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        let at = n as usize * self.dim;
        if let Some(r) = self.rows.get(at..at + self.dim) {
            prefetch(bytemuck::cast_slice(r), PREFETCH_COMPACT_LINES);
        }
    }
}

/// What bounds the compact scores of a walk (see `upper` in [`Index::search_rows`]).
enum Bound<'a> {
    F16,
    Int8(&'a [f32], Int8Margin),
    Bit1(&'a [Correction], QueryBits),
    Bit4(&'a [Terms], QueryNibbles),
}

/// How far an int8 score (see [`Int8Scorer`]) may sit from the exact one, per unit of
/// the row's scale: each code is off by at most scale/2, so `|sum q_i e_i| <= scale/2 *
/// |q|_1`, and the query's rounding to i16 steps adds at most
/// [`QueryI16::rounding_bound`]. The bound holds both ways.
#[derive(Clone, Copy)]
struct Int8Margin {
    per_scale: f32,
}

impl Int8Margin {
    fn new(q: &[f32], q16: &QueryI16) -> Int8Margin {
        let l1 = q.iter().map(|x| x.abs()).sum::<f32>();
        Int8Margin {
            per_scale: 0.5 * l1 + q16.rounding_bound(),
        }
    }

    /// The margin of a row with this scale, rounded up a little: it is computed in f32.
    #[inline]
    fn of(self, scale: f32) -> f32 {
        scale * self.per_scale * (1.0 + 1e-5)
    }
}

/// Candidates of the tier this many ahead have their int8 rows prefetched.
const PREFETCH_TIER_AHEAD: usize = 4;

/// A few-bit walk's candidates through the int8 re-scoring tier: every candidate gets
/// its int8 score, whose bound holds both ways; any candidate whose upper bound is below
/// the `k`-th best lower bound cannot be among the `k` best and is dropped. The rest
/// come back as (upper bound, row), best int8 score first (ties by row): the order the
/// f32 rows are then read in, so that the `k`-th exact score rises fast. The upper bound
/// is the tighter of the walk's and the tier's.
fn tier_candidates(
    tier: &VectorFile,
    q: &[f32],
    walk: &[(f32, u32)],
    walk_upper: &dyn Fn(f32, u32) -> f32,
    k: usize,
    ahead: usize,
) -> Result<Vec<(f32, u32)>> {
    let (scales, codes) = tier.int8_rows()?;
    let q16 = QueryI16::new(q);
    let margin = Int8Margin::new(q, &q16);
    let s = Int8Scorer {
        scales,
        codes,
        dim: tier.dim,
        q: &q16,
    };
    // (int8 score, lower, upper, row)
    let mut scored: Vec<(f32, f32, f32, u32)> = Vec::with_capacity(walk.len());
    for (i, &(walk_score, n)) in walk.iter().enumerate() {
        if let Some(&(_, m)) = walk.get(i + ahead) {
            s.prefetch(m);
        }
        scored.push(match scales.get(n as usize) {
            Some(&sc) => {
                let approx = s.score(n);
                // 1e-6: the f32 rounding of the score itself (|approx| <= ~1).
                let m = margin.of(sc) + 1e-6;
                let up = (approx + m).min(walk_upper(walk_score, n));
                (approx, approx - m, up, n)
            }
            None => (f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY, n),
        });
    }
    let floor = if k > 0 && scored.len() >= k {
        let mut lows: Vec<f32> = scored.iter().map(|c| c.1).collect();
        *lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
    } else {
        f32::NEG_INFINITY
    };
    scored.retain(|c| c.2 >= floor);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.3.cmp(&b.3)));
    Ok(scored.into_iter().map(|c| (c.2, c.3)).collect())
}

/// Exact scores from the f32 rows for `candidates` (upper bound, row), in their order,
/// skipping every candidate whose upper bound cannot reach the `k`-th best exact score
/// so far: each re-scored row reads an f32 row (4 KiB at 1024-d). The bound differs per
/// row, so a candidate after a skipped one may still reach it: the scan goes on (it
/// costs a compare). Returns every (exact score, row) it computed.
fn rescore_exact(
    rows: &[f32],
    dim: usize,
    q: &[f32],
    candidates: &[(f32, u32)],
    k: usize,
) -> Vec<(f32, usize)> {
    let mut kth: BinaryHeap<Reverse<Sim>> = BinaryHeap::with_capacity(k + 1);
    let mut out = Vec::with_capacity(k * 2);
    let out_of_reach = |kth: &BinaryHeap<Reverse<Sim>>, upper: f32| {
        kth.len() >= k && kth.peek().is_some_and(|Reverse(Sim(t))| upper < *t)
    };
    let row_of = |n: u32| rows.get(n as usize * dim..(n as usize + 1) * dim);
    for (i, &(upper, n)) in candidates.iter().enumerate() {
        // The next candidates' rows are random reads of the f32 file: ask for the one
        // two ahead while this one is scored, unless its bound already rules it out
        // (the k-th score only rises).
        if let Some(&(u2, m)) = candidates.get(i + 2) {
            if let Some(r) = row_of(m).filter(|_| !out_of_reach(&kth, u2)) {
                prefetch(bytemuck::cast_slice(r), PREFETCH_F32_LINES);
            }
        }
        if out_of_reach(&kth, upper) {
            continue;
        }
        let Some(row) = row_of(n) else { continue };
        let exact = dot_f32(q, row);
        out.push((exact, n as usize));
        kth.push(Reverse(Sim(exact)));
        if kth.len() > k {
            kth.pop();
        }
    }
    out
}

struct Bit4Scorer<'a> {
    terms: &'a [Terms],
    codes: &'a [u8],
    bytes: usize,
    q: &'a QueryNibbles,
}
impl Scorer for Bit4Scorer<'_> {
    #[inline]
    fn score(&self, n: u32) -> f32 {
        let at = n as usize * self.bytes;
        match (
            self.codes.get(at..at + self.bytes),
            self.terms.get(n as usize),
        ) {
            (Some(code), Some(&t)) => self.q.estimate(code, t),
            _ => f32::NEG_INFINITY,
        }
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        let at = n as usize * self.bytes;
        if let Some(r) = self.codes.get(at..at + self.bytes) {
            prefetch(r, PREFETCH_COMPACT_LINES);
        }
        // The row's terms live in their own table (16 bytes a row): a second miss.
        if let Some(t) = self.terms.get(n as usize) {
            prefetch(bytemuck::bytes_of(t), 1);
        }
    }
}

struct Bit1Scorer<'a> {
    corr: &'a [Correction],
    codes: &'a [u64],
    words: usize,
    q: &'a QueryBits,
}
impl Scorer for Bit1Scorer<'_> {
    #[inline]
    fn score(&self, n: u32) -> f32 {
        let at = n as usize * self.words;
        match (
            self.codes.get(at..at + self.words),
            self.corr.get(n as usize),
        ) {
            (Some(code), Some(&c)) => self.q.estimate(code, c),
            _ => f32::NEG_INFINITY,
        }
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        let at = n as usize * self.words;
        if let Some(r) = self.codes.get(at..at + self.words) {
            prefetch(bytemuck::cast_slice(r), PREFETCH_COMPACT_LINES);
        }
        if let Some(c) = self.corr.get(n as usize) {
            prefetch(bytemuck::bytes_of(c), 1);
        }
    }
}

struct Int8Scorer<'a> {
    scales: &'a [f32],
    codes: &'a [i8],
    dim: usize,
    q: &'a QueryI16,
}
impl Scorer for Int8Scorer<'_> {
    #[inline]
    fn score(&self, n: u32) -> f32 {
        let at = n as usize * self.dim;
        match (
            self.codes.get(at..at + self.dim),
            self.scales.get(n as usize),
        ) {
            (Some(r), Some(&s)) => dot_i16_i8(&self.q.codes, r) as f32 * (self.q.step * s),
            _ => f32::NEG_INFINITY,
        }
    }
    #[inline]
    fn prefetch(&self, n: u32) {
        let at = n as usize * self.dim;
        if let Some(r) = self.codes.get(at..at + self.dim) {
            prefetch(bytemuck::cast_slice(r), PREFETCH_COMPACT_LINES);
        }
        if let Some(s) = self.scales.get(n as usize) {
            prefetch(bytemuck::bytes_of(s), 1);
        }
    }
}
