//! Segment sets: an index that is a set of independently built segments (one per
//! `embed --shard K/N`), searched as one.
//!
//! ```text
//! SET/set.json                 {"format":"tailor-segment-set","version":1,"segments":N}
//! SET/segment-00000/           segment 0: an ordinary index directory (manifest.json ...)
//! SET/segment-00003/           segment 3 ...
//! SET/segment-00003.embed-work the staging directory of shard 3 while it runs
//! ```
//!
//! Segment K holds the items whose id hashes to K modulo N (FNV-1a, as `embed --shard
//! K/N` selects them), which makes ids unique across segments by construction and lets
//! a reader check it in one pass.
//!
//! A segment is present once its `manifest.json` is committed (the index build's own
//! atomic commit point), so shards land in any order and a reader sees a segment whole
//! or not at all. The set is searched over the segments present: each segment is
//! searched (in parallel) and the hits merged, best first, ties by set row. Set rows
//! number the present segments' rows in segment order (segment 0's rows first).
//!
//! Only the public API of [`Index`] is used here; the byte layout is in
//! `index-format.md` ("Segment sets").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Hit, Index, SearchOptions, VerifyReport, MANIFEST_FILE};
use crate::catalog::Schema;
use crate::error::{Error, IoContext, Result};
use crate::model::ModelRecord;
use crate::query::{self, LabelFilter, Query, Target, Weighted};

/// The set's own manifest file.
pub const SET_FILE: &str = "set.json";
/// Value of the `format` field of `set.json`.
pub const SET_FORMAT: &str = "tailor-segment-set";
/// Version of the set layout this build writes and reads.
pub const SET_VERSION: u32 = 1;

/// `set.json`: what the set is. Written once, by the first shard to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetManifest {
    pub format: String,
    pub version: u32,
    /// N: how many segments the complete set has (segment numbers 0..N).
    pub segments: usize,
}

/// Directory name of segment `k`.
pub fn segment_name(k: usize) -> String {
    format!("segment-{k:05}")
}

/// Whether `dir` holds a segment set (rather than a plain index).
pub fn is_set(dir: &Path) -> bool {
    dir.join(SET_FILE).is_file()
}

/// Reads and checks `SET/set.json`.
pub fn read_set_manifest(dir: &Path) -> Result<SetManifest> {
    let path = dir.join(SET_FILE);
    let bytes = std::fs::read(&path).at(&path)?;
    let m: SetManifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupted(&path, format!("not a segment-set manifest: {e}")))?;
    if m.format != SET_FORMAT {
        return Err(Error::corrupted(
            &path,
            format!("format {:?}, expected {SET_FORMAT:?}", m.format),
        ));
    }
    if m.version != SET_VERSION {
        return Err(Error::IncompatibleVersion {
            path,
            found: m.version,
            supported: SET_VERSION.to_string(),
            hint: "rebuild the set with this version of tailor".into(),
        });
    }
    if m.segments == 0 {
        return Err(Error::corrupted(&path, "a set of 0 segments"));
    }
    Ok(m)
}

