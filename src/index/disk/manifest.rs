//! `manifest.json`: the index's commit point. It names every file of the current
//! generation with its length and crc32; writing it (temp file, fsync, rename, fsync of
//! the directory) publishes a build or an update atomically.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::format::{check_version, Dtype, FileEntry, INDEX_FORMAT_VERSION};
use crate::catalog::Schema;
use crate::error::{Error, IoContext, Result};
use crate::fsio;

pub const MANIFEST_FILE: &str = "manifest.json";
/// Manifests larger than this are refused (a corrupted length must not exhaust memory).
const MANIFEST_MAX_BYTES: u64 = 256 << 20;
pub const FORMAT_NAME: &str = "tailor-index";
/// Range of `params.m` (neighbours per node on the upper levels) writers accept.
pub const M_RANGE: std::ops::RangeInclusive<usize> = 2..=128;
/// Range of `params.ef_construction` writers accept.
pub const EF_CONSTRUCTION_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000;

/// Compact copy of the vectors used for the graph walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompactKind {
    /// Walk the graph on the f32 rows.
    #[default]
    None,
    /// Half-precision copy (2 bytes per value).
    F16,
    /// int8 codes with one f32 scale per row (1 byte per value).
    Int8,
    /// 1-bit codes of the rotated rows with two correction terms per row (RaBitQ-style;
    /// `P / 8 + 8` bytes per row, P the dimension rounded up to a power of two).
    Bit1,
    /// 4-bit codes of the rotated rows with four f32 terms per row.
    Bit4,
}

impl CompactKind {
    /// Element type of the compact file (`F32` for none: the walk uses the f32 rows).
    pub fn dtype(self) -> Dtype {
        match self {
            CompactKind::None => Dtype::F32,
            CompactKind::F16 => Dtype::F16,
            CompactKind::Int8 => Dtype::Int8,
            CompactKind::Bit1 => Dtype::Bit1,
            CompactKind::Bit4 => Dtype::Bit4,
        }
    }
}

impl std::str::FromStr for CompactKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(CompactKind::None),
            "f16" => Ok(CompactKind::F16),
            "int8" => Ok(CompactKind::Int8),
            "bit1" => Ok(CompactKind::Bit1),
            "bit4" => Ok(CompactKind::Bit4),
            _ => Err(format!(
                "unknown compact kind {s:?} (none, f16, int8, bit1, bit4)"
            )),
        }
    }
}

impl CompactKind {
    /// Whether a walk of this kind may have `tier` as its re-scoring tier (see
    /// [`ManifestParams::rescore`]): none always; int8 under the few-bit walks, whose
    /// bound leaves nearly every candidate to re-score.
    pub fn allows_rescore_tier(self, tier: CompactKind) -> bool {
        tier == CompactKind::None
            || (tier == CompactKind::Int8 && matches!(self, CompactKind::Bit1 | CompactKind::Bit4))
    }

