//! Writes the ASEN split format that [`super::asen`] reads: `meta.json` beside the
//! dataset directory and, inside it, `filenames_<split>.txt`, `label_train.txt`, and
//! `query_<split>.txt` / `candidate_<split>.txt` for valid and test.

use std::fmt::Write as _;
use std::path::Path;

use super::manifest::is_query;
use super::manifest_write::write_file;
use super::Schema;
use crate::error::Result;

/// An ASEN-format dataset: per item its id, image path (relative to the dataset
/// directory) and values; the items of each split.
pub struct AsenSplits<'a> {
    /// The dataset's name: `meta.json`'s key and the directory holding the lists.
    pub dataset: &'a str,
    pub schema: &'a Schema,
    pub ids: &'a [String],
    pub images: &'a [String],
    pub values: &'a [Vec<u16>],
    pub train: &'a [usize],
    pub valid: &'a [usize],
    pub test: &'a [usize],
}

/// Writes `meta.json` into `dir` and the split files into `dir/<dataset>`.
pub fn write_asen(dir: &Path, s: &AsenSplits) -> Result<()> {
    let schema = s.schema;
    let meta = serde_json::json!({
        s.dataset: {
            "ATTRIBUTES": schema.names(),
            "ATTRIBUTES_NUM": schema.attributes.iter().map(|a| (a.name.clone(), serde_json::json!(a.values.len()))).collect::<serde_json::Map<_, _>>(),
            "VALUES": schema.attributes.iter().map(|a| (a.name.clone(), serde_json::json!(a.values))).collect::<serde_json::Map<_, _>>(),
        }
    });
    write_file(
        &dir.join("meta.json"),
        &serde_json::to_string_pretty(&meta).expect("json"),
    )?;
    let ds = dir.join(s.dataset);
    for (name, members) in [("train", s.train), ("valid", s.valid), ("test", s.test)] {
        let list: String = members
            .iter()
            .map(|&i| s.images[i].clone() + "\n")
            .collect();
        write_file(&ds.join(format!("filenames_{name}.txt")), &list)?;
    }
    let mut labels = String::new();
    for (local, &i) in s.train.iter().enumerate() {
        write!(labels, "{local}").expect("string");
        for (a, v) in s.values[i].iter().enumerate() {
            write!(labels, " {a} {v}").expect("string");
        }
        labels.push('\n');
    }
    write_file(&ds.join("label_train.txt"), &labels)?;
    for (name, members) in [("valid", s.valid), ("test", s.test)] {
        let (mut queries, mut candidates) = (String::new(), String::new());
        // Attribute-major, as the manifest reader orders them.
        for (a, attr) in schema.attributes.iter().enumerate() {
            for (local, &i) in members.iter().enumerate() {
                let line = format!("{local} {a} {}\n", s.values[i][a]);
                if is_query(&s.ids[i], &attr.name) {
                    queries.push_str(&line);
                } else {
                    candidates.push_str(&line);
                }
            }
        }
        write_file(&ds.join(format!("query_{name}.txt")), &queries)?;
        write_file(&ds.join(format!("candidate_{name}.txt")), &candidates)?;
    }
    Ok(())
}
