//! CSV and JSON Lines manifests for a shop's own catalog.
//!
//! CSV: a header `id,image[,split],<attr1>,<attr2>,...`, one item per row; an empty cell
//! means "not labelled". JSONL: one object per line with `id`, `image`, optional `split`,
//! and the labels either flat (`"neckline": "v"`) or under `"labels": {...}`; `null` or
//! `""` means not labelled.
//!
//! The schema comes from `schema.json` beside the manifest when present (attribute order
//! and value order as given), else it is inferred: attributes in column (first-seen)
//! order, values sorted (numerically when all are integers).
//!
//! Splits: the optional `split` column names `train`, `valid` or `test`. For `valid` and
//! `test`, each labelled (item, attribute) pair is a query when [`is_query`] says so and a
//! candidate otherwise.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Attribute, Catalog, CatalogFormat, ItemTable, LabelledRef, Schema, Splits, ValueId};
use crate::error::{Error, Result};

pub const SCHEMA_FILE: &str = "schema.json";
const SPLIT_NAMES: [&str; 3] = ["train", "valid", "test"];

/// Deterministic query/candidate assignment for manifests: about one labelled pair in
/// five becomes a query (FNV-1a of the item id and attribute name).
pub fn is_query(item_id: &str, attribute: &str) -> bool {
    crate::fnv1a(&[item_id.as_bytes(), attribute.as_bytes()]).is_multiple_of(5)
}

/// One parsed row, handed to the [`Builder`] before the next is read.
struct Row {
    line: usize,
    id: String,
    image: String,
    split: Option<String>,
    labels: Vec<(String, String)>,
}

fn load_schema(manifest: &Path, given: Option<&Path>) -> Result<Option<(PathBuf, Schema)>> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => manifest.with_file_name(SCHEMA_FILE),
    };
    if !path.is_file() {
        if given.is_some() {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "schema file not found"),
            ));
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let schema: Schema = serde_json::from_str(&text).map_err(|e| {
        Error::parse(
            &path,
            e.line(),
            format!("expected {{\"attributes\": [{{\"name\": .., \"values\": [..]}}]}}: {e}"),
        )
    })?;
    check_schema(&path, &text, &schema)?;
    Ok(Some((path, schema)))
}