    pub fn is_none(&self) -> bool {
        *self == CompactKind::None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestParams {
    pub m: usize,
    pub ef_construction: usize,
    pub compact: CompactKind,
    /// Copy read between a few-bit walk and the f32 rows: its strict bound rules out
    /// most candidates at a quarter of the f32 rows' bytes (`int8` or none). Absent in
    /// manifests written before it existed and in those without a tier.
    #[serde(default, skip_serializing_if = "CompactKind::is_none")]
    pub rescore: CompactKind,
}

/// Files of one embedding attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeEntry {
    pub name: String,
    pub dim: usize,
    pub vectors: String,
    pub compact: Option<String>,
    /// The re-scoring tier's file (present iff `params.rescore` is not none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescore: Option<String>,
    pub graph: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub generation: u64,
    /// Rows, including removed ones.
    pub items: usize,
    /// Rows marked removed (tombstoned).
    pub removed: usize,
    pub metric: String,
    pub params: ManifestParams,
    pub model: Option<serde_json::Value>,
    pub schema: Option<Schema>,
    pub ids: String,
    pub labels: Option<String>,
    pub tombstones: Option<String>,
    pub attributes: Vec<AttributeEntry>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let len = std::fs::metadata(&path).at(&path)?.len();
        if len > MANIFEST_MAX_BYTES {
            return Err(Error::corrupted(
                &path,
                format!("{len} bytes is too large for a manifest"),
            ));
        }
        let bytes = std::fs::read(&path).at(&path)?;
        // Check the version before the full shape, so a future format gets a version error.
        let probe: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupted(&path, format!("not valid JSON: {e}")))?;
        if probe.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::corrupted(
                &path,
                format!("not a tailor index manifest (\"format\" is not {FORMAT_NAME:?})"),
            ));
        }
        let version = probe
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::corrupted(&path, "no format_version"))?;
        check_version(u32::try_from(version).unwrap_or(u32::MAX), &path)?;
        let m: Manifest = serde_json::from_value(probe)
            .map_err(|e| Error::corrupted(&path, format!("invalid manifest: {e}")))?;
        m.check(&path)?;
        Ok(m)
    }

    /// Cross-checks that every named file is listed once and names are plain file names,
    /// that the metric is one this reader scores with, and that attributes carry a
    /// compact copy exactly when the parameters say so.
    fn check(&self, path: &Path) -> Result<()> {
        if self.attributes.is_empty() {
            return Err(Error::corrupted(
                path,
                "no attributes (an index has at least one)",
            ));
        }
        let mut names = HashSet::new();
        for a in &self.attributes {
            if a.name.is_empty() || !names.insert(a.name.as_str()) {
                return Err(Error::corrupted(
                    path,
                    format!("attribute name {:?} is empty or repeated", a.name),
                ));
            }
            if a.dim == 0 || a.dim > u32::MAX as usize {
                return Err(Error::corrupted(
                    path,
                    format!("attribute {:?} has dimension {}", a.name, a.dim),
                ));
            }
        }
        if !M_RANGE.contains(&self.params.m) {
            return Err(Error::corrupted(
                path,
                format!(
                    "params.m is {}, outside {}..={}",
                    self.params.m,
                    M_RANGE.start(),
                    M_RANGE.end()
                ),
            ));
        }
        if !EF_CONSTRUCTION_RANGE.contains(&self.params.ef_construction) {
            return Err(Error::corrupted(
                path,
                format!(
                    "params.ef_construction is {}, outside {}..={}",
                    self.params.ef_construction,
                    EF_CONSTRUCTION_RANGE.start(),
                    EF_CONSTRUCTION_RANGE.end()
                ),
            ));
        }
        if self.metric != "cosine" {
            return Err(Error::corrupted(
                path,
                format!(
                    "metric {:?} is not supported (tailor scores by \"cosine\")",
                    self.metric
                ),
            ));
        }
        if let Some(a) = self
            .attributes
            .iter()
            .find(|a| a.compact.is_some() != (self.params.compact != CompactKind::None))
        {
            return Err(Error::corrupted(
                path,
                format!(
                    "attribute {:?} {} a compact copy, but params.compact is {:?}",
                    a.name,
                    if a.compact.is_some() { "has" } else { "lacks" },
                    self.params.compact
                ),
            ));
        }
        let tier = self.params.rescore;
        if !self.params.compact.allows_rescore_tier(tier) {
            return Err(Error::corrupted(
                path,
                format!(
                    "params.rescore is {tier:?} with params.compact {:?} (a re-scoring tier is \
                     int8, under a bit1 or bit4 walk)",
                    self.params.compact
                ),
            ));
        }
        if let Some(a) = self
            .attributes
            .iter()
            .find(|a| a.rescore.is_some() == tier.is_none())
        {
            return Err(Error::corrupted(
                path,
                format!(
                    "attribute {:?} {} a re-scoring tier, but params.rescore is {tier:?}",
                    a.name,
                    if a.rescore.is_some() { "has" } else { "lacks" },
                ),
            ));
        }
        let mut named: Vec<&str> = vec![self.ids.as_str()];
        named.extend(self.labels.as_deref());
        named.extend(self.tombstones.as_deref());
        for a in &self.attributes {
            named.push(&a.vectors);
            named.push(&a.graph);
            named.extend(a.compact.as_deref());
            named.extend(a.rescore.as_deref());
        }
        for n in &named {
            if !is_plain_name(n) {
                return Err(Error::corrupted(
                    path,
                    format!("file name {n:?} is not a plain file name"),
                ));
            }
            if !self.files.iter().any(|f| f.name == *n) {
                return Err(Error::corrupted(
                    path,
                    format!("file {n:?} has no checksum entry"),
                ));
            }
        }
        if self.labels.is_some() != self.schema.is_some() {
            return Err(Error::corrupted(
                path,
                "labels and schema must be present together",
            ));
        }
        if self.removed > self.items {
            return Err(Error::corrupted(path, "more removed items than items"));
        }
        Ok(())
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Publishes this manifest: temp file, fsync, rename over `manifest.json`, fsync dir.
    pub fn commit(&self, dir: &Path) -> Result<()> {
        // An update of an older index writes its new files in the current version; each
        // binary file names its own version, so the manifest takes the current one.
        let current = Manifest {
            format_version: INDEX_FORMAT_VERSION,
            ..self.clone()
        };
        let path = dir.join(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(&current).expect("manifest serialises");
        json.push(b'\n');
        fsio::atomic_write(&path, &json)
    }
}

fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0'])
}