/// Makes `set_dir` a set of `count` segments (creating it and `set.json` when absent;
/// several shards may race to do so) and returns segment `k`'s directory. Refuses a
/// directory that holds a plain index, or a set of another segment count.
pub fn prepare_segment(set_dir: &Path, k: usize, count: usize) -> Result<PathBuf> {
    if set_dir.join(MANIFEST_FILE).exists() {
        return Err(Error::invalid(
            set_dir,
            "holds a single index, not a segment set; choose a new directory for the set",
        ));
    }
    std::fs::create_dir_all(set_dir).at(set_dir)?;
    let path = set_dir.join(SET_FILE);
    if !path.exists() {
        let m = SetManifest {
            format: SET_FORMAT.into(),
            version: SET_VERSION,
            segments: count,
        };
        let mut bytes = serde_json::to_vec_pretty(&m).expect("json");
        bytes.push(b'\n');
        // Written under a private name, then linked into place: link fails when another
        // shard got there first, and readers never see a partial file.
        let tmp = set_dir.join(format!(".{SET_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).at(&tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .at(&tmp)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    let m = read_set_manifest(set_dir)?;
    if m.segments != count {
        return Err(Error::invalid(
            &path,
            format!(
                "the set has {} segments; shard {k}/{count} belongs to a set of {count}",
                m.segments
            ),
        ));
    }
    Ok(set_dir.join(segment_name(k)))
}

/// One present segment of an opened set.
pub struct Segment {
    /// Segment number K (of N).
    pub number: usize,
    pub dir: PathBuf,
    pub index: Index,
    /// Set row of this segment's row 0.
    pub offset: usize,
}

/// An opened set (or a plain index opened as a set of one segment).
pub struct IndexSet {
    dir: PathBuf,
    /// `None` for a plain index.
    manifest: Option<SetManifest>,
    segments: Vec<Segment>,
    missing: Vec<usize>,
    len: usize,
    /// Per attribute, the set's rows concatenated (built on first use by evaluation).
    concatenated: HashMap<String, OnceLock<Vec<f32>>>,
}

/// Error about one segment of a set: names the segment directory.
fn segment_error(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::invalid(dir, format!("segment: {reason}"))
}

impl IndexSet {
    /// Opens a segment set, or a plain index as a set of one segment.
    pub fn open_any(dir: &Path) -> Result<IndexSet> {
        if is_set(dir) {
            return IndexSet::open(dir);
        }
        let index = Index::open(dir)?;
        IndexSet::from_segments(dir, None, vec![(0, dir.to_path_buf(), index)], Vec::new())
    }

    /// Opens the segment set at `dir`: every present segment is opened and checked
    /// against the first (model identity, attributes, dimensions, label schema, metric)
    /// and no id may be in two segments. A segment directory without a committed
    /// manifest is still landing and counts as missing; one whose manifest is there but
    /// does not open is damaged, and an error names it.
    pub fn open(dir: &Path) -> Result<IndexSet> {
        let manifest = read_set_manifest(dir)?;
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for k in 0..manifest.segments {
            let seg_dir = dir.join(segment_name(k));
            if !seg_dir.join(MANIFEST_FILE).exists() {
                missing.push(k);
                continue;
            }
            let index = Index::open(&seg_dir)
                .map_err(|e| segment_error(&seg_dir, format!("cannot be opened: {e}")))?;
            present.push((k, seg_dir, index));
        }
        check_no_strays(dir, manifest.segments)?;
        if present.is_empty() {
            return Err(Error::invalid(
                dir,
                format!(
                    "no segment of the set has landed yet (0 of {})",
                    manifest.segments
                ),
            ));
        }
        IndexSet::from_segments(dir, Some(manifest), present, missing)
    }

    fn from_segments(
        dir: &Path,
        manifest: Option<SetManifest>,
        present: Vec<(usize, PathBuf, Index)>,
        missing: Vec<usize>,
    ) -> Result<IndexSet> {
        let first = &present[0];
        for (_, seg_dir, ix) in &present[1..] {
            check_compatible(&first.1, &first.2, seg_dir, ix)?;
        }
        if let Some(m) = &manifest {
            check_unique_ids(&present, m.segments)?;
        }
        let mut segments = Vec::with_capacity(present.len());
        let mut offset = 0;
        for (number, seg_dir, index) in present {
            let n = index.len();
            segments.push(Segment {
                number,
                dir: seg_dir,
                index,
                offset,
            });
            offset += n;
        }
        let concatenated = segments[0]
            .index
            .attributes()
            .iter()
            .map(|a| (a.clone(), OnceLock::new()))
            .collect();
        Ok(IndexSet {
            dir: dir.to_path_buf(),
            manifest,
            segments,
            missing,
            len: offset,
            concatenated,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Whether this is a segment set (false: a plain index).
    pub fn is_set(&self) -> bool {
        self.manifest.is_some()
    }
    /// N, the number of segments of the complete set (1 for a plain index).
    pub fn segment_count(&self) -> usize {
        self.manifest.as_ref().map_or(1, |m| m.segments)
    }
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// Numbers of the segments not (yet) present.
    pub fn missing(&self) -> &[usize] {
        &self.missing
    }
    /// The first present segment's index: model, schema and attributes of the whole set.
    pub fn first(&self) -> &Index {
        &self.segments[0].index
    }
    /// Rows in the set (removed ones included).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn live_len(&self) -> usize {
        self.segments.iter().map(|s| s.index.live_len()).sum()
    }
    pub fn attributes(&self) -> &[String] {
        self.first().attributes()
    }
    pub fn dim(&self, attr: &str) -> Result<usize> {
        self.first().dim(attr)
    }
    pub fn schema(&self) -> Option<&Schema> {
        self.first().schema()
    }
    pub fn model(&self) -> Option<&serde_json::Value> {
        self.first().model()
    }

    /// The segment holding set row `row` and the row inside it.
    pub fn locate(&self, row: usize) -> Option<(&Segment, usize)> {
        if row >= self.len {
            return None;
        }
        let i = self.segments.partition_point(|s| s.offset <= row) - 1;
        let s = &self.segments[i];
        Some((s, row - s.offset))
    }
    pub fn id(&self, row: usize) -> Option<&str> {
        self.locate(row).map(|(s, r)| s.index.id(r))
    }
    /// Set row of an id.
    pub fn row(&self, id: &str) -> Option<usize> {
        self.segments
            .iter()
            .find_map(|s| s.index.row(id).map(|r| r + s.offset))
    }
    pub fn is_removed(&self, row: usize) -> bool {
        self.locate(row).is_none_or(|(s, r)| s.index.is_removed(r))
    }
    pub fn vector(&self, attr: &str, row: usize) -> Result<&[f32]> {
        let (s, r) = self
            .locate(row)
            .ok_or_else(|| Error::Usage(format!("row {row} is past the set's {}", self.len)))?;
        s.index.vector(attr, r)
    }

    /// All rows of `attr`, row-major in set-row order. A single segment's are its
    /// mapped rows; a set's are concatenated into memory once (evaluation reads whole
    /// matrices; `index merge` compacts a set when that memory matters).
    pub fn vectors(&self, attr: &str) -> Result<&[f32]> {
        if self.segments.len() == 1 {
            return self.first().vectors(attr);
        }
        let cell = self
            .concatenated
            .get(attr)
            .ok_or_else(|| Error::UnknownAttribute {
                name: attr.to_string(),
                known: self.attributes().join(", "),
            })?;
        if let Some(v) = cell.get() {
            return Ok(v);
        }
        let dim = self.dim(attr)?;
        let mut all = Vec::with_capacity(self.len * dim);
        for s in &self.segments {
            all.extend_from_slice(s.index.vectors(attr)?);
        }
        Ok(cell.get_or_init(|| all))
    }

    /// Graph search of every segment (in parallel), merged: the best `opts.k` hits in
    /// set rows. `opts.accept` takes set rows.
    pub fn search_with(&self, attr: &str, query: &[f32], opts: &SearchOptions) -> Result<Vec<Hit>> {
        self.merge_segments(opts.k, |s| {
            let offset = s.offset;
            let accept = opts.accept.map(|f| move |r: usize| f(r + offset));
            let local: Option<&(dyn Fn(usize) -> bool + Sync)> = accept
                .as_ref()
                .map(|f| f as &(dyn Fn(usize) -> bool + Sync));
            let o = SearchOptions {
                accept: local,
                ..*opts
            };
            s.index.search_with(attr, query, &o)
        })
    }

    pub fn search(&self, attr: &str, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        self.search_with(attr, query, &SearchOptions::new(k, ef))
    }

    /// Exact top-k over every segment: identical to the exact top-k of one index of the
    /// same rows (scores are computed the same way, ties broken by row).
    pub fn search_exact(&self, attr: &str, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.merge_segments(k, |s| s.index.search_exact(attr, query, k))
    }

    /// Runs `per_segment` on every segment in parallel, moves hits to set rows, and keeps
    /// the best `k` (score descending, then set row).
    fn merge_segments<F>(&self, k: usize, per_segment: F) -> Result<Vec<Hit>>
    where
        F: Fn(&Segment) -> Result<Vec<Hit>> + Sync,
    {
        if self.segments.len() == 1 {
            return per_segment(&self.segments[0]);
        }
        let lists = self
            .segments
            .par_iter()
            .map(|s| {
                per_segment(s).map(|hits| {
                    hits.into_iter()
                        .map(|h| Hit {
                            row: h.row + s.offset,
                            ..h
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut all: Vec<Hit> = lists.into_iter().flatten().collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        all.truncate(k);
        Ok(all)
    }

    /// A query (one attribute or a weighted sum, label filters, item or vector target)
    /// over every segment, merged. On a plain index it is [`query::search`] itself.
    pub fn query(&self, q: &Query) -> Result<Vec<Hit>> {
        if self.segments.len() == 1 {
            return query::search(self.first(), q);
        }
        let (target, exclude) = self.resolve_target(&q.target, &q.attrs)?;
        let exclude = if q.include_self { None } else { exclude };
        let per = Query {
            target,
            k: q.k + usize::from(exclude.is_some()),
            include_self: true,
            ..q.clone()
        };
        let mut hits = self.merge_segments(per.k, |s| query::search(&s.index, &per))?;
        if let Some(row) = exclude {
            hits.retain(|h| h.row != row);
        }
        hits.truncate(q.k);
        Ok(hits)
    }

    /// [`query::rerank`] over the set: the listed items ordered by weighted similarity
    /// (ties keep the input order).
    pub fn rerank(
        &self,
        target: &Target,
        attrs: &[Weighted],
        ids: &[String],
        filter: Option<&LabelFilter>,
    ) -> Result<Vec<Hit>> {
        if self.segments.len() == 1 {
            return query::rerank(self.first(), target, attrs, ids, filter);
        }
        let (target, _) = self.resolve_target(target, attrs)?;
        // Each id is scored in its own segment; the input position keeps ties stable.
        let mut scored: Vec<(usize, Hit)> = Vec::with_capacity(ids.len());
        for (pos, id) in ids.iter().enumerate() {
            let seg = self
                .segments
                .iter()
                .find(|s| s.index.row(id).is_some())
                .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
            for h in query::rerank(&seg.index, &target, attrs, std::slice::from_ref(id), filter)? {
                scored.push((
                    pos,
                    Hit {
                        row: h.row + seg.offset,
                        ..h
                    },
                ));
            }
        }
        scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        Ok(scored.into_iter().map(|(_, h)| h).collect())
    }

    /// An item target becomes its vectors (found in its segment); returns the item's set
    /// row too, so the caller can drop it from its own results.
    fn resolve_target(
        &self,
        target: &Target,
        attrs: &[Weighted],
    ) -> Result<(Target, Option<usize>)> {
        match target {
            Target::Vectors(_) => Ok((target.clone(), None)),
            Target::Item(id) => {
                let row = self
                    .row(id)
                    .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
                if self.is_removed(row) {
                    return Err(Error::Usage(format!(
                        "item {id:?} was removed from the index"
                    )));
                }
                let vectors = attrs
                    .iter()
                    .map(|w| Ok(self.vector(&w.attr, row)?.to_vec()))
                    .collect::<Result<Vec<_>>>()?;
                Ok((Target::Vectors(vectors), Some(row)))
            }
        }
    }

    /// Every present segment's full verification (checksums, then structure), with the
    /// segment it is about.
    pub fn verify(&self) -> Result<SegmentReports> {
        self.segments
            .iter()
            .map(|s| {
                let mut report = super::verify_dir(&s.dir)?;
                if report.ok {
                    report = s.index.verify()?;
                }
                Ok((s.number, report))
            })
            .collect()
    }
}

/// Verification reports with their segment numbers.
pub type SegmentReports = Vec<(usize, VerifyReport)>;

/// Checks a set's segment directories without opening the set (so it also works on a set
/// with a damaged segment): each present segment's checksums and structure, with its
/// number; the numbers of missing segments.
pub fn verify_set_dir(dir: &Path) -> Result<(SegmentReports, Vec<usize>)> {
    let manifest = read_set_manifest(dir)?;
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for k in 0..manifest.segments {
        let seg = dir.join(segment_name(k));
        if !seg.join(MANIFEST_FILE).exists() {
            missing.push(k);
            continue;
        }
        let mut report = match super::verify_dir(&seg) {
            Ok(r) => r,
            Err(e) => VerifyReport {
                dir: seg.clone(),
                files: Vec::new(),
                problems: vec![e.to_string()],
                ok: false,
            },
        };
        if report.ok {
            match Index::open(&seg).and_then(|ix| ix.verify()) {
                Ok(r) => report = r,
                Err(e) => {
                    report.problems.push(e.to_string());
                    report.ok = false;
                }
            }
        }
        reports.push((k, report));
    }
    Ok((reports, missing))
}

/// A `segment-K` directory with K outside 0..N would be silently ignored: refuse it.
fn check_no_strays(dir: &Path, count: usize) -> Result<()> {
    for e in std::fs::read_dir(dir).at(dir)?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name.strip_prefix("segment-") else {
            continue;
        };
        if let Ok(k) = num.parse::<usize>() {
            if k >= count && e.path().join(MANIFEST_FILE).exists() {
                return Err(segment_error(
                    &e.path(),
                    format!(
                        "number {k} is outside the set's {count} segments (0..{count}); was it copied from another set?"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The model identity a segment records (see [`ModelRecord`]).
fn identity(ix: &Index) -> Result<Option<String>> {
    Ok(ModelRecord::from_json(ix.model(), &ix.dir().join(MANIFEST_FILE))?.and_then(|r| r.identity))
}

/// A segment must match the set's first segment in everything that makes their scores
/// comparable.
fn check_compatible(first_dir: &Path, first: &Index, dir: &Path, ix: &Index) -> Result<()> {
    let other = |what: String| {
        segment_error(
            dir,
            format!(
                "{what}, unlike {} (every segment of a set must come from the same model and attributes)",
                first_dir.display()
            ),
        )
    };
    let (this, set) = (identity(ix)?, identity(first)?);
    if this != set {
        let show = |v: Option<String>| v.unwrap_or_else(|| "none recorded".to_string());
        return Err(other(format!(
            "was embedded by model {}, the set by {}",
            show(this),
            show(set)
        )));
    }
    if ix.attributes() != first.attributes() {
        return Err(other(format!(
            "has attributes {:?}, the set {:?}",
            ix.attributes(),
            first.attributes()
        )));
    }
    for a in first.attributes() {
        let (d0, d) = (first.dim(a)?, ix.dim(a)?);
        if d0 != d {
            return Err(other(format!(
                "attribute {a:?} has dimension {d}, not {d0}"
            )));
        }
    }
    if ix.schema() != first.schema() {
        return Err(other("has another label schema".into()));
    }
    if ix.manifest().metric != first.manifest().metric {
        return Err(other(format!("uses metric {:?}", ix.manifest().metric)));
    }
    Ok(())
}

/// No id may be in two segments (results and evaluation would count it twice). Segment K
/// of N holds exactly the ids whose FNV-1a hash is K modulo N (as `embed --shard K/N`
/// assigns them), so checking that every id is in its own segment proves uniqueness in
/// one streaming pass, without a table of every id. A misplaced id is reported as a
/// duplicate when its own segment holds it too.
fn check_unique_ids(present: &[(usize, PathBuf, Index)], count: usize) -> Result<()> {
    present.par_iter().try_for_each(|(k, dir, ix)| {
        for r in 0..ix.len() {
            let id = ix.id(r);
            let home = (crate::fnv1a(&[id.as_bytes()]) % count as u64) as usize;
            if home == *k {
                continue;
            }
            let twin = present
                .iter()
                .find(|(j, _, other)| *j == home && other.row(id).is_some());
            return Err(match twin {
                Some((_, other_dir, _)) => segment_error(
                    dir,
                    format!("item {id:?} is also in segment {}", other_dir.display()),
                ),
                None => segment_error(
                    dir,
                    format!(
                        "item {id:?} belongs in segment {home} of {count} (the hash of its id), not in segment {k}; was the segment copied from another set?"
                    ),
                ),
            });
        }
        Ok(())
    })
}
