//! Reader for the ASEN authors' split format (FashionAI, DARN, DeepFashion re-splits).
//!
//! ```text
//! data/meta.json                       {"<Dataset>": {"ATTRIBUTES": [...], "ATTRIBUTES_NUM": {...}}}
//! data/<Dataset>/filenames_{train,valid,test}.txt   image paths relative to data/<Dataset>/
//! data/<Dataset>/label_train.txt       img_idx a1 v1 [a2 v2 ...]
//! data/<Dataset>/{query,candidate}_{valid,test}.txt  img_idx attr value
//! ```
//! Items are the union of the filenames lists; an item's id is its path as listed.
//! `meta.json` may also carry `"VALUES": {attr: [names...]}` (tailor's extension) to name
//! values; otherwise values are named by their index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    read_lines, Attribute, Catalog, CatalogFormat, Item, LabelledRef, Labels, Schema, Splits,
    ValueId,
};
use crate::error::{Error, Result};

pub const SPLITS: [&str; 3] = ["train", "valid", "test"];
pub const EVAL_SPLITS: [&str; 2] = ["valid", "test"];

/// For a directory holding `meta.json` with exactly one dataset whose directory exists,
/// that dataset's directory.
pub fn single_dataset_dir(dir: &Path) -> Result<Option<PathBuf>> {
    let meta_path = dir.join("meta.json");
    let meta = read_meta(&meta_path)?;
    let obj = meta.as_object().expect("checked by read_meta");
    let dirs: Vec<PathBuf> = obj
        .keys()
        .map(|k| dir.join(k))
        .filter(|d| d.is_dir())
        .collect();
    match dirs.len() {
        0 => Ok(None),
        1 => Ok(Some(dirs.into_iter().next().expect("one"))),
        _ => Err(Error::invalid(
            &meta_path,
            format!(
                "meta.json lists several datasets ({}); open one of their directories",
                obj.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

fn read_meta(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::parse(path, e.line(), format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::invalid(path, "expected a JSON object of datasets"));
    }
    Ok(v)
}

/// Reads the schema of `dataset` from a `meta.json`.
pub fn read_schema(meta_path: &Path, dataset: Option<&str>) -> Result<(String, Schema)> {
    let meta = read_meta(meta_path)?;
    let obj = meta.as_object().expect("checked by read_meta");
    let (name, entry) = match dataset {
        Some(d) => match obj.get(d) {
            Some(e) => (d.to_string(), e),
            None if obj.len() == 1 => {
                let (k, v) = obj.iter().next().expect("one");
                (k.clone(), v)
            }
            None => {
                return Err(Error::invalid(
                    meta_path,
                    format!(
                        "no dataset {d:?} (has: {})",
                        obj.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        },
        None if obj.len() == 1 => {
            let (k, v) = obj.iter().next().expect("one");
            (k.clone(), v)
        }
        None => return Err(Error::invalid(meta_path, "several datasets; name one")),
    };
    let bad = |what: &str| Error::invalid(meta_path, format!("dataset {name:?}: {what}"));
    let attrs = entry
        .get("ATTRIBUTES")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing \"ATTRIBUTES\" list"))?;
    let nums = entry
        .get("ATTRIBUTES_NUM")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing \"ATTRIBUTES_NUM\" object"))?;
    let value_names = entry.get("VALUES").and_then(Value::as_object);
    let mut schema = Schema::default();
    for a in attrs {
        let a = a
            .as_str()
            .ok_or_else(|| bad("\"ATTRIBUTES\" must hold strings"))?;
        let n = nums
            .get(a)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(&format!("\"ATTRIBUTES_NUM\" has no count for {a:?}")))?;
        if n == 0 || n > ValueId::MAX as u64 {
            return Err(bad(&format!("attribute {a:?} has {n} values")));
        }
        let values = match value_names.and_then(|v| v.get(a)).and_then(Value::as_array) {
            Some(names) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(&format!("\"VALUES\" of {a:?} must hold strings")))?;
                if names.len() as u64 != n {
                    return Err(bad(&format!(
                        "\"VALUES\" of {a:?} names {} values, \"ATTRIBUTES_NUM\" says {n}",
                        names.len()
                    )));
                }
                names
            }
            None => (0..n).map(|i| i.to_string()).collect(),
        };
        schema.attributes.push(Attribute {
            name: a.to_string(),
            values,
        });
    }
    Ok((name, schema))
}

/// Reads an ASEN split from a dataset directory (`data/<Dataset>`); `meta.json` is looked
/// for in the directory itself, then in its parent.
pub fn read(dataset_dir: &Path, dataset: Option<&str>) -> Result<Catalog> {
    let meta_path = [
        dataset_dir.join("meta.json"),
        dataset_dir.join("../meta.json"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| Error::invalid(dataset_dir, "no meta.json in this directory or its parent"))?;
    let dir_name = dataset_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let (_, schema) = read_schema(&meta_path, dataset.or(dir_name.as_deref()))?;

    let mut items: Vec<Item> = Vec::new();
    let mut by_path: HashMap<String, usize> = HashMap::new();
    let mut splits = Splits::default();
    // Per split: local line index -> global item.
    let mut local: HashMap<&str, Vec<usize>> = HashMap::new();
    for split in SPLITS {
        let path = dataset_dir.join(format!("filenames_{split}.txt"));
        if !path.is_file() {
            continue;
        }
        let mut seen = HashMap::new();
        let mut map = Vec::new();
        for (i, line) in read_lines(&path)?.into_iter().enumerate() {
            let name = line.trim();
            if name.is_empty() {
                return Err(Error::parse(&path, i + 1, "empty image path"));
            }
            super::check_id(&path, i + 1, name)?;
            if let Some(first) = seen.insert(name.to_string(), i + 1) {
                return Err(Error::parse(
                    &path,
                    i + 1,
                    format!("duplicate image {name:?} (first listed on line {first})"),
                ));
            }
            let idx = *by_path.entry(name.to_string()).or_insert_with(|| {
                items.push(Item {
                    id: name.to_string(),
                    image: PathBuf::from(name),
                });
                items.len() - 1
            });
            map.push(idx);
        }
        splits.items.insert(split.to_string(), map.clone());
        local.insert(split, map);
    }
    if local.is_empty() {
        return Err(Error::invalid(
            dataset_dir,
            "no filenames_{train,valid,test}.txt in this directory",
        ));
    }
    let mut labels = Labels::new(items.len(), schema.len());
    let set_label = |path: &Path, line: usize, r: LabelledRef, labels: &mut Labels| -> Result<()> {
        match labels.get(r.item, r.attribute) {
            Some(v) if v != r.value => Err(Error::parse(
                path,
                line,
                format!(
                    "item {:?} is labelled {:?}={} here but {} elsewhere",
                    items[r.item].id, schema.attributes[r.attribute].name, r.value, v
                ),
            )),
            _ => {
                labels.set(r.item, r.attribute, Some(r.value));
                Ok(())
            }
        }
    };

    let label_path = dataset_dir.join("label_train.txt");
    if label_path.is_file() {
        let map = local.get("train").ok_or_else(|| {
            Error::invalid(&label_path, "label_train.txt without filenames_train.txt")
        })?;
        for (i, line) in read_lines(&label_path)?.iter().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            if fields.len() < 3 || fields.len().is_multiple_of(2) {
                return Err(Error::parse(
                    &label_path,
                    i + 1,
                    format!("expected `img_idx attr value [attr value ...]`, found {line:?}"),
                ));
            }
            let item = parse_index(&label_path, i + 1, fields[0], "image index", map.len())
                .map(|k| map[k])?;
            for pair in fields[1..].chunks(2) {
                let r = parse_ref(&label_path, i + 1, item, pair[0], pair[1], &schema)?;
                set_label(&label_path, i + 1, r, &mut labels)?;
            }
        }
    }
    for split in EVAL_SPLITS {
        for kind in ["query", "candidate"] {
            let path = dataset_dir.join(format!("{kind}_{split}.txt"));
            if !path.is_file() {
                continue;
            }
            let map = local.get(split).ok_or_else(|| {
                Error::invalid(
                    &path,
                    format!("{kind}_{split}.txt without filenames_{split}.txt"),
                )
            })?;
            let mut refs = Vec::new();
            for (i, line) in read_lines(&path)?.iter().enumerate() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.is_empty() {
                    continue;
                }
                if fields.len() != 3 {
                    return Err(Error::parse(
                        &path,
                        i + 1,
                        format!("expected `img_idx attr value`, found {line:?}"),
                    ));
                }
                let item = parse_index(&path, i + 1, fields[0], "image index", map.len())
                    .map(|k| map[k])?;
                let r = parse_ref(&path, i + 1, item, fields[1], fields[2], &schema)?;
                set_label(&path, i + 1, r, &mut labels)?;
                refs.push(r);
            }
            let target = if kind == "query" {
                &mut splits.queries
            } else {
                &mut splits.candidates
            };
            target.insert(split.to_string(), refs);
        }
    }
    Ok(Catalog {
        source: dataset_dir.to_path_buf(),
        format: CatalogFormat::Asen,
        image_root: dataset_dir.to_path_buf(),
        schema,
        items,
        labels,
        splits,
        triplets: Vec::new(),
    })
}

