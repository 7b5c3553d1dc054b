//! Merging index segments (one per `embed --shard K/N`) into one index.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::build::{build_locked, lock_writer};
use super::{AttributeInput, BuildInput, BuildParams, BuildSummary, Index, ItemLabels};
use crate::catalog::Labels;
use crate::error::{Error, IoContext, Result};
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
    let _lock = lock_writer(out)?;
    merge_locked(out, segments, params, progress)
}

/// [`merge`] for a caller that holds `out`'s writer lock (`compact` merges an index into
/// itself: its live rows are staged on disk, not held in memory).
pub(super) fn merge_locked(
    out: &Path,
    segments: &[PathBuf],
    params: &BuildParams,
    progress: ProgressMode,
) -> Result<BuildSummary> {
    let opened = segments
        .iter()
        .map(|p| Index::open(p))
        .collect::<Result<Vec<_>>>()?;
    let first = opened
        .first()
        .ok_or_else(|| Error::Usage("index merge needs at least one segment".into()))?;
    let attrs = first.attributes().to_vec();
    let identity = |ix: &Index| ix.model().and_then(|m| m.get("identity")).cloned();
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
        if identity(ix) != identity(first) {
            return Err(Error::invalid(
                path,
                format!(
                    "segment was embedded by model {}, {} by {}",
                    model_name(identity(ix).as_ref()),
                    segments[0].display(),
                    model_name(identity(first).as_ref())
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
    let mut maps = Vec::with_capacity(attrs.len());
    for (a, name) in attrs.iter().enumerate() {
        let path = staging.join(format!("{a}.f32"));
        let file = std::fs::File::create(&path).at(&path)?;
        let mut w = BufWriter::new(file);
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
        let file = std::fs::File::open(&path).at(&path)?;
        // SAFETY: the staging file was written above and is not modified while mapped.
        maps.push(unsafe { memmap2::Mmap::map(&file) }.at(&path)?);
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
    let summary = build_locked(out, &input, params, progress);
    drop(input);
    drop(maps);
    std::fs::remove_dir_all(&staging).at(&staging)?;
    summary
}

/// A recorded model identity in words (not Rust's `Some(String(..))`).
fn model_name(identity: Option<&serde_json::Value>) -> String {
    match identity {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "(none recorded: built from vectors)".to_string(),
    }
}
