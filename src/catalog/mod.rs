//! Catalogs: items with images, an attribute schema, labels and named splits.
//!
//! Readers: the ASEN authors' split format ([`asen`]), the CSN/Zappos50k triplet lists
//! ([`zappos`]), CSV and JSON Lines manifests ([`manifest`]). [`open`] picks the reader
//! from the path. [`synth`] draws a synthetic garment catalog with known labels.

pub mod asen;
pub mod asen_write;
pub mod check;
pub mod manifest;
pub mod manifest_write;
pub mod synth;
pub mod table;
pub mod zappos;
pub mod zappos_write;

pub use table::ItemTable;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Index of a value within its attribute's value list.
pub type ValueId = u16;

/// One attribute and the names of its values (value id = position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    pub values: Vec<String>,
}

/// The attributes of a catalog, in a fixed order (attribute id = position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Schema {
    pub attributes: Vec<Attribute>,
}

impl Schema {
    pub fn attribute_index(&self, name: &str) -> Result<usize> {
        self.attributes
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| Error::UnknownAttribute {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }
    pub fn names(&self) -> Vec<String> {
        self.attributes.iter().map(|a| a.name.clone()).collect()
    }
    pub fn len(&self) -> usize {
        self.attributes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }
}

/// One catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable external id.
    pub id: String,
    /// Image path, absolute or relative to the catalog's image root.
    pub image: PathBuf,
}

/// Item x attribute -> value, possibly absent. Dense: catalogs label most items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    attributes: usize,
    values: Vec<ValueId>,
}

const NO_LABEL: ValueId = ValueId::MAX;

impl Labels {
    pub fn new(items: usize, attributes: usize) -> Self {
        Labels {
            attributes,
            values: vec![NO_LABEL; items * attributes],
        }
    }
    pub fn get(&self, item: usize, attribute: usize) -> Option<ValueId> {
        let v = self.values[item * self.attributes + attribute];
        (v != NO_LABEL).then_some(v)
    }
    pub fn set(&mut self, item: usize, attribute: usize, value: Option<ValueId>) {
        self.values[item * self.attributes + attribute] = value.unwrap_or(NO_LABEL);
    }
    /// Appends an unlabelled item row.
    pub fn push_item(&mut self) {
        self.values
            .extend(std::iter::repeat_n(NO_LABEL, self.attributes));
    }
    pub fn items(&self) -> usize {
        self.values.len().checked_div(self.attributes).unwrap_or(0)
    }
    /// Heap bytes held (capacity).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<ValueId>()
    }
    pub(crate) fn shrink_to_fit(&mut self) {
        self.values.shrink_to_fit();
    }
    /// Widens every row by one unlabelled attribute (a JSON Lines manifest names its
    /// attributes as its rows go). `items` is the row count (with no attribute yet, the
    /// rows hold no values to count them by).
    pub(crate) fn add_attribute(&mut self, items: usize) {
        let old = self.attributes;
        let mut values = Vec::with_capacity(items * (old + 1));
        for row in 0..items {
            values.extend_from_slice(&self.values[row * old..(row + 1) * old]);
            values.push(NO_LABEL);
        }
        self.values = values;
        self.attributes = old + 1;
    }
    /// Renumbers one attribute's values: code `c` becomes `map[c]`.
    pub(crate) fn remap(&mut self, attribute: usize, map: &[ValueId]) {
        let stride = self.attributes;
        for v in self
            .values
            .iter_mut()
            .skip(attribute)
            .step_by(stride.max(1))
        {
            if *v != NO_LABEL {
                *v = map[*v as usize];
            }
        }
    }
}

/// An item labelled for one attribute, as listed in query and candidate files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledRef {
    pub item: usize,
    pub attribute: usize,
    pub value: ValueId,
}

/// Named item sets and, per evaluation split, the query and candidate lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splits {
    /// "train", "valid", "test" -> item indices.
    pub items: BTreeMap<String, Vec<usize>>,
    /// "valid"/"test" -> queries (item, attribute, value).
    pub queries: BTreeMap<String, Vec<LabelledRef>>,
    /// "valid"/"test" -> candidates (item, attribute, value).
    pub candidates: BTreeMap<String, Vec<LabelledRef>>,
}

/// A triplet list for one condition (attribute): (a, b, c) means a is closer to c than to b.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripletList {
    pub attribute: usize,
    pub split: String,
    pub triplets: Vec<[usize; 3]>,
}

/// Which reader produced a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogFormat {
    Asen,
    Zappos,
    Csv,
    Jsonl,
}

/// A whole catalog in memory (ids, paths, labels; never images).
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The path the catalog was opened from.
    pub source: PathBuf,
    pub format: CatalogFormat,
    /// Directory that relative image paths are resolved against.
    pub image_root: PathBuf,
    pub schema: Schema,
    pub items: Vec<Item>,
    pub labels: Labels,
    pub splits: Splits,
    pub triplets: Vec<TripletList>,
}