fn parse_index(path: &Path, line: usize, field: &str, what: &str, len: usize) -> Result<usize> {
    let v: usize = field.parse().map_err(|_| {
        Error::parse(
            path,
            line,
            format!("{what} {field:?} is not a non-negative integer"),
        )
    })?;
    if v >= len {
        return Err(Error::parse(
            path,
            line,
            format!("{what} {v} is past the end of the filenames list ({len} entries)"),
        ));
    }
    Ok(v)
}

fn parse_ref(
    path: &Path,
    line: usize,
    item: usize,
    attr: &str,
    value: &str,
    schema: &Schema,
) -> Result<LabelledRef> {
    let attribute = attr.parse::<usize>().map_err(|_| {
        Error::parse(
            path,
            line,
            format!("attribute {attr:?} is not a non-negative integer"),
        )
    })?;
    let a = schema.attributes.get(attribute).ok_or_else(|| {
        Error::parse(
            path,
            line,
            format!(
                "unknown attribute {attribute}: meta.json lists {} attributes",
                schema.len()
            ),
        )
    })?;
    let v = value.parse::<usize>().map_err(|_| {
        Error::parse(
            path,
            line,
            format!("value {value:?} is not a non-negative integer"),
        )
    })?;
    if v >= a.values.len() {
        return Err(Error::parse(
            path,
            line,
            format!(
                "value {v} out of range for attribute {:?} ({} values)",
                a.name,
                a.values.len()
            ),
        ));
    }
    Ok(LabelledRef {
        item,
        attribute,
        value: v as ValueId,
    })
}
