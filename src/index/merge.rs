//! Merging index segments (one per `embed --shard K/N`) into one index, and `compact`,
//! which merges an index into itself without its removed items.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::build::{
    build_locked, AttributeInput, BuildInput, BuildParams, BuildSummary, ItemLabels, RowOrder, Rows,
};
use super::disk::manifest::{Manifest, MANIFEST_FILE};
use super::reader::Index;
use super::writer::{check_inputs, lock_writer, WorkDir, WriterLock};
use crate::catalog::Labels;
use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::model::ModelRecord;
use crate::progress::ProgressMode;

/// Builds one index at `out` from the live items of `segments`, which must share
/// attributes, dimensions, label schema and model identity. Vectors are staged in files
/// beside `out` and memory-mapped, so memory does not grow with the item count.
pub fn merge(
    out: &Path,
    segments: &[PathBuf],
    params: &BuildParams,
    progress: ProgressMode,
) -> Result<BuildSummary> {
    std::fs::create_dir_all(out).at(out)?;
    let lock = lock_writer(out)?;
    merge_locked(&lock, segments, params, progress)
}

/// Rebuilds the index without its removed items (fresh graphs, same parameters, rows
/// copied bit for bit). The live rows are staged in files beside the index and mapped,
/// as in [`merge`]. An index without removed items is left as it is (nothing to do), so
/// compacting twice gives the same bytes as compacting once; the summary then reports
/// the current generation and 0 seconds of graph building.
pub fn compact(dir: &Path, progress: ProgressMode) -> Result<BuildSummary> {
    let start = std::time::Instant::now();
    let lock = lock_writer(dir)?;
    let m = Manifest::read(dir)?;
    if m.removed == 0 {
        check_inputs(dir, &m, None)?;
        return Ok(BuildSummary {
            dir: dir.to_path_buf(),
            generation: m.generation,
            items: m.items,
            added: 0,
            attributes: Vec::new(),
            bytes: m.files.iter().map(|f| f.len).sum(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let params = BuildParams {
        m: m.params.m,
        ef_construction: m.params.ef_construction,
        compact: m.params.compact,
        rescore: m.params.rescore,
        seed: m.generation,
    };
    merge_locked(&lock, &[dir.to_path_buf()], &params, progress)
}

/// [`merge`] for a caller that holds the output's writer lock (`compact` merges an index
/// into itself: its live rows are staged on disk, not held in memory).
fn merge_locked(
    lock: &WriterLock,
    segments: &[PathBuf],
    params: &BuildParams,
    progress: ProgressMode,
) -> Result<BuildSummary> {
    let out = lock.dir();
    // Every segment's files are checked against their manifest first: a merge must not
    // turn damaged input into a freshly checksummed index.
    for dir in segments {
        check_inputs(dir, &Manifest::read(dir)?, None)?;
    }
    let opened = segments
        .iter()
        .map(|p| Index::open(p))
        .collect::<Result<Vec<_>>>()?;
    let first = opened
        .first()
        .ok_or_else(|| Error::Usage("index merge needs at least one segment".into()))?;
    let attrs = first.attributes().to_vec();
    let record = |ix: &Index| ModelRecord::from_json(ix.model(), &ix.dir().join(MANIFEST_FILE));
    let first_record = record(first)?;
    for (ix, path) in opened.iter().zip(segments).skip(1) {
        if ix.attributes() != attrs.as_slice() {
            return Err(Error::invalid(
                path,
                format!(
                    "segment attributes {:?} differ from {:?} in {}",
                    ix.attributes(),
                    attrs,
                    segments[0].display()
                ),
            ));
        }
        for a in &attrs {
            if ix.dim(a)? != first.dim(a)? {
                return Err(Error::DimensionMismatch {
                    attribute: a.clone(),
                    expected: first.dim(a)?,
                    got: ix.dim(a)?,
                });
            }
        }
        let this_record = record(ix)?;
        let identity = |r: &Option<ModelRecord>| r.as_ref().and_then(|r| r.identity.clone());
        if identity(&this_record) != identity(&first_record) {
            return Err(Error::invalid(
                path,
                format!(
                    "segment was embedded by model {}, {} by {}",
                    ModelRecord::identity_text(this_record.as_ref()),
                    segments[0].display(),
                    ModelRecord::identity_text(first_record.as_ref())
                ),
            ));
        }
        if ix.schema() != first.schema() {
            return Err(Error::invalid(
                path,
                "segment label schema differs from the first segment's",
            ));
        }
    }

    // Live rows in segment order; an id in two segments is an error.
    let mut rows: Vec<(usize, usize)> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (s, ix) in opened.iter().enumerate() {
        for r in 0..ix.len() {
            if ix.is_removed(r) {
                continue;
            }
            if let Some(prev) = seen.insert(ix.id(r), s) {
                return Err(Error::invalid(
                    &segments[s],
                    format!(
                        "item {:?} is also in segment {}",
                        ix.id(r),
                        segments[prev].display()
                    ),
                ));
            }
            rows.push((s, r));
        }
    }

    let staging = crate::sibling_path(out, "merge-work");
    std::fs::create_dir_all(&staging).at(&staging)?;
    // Removed on every path out of here, errors included.
    let _work = WorkDir(staging.clone());
    let mut maps = Vec::with_capacity(attrs.len());
    for (a, name) in attrs.iter().enumerate() {
        let path = staging.join(format!("{a}.f32"));
        let file = std::fs::File::create(&path).at(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let dim = first.dim(name)?;
        let all = opened
            .iter()
            .map(|ix| ix.vectors(name))
            .collect::<Result<Vec<_>>>()?;
        for &(s, r) in &rows {
            w.write_all(bytemuck::cast_slice(&all[s][r * dim..(r + 1) * dim]))
                .at(&path)?;
        }
        w.flush().at(&path)?;
        drop(w);
        crate::failpoint!("index::merge_staged")?;
        maps.push(fsio::map_path(&path)?);
    }
    let attributes = attrs
        .iter()
        .zip(&maps)
        .map(|(name, map)| -> Result<AttributeInput<'_>> {
            Ok(AttributeInput {
                name: name.clone(),
                dim: first.dim(name)?,
                rows: bytemuck::try_cast_slice(&map[..])
                    .map_err(|e| Error::corrupted(&staging, format!("staged rows: {e}")))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let labels = first.schema().map(|schema| {
        let mut labels = Labels::new(rows.len(), schema.len());
        for (i, &(s, r)) in rows.iter().enumerate() {
            for a in 0..schema.len() {
                labels.set(i, a, opened[s].label(r, a));
            }
        }
        ItemLabels {
            schema: schema.clone(),
            labels,
        }
    });
    let input = BuildInput {
        ids: rows
            .iter()
            .map(|&(s, r)| opened[s].id(r).to_string())
            .collect(),
        attributes,
        labels,
        model: first.model().cloned(),
    };
    let summary = build_locked(
        lock,
        &input,
        params,
        RowOrder::Input,
        progress,
        Rows::Verbatim,
    );
    drop(input);
    drop(maps);
    summary
}