impl Catalog {
    /// Absolute (or root-joined) path of an item's image.
    pub fn image_path(&self, item: usize) -> PathBuf {
        self.image_root.join(&self.items[item].image)
    }

    /// Index of an item by its external id.
    pub fn item_index(&self, id: &str) -> Result<usize> {
        self.items
            .iter()
            .position(|it| it.id == id)
            .ok_or_else(|| Error::UnknownItem { id: id.to_string() })
    }

    /// Queries and candidates of an evaluation split ("valid" or "test").
    pub fn eval_split(&self, split: &str) -> Result<(&[LabelledRef], &[LabelledRef])> {
        match (
            self.splits.queries.get(split),
            self.splits.candidates.get(split),
        ) {
            (Some(q), Some(c)) => Ok((q, c)),
            _ => Err(Error::invalid(
                &self.source,
                format!(
                    "the catalog has no query/candidate lists for split {split:?} (has: {})",
                    self.splits
                        .queries
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// Opens a catalog, choosing the reader from the path:
/// a `.csv` or `.jsonl` file is a manifest; a directory holding `manifest.csv` or
/// `manifest.jsonl` (as `tailor synth` writes) opens that manifest; a directory with
/// `filenames.json` and `tripletlists/` is a Zappos/CSN split; a directory with ASEN split
/// files (or a `meta.json` naming one dataset directory) is an ASEN split.
pub fn open(path: &Path) -> Result<Catalog> {
    match locate(path)? {
        Located::Csv(p) => manifest::read_csv(&p, None),
        Located::Jsonl(p) => manifest::read_jsonl(&p, None),
        Located::Zappos(p) => zappos::read(&p),
        Located::Asen(p) => asen::read(&p, None),
    }
}

/// Opens a catalog's items only, compactly (see [`ItemTable`]): what `embed` reads. A
/// manifest is read row by row into the table; the ASEN and Zappos readers (research
/// splits of bounded size) read their whole catalog first.
pub fn open_items(path: &Path) -> Result<ItemTable> {
    match locate(path)? {
        Located::Csv(p) => manifest::read_csv_items(&p, None),
        Located::Jsonl(p) => manifest::read_jsonl_items(&p, None),
        Located::Zappos(p) => ItemTable::from_catalog(&zappos::read(&p)?),
        Located::Asen(p) => ItemTable::from_catalog(&asen::read(&p, None)?),
    }
}

/// Which reader a catalog path needs, and the path to hand it.
enum Located {
    Csv(PathBuf),
    Jsonl(PathBuf),
    Zappos(PathBuf),
    Asen(PathBuf),
}

fn locate(path: &Path) -> Result<Located> {
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Located::Csv(path.to_path_buf())),
            Some("jsonl") | Some("ndjson") => Ok(Located::Jsonl(path.to_path_buf())),
            _ => Err(Error::invalid(
                path,
                "not a catalog: expected a .csv or .jsonl manifest, or a catalog directory",
            )),
        };
    }
    if !path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    // A manifest wins over split files in the same directory (as `tailor synth` writes
    // both): its ids are the shop's ids, and it derives the same query/candidate lists.
    for name in ["manifest.csv", "manifest.jsonl"] {
        let m = path.join(name);
        if m.is_file() {
            return locate(&m);
        }
    }
    if path.join("filenames.json").is_file() && path.join("tripletlists").is_dir() {
        return Ok(Located::Zappos(path.to_path_buf()));
    }
    if path.join("filenames_train.txt").is_file() || path.join("filenames_test.txt").is_file() {
        return Ok(Located::Asen(path.to_path_buf()));
    }
    if path.join("meta.json").is_file() {
        if let Some(dataset) = asen::single_dataset_dir(path)? {
            return Ok(Located::Asen(dataset));
        }
    }
    Err(Error::invalid(
        path,
        "not a catalog directory: found no ASEN split files (filenames_*.txt), no Zappos \
         layout (filenames.json + tripletlists/), no meta.json and no manifest.csv/.jsonl",
    ))
}

/// Reads a text file into lines (1-based numbers come from enumerate + 1).
pub(crate) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(text).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        Error::parse(path, line, "not valid UTF-8 text")
    })?;
    // A UTF-8 byte-order mark (spreadsheet exports write one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

/// Refuses an item id holding a control character (a newline, a tab, NUL...): such an id
/// cannot be written to one line of an id list or typed in a query, so it would only fail
/// later (`embed` lists ids one per line).
pub(crate) fn check_id(path: &Path, line: usize, id: &str) -> Result<()> {
    match id.chars().find(|c| c.is_control()) {
        Some(c) => Err(Error::parse(
            path,
            line,
            format!(
                "id {id:?} contains the control character U+{:04X}; ids must be printable text",
                c as u32
            ),
        )),
        None => Ok(()),
    }
}