/// Refuses a repeated attribute or a value listed twice for one attribute (the second
/// copy would get its own id and split the items that carry it).
fn check_schema(path: &Path, text: &str, schema: &Schema) -> Result<()> {
    let mut names = HashMap::new();
    for (a, attr) in schema.attributes.iter().enumerate() {
        if let Some(first) = names.insert(attr.name.as_str(), a) {
            return Err(Error::parse(
                path,
                nth_line_of(text, 0, &attr.name, 2),
                format!(
                    "attribute {:?} is listed twice (attributes {} and {})",
                    attr.name,
                    first + 1,
                    a + 1
                ),
            ));
        }
        let mut seen = HashMap::new();
        for (i, v) in attr.values.iter().enumerate() {
            if let Some(first) = seen.insert(v.as_str(), i) {
                return Err(Error::parse(
                    path,
                    nth_line_of(text, attr_start(text, &attr.name), v, 2),
                    format!(
                        "attribute {:?}: value {v:?} is listed twice (values {} and {})",
                        attr.name,
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where an attribute's name first appears in the schema text (its values follow it).
fn attr_start(text: &str, name: &str) -> usize {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    text.find(&quoted).unwrap_or(0)
}

/// The line of the n-th occurrence of a JSON string in `text` (best effort: the last
/// occurrence found, 0 when the string is written with escapes and cannot be found).
fn nth_line_of(text: &str, start: usize, value: &str, n: usize) -> usize {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let mut from = start;
    let mut at = None;
    for _ in 0..n {
        match text[from..].find(&quoted) {
            Some(i) => {
                at = Some(from + i);
                from += i + quoted.len();
            }
            None => break,
        }
    }
    at.map_or(0, |i| text[..i].matches('\n').count() + 1)
}

pub fn read_csv(path: &Path, schema_path: Option<&Path>) -> Result<Catalog> {
    let (table, splits) = csv_table(path, schema_path)?;
    Ok(into_catalog(table, splits))
}

/// The items of a CSV manifest, compactly (what `embed` needs: no evaluation lists).
pub fn read_csv_items(path: &Path, schema_path: Option<&Path>) -> Result<ItemTable> {
    Ok(csv_table(path, schema_path)?.0)
}

/// Reads a CSV manifest row by row into a table and each item's split.
fn csv_table(path: &Path, schema_path: Option<&Path>) -> Result<(ItemTable, Vec<u8>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (id_col, image_col) = match (col("id"), col("image")) {
        (Some(i), Some(m)) => (i, m),
        _ => {
            return Err(Error::parse(
                path,
                1,
                format!(
                    "header must name `id` and `image` columns, found: {}",
                    headers.join(", ")
                ),
            ))
        }
    };
    let split_col = col("split");
    let attr_cols: Vec<usize> = (0..headers.len())
        .filter(|&c| c != id_col && c != image_col && Some(c) != split_col)
        .collect();
    let mut builder = Builder::new(path, CatalogFormat::Csv, schema_path)?;
    // Inferred schemas list the attribute columns in column order, labelled or not.
    for &c in &attr_cols {
        builder.attribute(&headers[c]);
    }
    let mut record = csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let cell = |c: usize| record.get(c).unwrap_or("").trim().to_string();
        builder.push(Row {
            line,
            id: cell(id_col),
            image: cell(image_col),
            split: split_col.map(cell).filter(|s| !s.is_empty()),
            labels: attr_cols
                .iter()
                .map(|&c| (headers[c].clone(), cell(c)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        })?;
    }
    builder.finish()
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
    let reason = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("malformed row: {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Io(err) => {
            return Error::io(path, std::io::Error::new(err.kind(), err.to_string()))
        }
        _ => format!("malformed CSV: {e}"),
    };
    Error::parse(path, line, reason)
}

pub fn read_jsonl(path: &Path, schema_path: Option<&Path>) -> Result<Catalog> {
    let (table, splits) = jsonl_table(path, schema_path)?;
    Ok(into_catalog(table, splits))
}

/// The items of a JSON Lines manifest, compactly (what `embed` needs).
pub fn read_jsonl_items(path: &Path, schema_path: Option<&Path>) -> Result<ItemTable> {
    Ok(jsonl_table(path, schema_path)?.0)
}

/// Reads a JSON Lines manifest line by line into a table and each item's split.
fn jsonl_table(path: &Path, schema_path: Option<&Path>) -> Result<(ItemTable, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut builder = Builder::new(path, CatalogFormat::Jsonl, schema_path)?;
    for_each_line(path, file, |n, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::parse(path, n, format!("malformed JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::parse(path, n, "expected a JSON object"))?;
        let text = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(x)) => Ok(Some(x.to_string())),
                Some(other) => Err(Error::parse(
                    path,
                    n,
                    format!("field {key:?} must be a string, found {other}"),
                )),
            }
        };
        let mut labels = Vec::new();
        let label_source: Vec<(&String, &Value)> = match obj.get("labels") {
            Some(Value::Object(m)) => {
                // Both forms on one line: a top-level key naming a nested label must agree
                // with it (which one was meant cannot be told).
                for (k, flat) in obj.iter() {
                    if let Some(nested) = m.get(k) {
                        if label_text(flat) != label_text(nested) {
                            let item = obj.get("id").map_or("?".to_string(), |v| v.to_string());
                            return Err(Error::parse(
                                path,
                                n,
                                format!(
                                    "item {item}: label {k:?} is {flat} at the top level but {nested} under \"labels\"; give it once"
                                ),
                            ));
                        }
                    }
                }
                m.iter().collect()
            }
            Some(other) => {
                return Err(Error::parse(
                    path,
                    n,
                    format!("\"labels\" must be an object, found {other}"),
                ))
            }
            None => obj
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "id" | "image" | "split"))
                .collect(),
        };
        for (k, val) in label_source {
            let value = match val {
                Value::Null => continue,
                Value::String(s) if s.trim().is_empty() => continue,
                Value::String(s) => s.trim().to_string(),
                Value::Number(x) => x.to_string(),
                other => {
                    return Err(Error::parse(
                        path,
                        n,
                        format!("label {k:?} must be a string, found {other}"),
                    ))
                }
            };
            labels.push((k.clone(), value));
        }
        builder.push(Row {
            line: n,
            id: text("id")?.ok_or_else(|| Error::parse(path, n, "missing \"id\""))?,
            image: text("image")?.ok_or_else(|| Error::parse(path, n, "missing \"image\""))?,
            split: text("split")?,
            labels,
        })
    })?;
    builder.finish()
}

/// Calls `f` with each line (1-based number, text without its line ending) of a UTF-8
/// file, one line in memory at a time. A byte-order mark before the first line (as
/// spreadsheet exports write) is not part of it.
fn for_each_line(
    path: &Path,
    file: std::fs::File,
    mut f: impl FnMut(usize, &str) -> Result<()>,
) -> Result<()> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?
            == 0
        {
            return Ok(());
        }
        n += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::parse(path, n, "not valid UTF-8 text"))?;
        let text = match n {
            1 => text.strip_prefix('\u{feff}').unwrap_or(text),
            _ => text,
        };
        f(n, text.trim_end_matches('\r'))?;
    }
}

