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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    read_lines, Attribute, Catalog, CatalogFormat, Item, LabelledRef, Labels, Schema, Splits,
    ValueId,
};
use crate::error::{Error, Result};

pub const SCHEMA_FILE: &str = "schema.json";
const SPLIT_NAMES: [&str; 3] = ["train", "valid", "test"];

/// Deterministic query/candidate assignment for manifests: about one labelled pair in
/// five becomes a query (FNV-1a of the item id and attribute name).
pub fn is_query(item_id: &str, attribute: &str) -> bool {
    crate::fnv1a(&[item_id.as_bytes(), attribute.as_bytes()]).is_multiple_of(5)
}

/// One parsed row before the schema is fixed.
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
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let cell = |c: usize| record.get(c).unwrap_or("").trim().to_string();
        rows.push(Row {
            line,
            id: cell(id_col),
            image: cell(image_col),
            split: split_col.map(cell).filter(|s| !s.is_empty()),
            labels: attr_cols
                .iter()
                .map(|&c| (headers[c].clone(), cell(c)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        });
    }
    let attr_order: Vec<String> = attr_cols.iter().map(|&c| headers[c].clone()).collect();
    build(path, CatalogFormat::Csv, rows, attr_order, schema_path)
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
    let mut rows = Vec::new();
    let mut attr_order: Vec<String> = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
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
            if !attr_order.contains(k) {
                attr_order.push(k.clone());
            }
            labels.push((k.clone(), value));
        }
        rows.push(Row {
            line: n,
            id: text("id")?.ok_or_else(|| Error::parse(path, n, "missing \"id\""))?,
            image: text("image")?.ok_or_else(|| Error::parse(path, n, "missing \"image\""))?,
            split: text("split")?,
            labels,
        });
    }
    build(path, CatalogFormat::Jsonl, rows, attr_order, schema_path)
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

fn build(
    path: &Path,
    format: CatalogFormat,
    rows: Vec<Row>,
    attr_order: Vec<String>,
    schema_path: Option<&Path>,
) -> Result<Catalog> {
    let given = load_schema(path, schema_path)?;
    let schema = match &given {
        Some((_, s)) => s.clone(),
        None => infer_schema(&rows, &attr_order),
    };
    // Value ids are u16 and 0xFFFF means "not labelled": ids 0 ..= 65534.
    if let Some(a) = schema
        .attributes
        .iter()
        .find(|a| a.values.len() > ValueId::MAX as usize)
    {
        return Err(Error::invalid(
            path,
            format!(
                "attribute {:?} has {} values; at most {} are supported",
                a.name,
                a.values.len(),
                ValueId::MAX
            ),
        ));
    }
    let value_index: Vec<HashMap<&str, ValueId>> = schema
        .attributes
        .iter()
        .map(|a| {
            a.values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_str(), i as ValueId))
                .collect()
        })
        .collect();
    let mut items = Vec::with_capacity(rows.len());
    let mut labels = Labels::new(rows.len(), schema.len());
    let mut splits = Splits::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (idx, row) in rows.iter().enumerate() {
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
        if let Some(first) = seen.insert(row.id.clone(), row.line) {
            return Err(Error::parse(
                path,
                row.line,
                format!("duplicate id {:?} (first on line {first})", row.id),
            ));
        }
        for (attr, value) in &row.labels {
            let a = schema.attribute_index(attr).map_err(|_| {
                Error::parse(
                    path,
                    row.line,
                    format!(
                        "unknown attribute {attr:?} (schema has: {})",
                        schema.names().join(", ")
                    ),
                )
            })?;
            let v = *value_index[a].get(value.as_str()).ok_or_else(|| {
                Error::parse(
                    path,
                    row.line,
                    format!(
                        "item {:?}: value {value:?} is not a value of {attr:?} (expected one of: {})",
                        row.id,
                        schema.attributes[a].values.join(", ")
                    ),
                )
            })?;
            labels.set(idx, a, Some(v));
        }
        if let Some(split) = &row.split {
            if !SPLIT_NAMES.contains(&split.as_str()) {
                return Err(Error::parse(
                    path,
                    row.line,
                    format!("unknown split {split:?} (expected train, valid or test)"),
                ));
            }
            splits.items.entry(split.clone()).or_default().push(idx);
        }
        items.push(Item {
            id: row.id.clone(),
            image: PathBuf::from(&row.image),
        });
    }
    for split in ["valid", "test"] {
        let Some(members) = splits.items.get(split) else {
            continue;
        };
        let (mut queries, mut candidates) = (Vec::new(), Vec::new());
        for (a, attr) in schema.attributes.iter().enumerate() {
            for &item in members {
                if let Some(value) = labels.get(item, a) {
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
    Ok(Catalog {
        source: path.to_path_buf(),
        format,
        image_root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        schema,
        items,
        labels,
        splits,
        triplets: Vec::new(),
    })
}

fn infer_schema(rows: &[Row], attr_order: &[String]) -> Schema {
    // Sets, not lists: the values are sorted below anyway, and a lookup per label keeps
    // an attribute with many values (brands, sizes) linear.
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for row in rows {
        for (a, v) in &row.labels {
            values.entry(a.as_str()).or_default().insert(v.as_str());
        }
    }
    let attributes = attr_order
        .iter()
        .map(|name| {
            let mut vals: Vec<String> = values
                .get(name.as_str())
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            if vals.iter().all(|v| v.parse::<i64>().is_ok()) {
                vals.sort_by_key(|v| v.parse::<i64>().expect("checked"));
            } else {
                vals.sort();
            }
            Attribute {
                name: name.clone(),
                values: vals,
            }
        })
        .collect();
    Schema { attributes }
}