/// A label's text as the reader takes it (trimmed; null and "" mean unlabelled).
fn label_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(x) => Some(x.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The values of an attribute: given by `schema.json` (value -> id), or inferred (value
/// -> first-seen code, renumbered in sorted order once every row is read).
enum Values {
    Given(Vec<HashMap<String, ValueId>>),
    Inferred(Vec<HashMap<String, u32>>),
}

/// Checks rows one at a time and appends them to an [`ItemTable`]: nothing is kept per
/// row beyond the table, each item's split (one byte) and, while reading, one hash-table
/// entry per id for the duplicate check.
struct Builder<'p> {
    path: &'p Path,
    table: ItemTable,
    /// Per item: 0 = no split, else 1 + its position in [`SPLIT_NAMES`].
    splits: Vec<u8>,
    values: Values,
    attr_index: HashMap<String, usize>,
    /// FNV-1a of an id -> (item, line) of its first row.
    seen: HashMap<u64, (u32, u32)>,
    /// Items whose id hash was taken by another id (kept apart, compared in full).
    collided: Vec<(u32, u32)>,
    codes: Vec<(usize, Option<ValueId>)>,
}

impl<'p> Builder<'p> {
    fn new(path: &'p Path, format: CatalogFormat, schema_path: Option<&Path>) -> Result<Self> {
        let (schema, values) = match load_schema(path, schema_path)? {
            Some((_, schema)) => {
                // Value ids are u16 and 0xFFFF means "not labelled": ids 0 ..= 65534.
                check_value_count(path, &schema)?;
                let index = schema
                    .attributes
                    .iter()
                    .map(|a| {
                        a.values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (v.clone(), i as ValueId))
                            .collect()
                    })
                    .collect();
                (schema, Values::Given(index))
            }
            None => (Schema::default(), Values::Inferred(Vec::new())),
        };
        let attr_index = schema
            .attributes
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Builder {
            path,
            table: ItemTable::new(path, format, &root, schema),
            splits: Vec::new(),
            values,
            attr_index,
            seen: HashMap::new(),
            collided: Vec::new(),
            codes: Vec::new(),
        })
    }

    /// Adds an attribute to an inferred schema (first-seen order); nothing when the
    /// schema is given or already names it.
    fn attribute(&mut self, name: &str) -> usize {
        if let Some(&a) = self.attr_index.get(name) {
            return a;
        }
        let Values::Inferred(values) = &mut self.values else {
            return usize::MAX;
        };
        let a = values.len();
        values.push(HashMap::new());
        self.attr_index.insert(name.to_string(), a);
        self.table.schema.attributes.push(Attribute {
            name: name.to_string(),
            values: Vec::new(),
        });
        self.table.labels.add_attribute(self.table.len());
        a
    }

    fn push(&mut self, row: Row) -> Result<()> {
        let path = self.path;
        if row.id.is_empty() {
            return Err(Error::parse(path, row.line, "empty id"));
        }
        super::check_id(path, row.line, &row.id)?;
        if row.image.is_empty() {
            return Err(Error::parse(
                path,
                row.line,
                format!("item {:?}: empty image path", row.id),
            ));
        }
        let hash = crate::fnv1a(&[row.id.as_bytes()]);
        let first = match self.seen.get(&hash) {
            Some(&(item, line)) if self.table.id(item as usize) == row.id => Some(line),
            Some(_) => self
                .collided
                .iter()
                .find(|&&(item, _)| self.table.id(item as usize) == row.id)
                .map(|&(_, line)| line),
            None => None,
        };
        if let Some(first) = first {
            return Err(Error::parse(
                path,
                row.line,
                format!("duplicate id {:?} (first on line {first})", row.id),
            ));
        }
        self.codes.clear();
        for (attr, value) in &row.labels {
            let code = match &self.values {
                Values::Given(index) => {
                    let a = *self.attr_index.get(attr.as_str()).ok_or_else(|| {
                        Error::parse(
                            path,
                            row.line,
                            format!(
                                "unknown attribute {attr:?} (schema has: {})",
                                self.table.schema.names().join(", ")
                            ),
                        )
                    })?;
                    let v = *index[a].get(value.as_str()).ok_or_else(|| {
                        Error::parse(
                            path,
                            row.line,
                            format!(
                                "item {:?}: value {value:?} is not a value of {attr:?} (expected one of: {})",
                                row.id,
                                self.table.schema.attributes[a].values.join(", ")
                            ),
                        )
                    })?;
                    (a, Some(v))
                }
                Values::Inferred(_) => {
                    let a = self.attribute(attr);
                    let Values::Inferred(values) = &mut self.values else {
                        unreachable!("matched above")
                    };
                    let next = values[a].len() as u32;
                    let code = *values[a].entry(value.clone()).or_insert(next);
                    // Past 65,534 values the attribute is refused once counted (finish);
                    // until then its extra values are left unlabelled.
                    (a, (code < ValueId::MAX as u32).then_some(code as ValueId))
                }
            };
            self.codes.push(code);
        }
        let split = match &row.split {
            None => 0,
            Some(split) => match SPLIT_NAMES.iter().position(|s| s == split) {
                Some(i) => i as u8 + 1,
                None => {
                    return Err(Error::parse(
                        path,
                        row.line,
                        format!("unknown split {split:?} (expected train, valid or test)"),
                    ))
                }
            },
        };
        let item = self.table.push(&row.id, &row.image)?;
        for &(a, v) in &self.codes {
            self.table.labels.set(item, a, v);
        }
        self.splits.push(split);
        let entry = (item as u32, row.line.min(u32::MAX as usize) as u32);
        match self.seen.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(entry);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(entry),
        }
        Ok(())
    }

    /// Fixes an inferred schema (values sorted, numerically when all are integers) and
    /// renumbers the labels to it.
    fn finish(mut self) -> Result<(ItemTable, Vec<u8>)> {
        drop(std::mem::take(&mut self.seen));
        if let Values::Inferred(values) =
            std::mem::replace(&mut self.values, Values::Given(Vec::new()))
        {
            for (a, codes) in values.into_iter().enumerate() {
                let mut vals: Vec<(String, u32)> = codes.into_iter().collect();
                // Text order first, so integers written two ways ("01", "1") keep it.
                vals.sort();
                if vals.iter().all(|(v, _)| v.parse::<i64>().is_ok()) {
                    vals.sort_by_key(|(v, _)| v.parse::<i64>().expect("checked"));
                }
                if vals.len() <= ValueId::MAX as usize {
                    let mut map = vec![0 as ValueId; vals.len()];
                    for (new, (_, old)) in vals.iter().enumerate() {
                        map[*old as usize] = new as ValueId;
                    }
                    self.table.labels.remap(a, &map);
                }
                self.table.schema.attributes[a].values = vals.into_iter().map(|(v, _)| v).collect();
            }
            check_value_count(self.path, &self.table.schema)?;
        }
        self.table.shrink_to_fit();
        self.splits.shrink_to_fit();
        Ok((self.table, self.splits))
    }
}

/// Value ids are u16 and 0xFFFF means "not labelled": at most 65,535 values (ids
/// 0 ..= 65534) per attribute.
fn check_value_count(path: &Path, schema: &Schema) -> Result<()> {
    match schema
        .attributes
        .iter()
        .find(|a| a.values.len() > ValueId::MAX as usize)
    {
        Some(a) => Err(Error::invalid(
            path,
            format!(
                "attribute {:?} has {} values; at most {} are supported",
                a.name,
                a.values.len(),
                ValueId::MAX
            ),
        )),
        None => Ok(()),
    }
}

/// A whole [`Catalog`] from a manifest's table: owned items, split lists, and for `valid`
/// and `test` the query/candidate lists ([`is_query`]).
fn into_catalog(table: ItemTable, split_of: Vec<u8>) -> Catalog {
    let items = table.items();
    let mut splits = Splits::default();
    for (idx, &s) in split_of.iter().enumerate() {
        if s > 0 {
            let name = SPLIT_NAMES[s as usize - 1].to_string();
            splits.items.entry(name).or_default().push(idx);
        }
    }
    for split in ["valid", "test"] {
        let Some(members) = splits.items.get(split) else {
            continue;
        };
        let (mut queries, mut candidates) = (Vec::new(), Vec::new());
        for (a, attr) in table.schema.attributes.iter().enumerate() {
            for &item in members {
                if let Some(value) = table.labels.get(item, a) {
                    let r = LabelledRef {
                        item,
                        attribute: a,
                        value,
                    };
                    if is_query(&items[item].id, &attr.name) {
                        queries.push(r);
                    } else {
                        candidates.push(r);
                    }
                }
            }
        }
        splits.queries.insert(split.to_string(), queries);
        splits.candidates.insert(split.to_string(), candidates);
    }
    Catalog {
        source: table.source,
        format: table.format,
        image_root: table.image_root,
        schema: table.schema,
        items,
        labels: table.labels,
        splits,
        triplets: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are read one at a time, so an attribute first named on a later line widens
    /// the label rows read before it, and inferred values are renumbered once all are
    /// seen (numerically here; "01" and "1" keep text order).
    #[test]
    fn late_attributes_and_inferred_values_are_renumbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "\u{feff}{\"id\": \"a\", \"image\": \"a.png\", \"size\": \"10\"}\n\
             \n\
             {\"id\": \"b\", \"image\": \"b.png\", \"size\": 2, \"colour\": \"red\"}\r\n\
             {\"id\": \"c\", \"image\": \"c.png\", \"labels\": {\"colour\": \"blue\", \"size\": \"01\"}}\n\
             {\"id\": \"d\", \"image\": \"d.png\", \"size\": \"1\", \"split\": \"test\"}",
        )
        .unwrap();
        let t = read_jsonl_items(&path, None).unwrap();
        let names: Vec<_> = t.schema.attributes.iter().map(|a| &a.name).collect();
        assert_eq!(names, ["size", "colour"]);
        assert_eq!(t.schema.attributes[0].values, ["01", "1", "2", "10"]);
        assert_eq!(t.schema.attributes[1].values, ["blue", "red"]);
        let row = |i: usize| (t.labels.get(i, 0), t.labels.get(i, 1));
        assert_eq!(row(0), (Some(3), None));
        assert_eq!(row(1), (Some(2), Some(1)));
        assert_eq!(row(2), (Some(0), Some(0)));
        assert_eq!(row(3), (Some(1), None));
        assert_eq!((t.id(3), t.image(3)), ("d", Path::new("d.png")));
        let whole = read_jsonl(&path, None).unwrap();
        assert_eq!(whole.splits.items["test"], [3]);
    }

    #[test]
    fn duplicate_ids_and_bad_bytes_name_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "id,image\nx,1.png\ny,2.png\nx,3.png\n").unwrap();
        let err = read_csv_items(&path, None).unwrap_err().to_string();
        assert!(
            err.contains("duplicate id \"x\" (first on line 2)"),
            "{err}"
        );
        assert!(err.contains(":4"), "{err}");
        let path = dir.path().join("m.jsonl");
        let mut bytes = b"{\"id\": \"a\", \"image\": \"a.png\"}\n{\"id\": \"b".to_vec();
        bytes.extend_from_slice(&[0xff, b'"', b'}', b'\n']);
        std::fs::write(&path, bytes).unwrap();
        let err = read_jsonl_items(&path, None).unwrap_err().to_string();
        assert!(
            err.contains("not valid UTF-8") && err.contains(":2"),
            "{err}"
        );
    }
}
