//! Writes the manifest format that [`super::manifest`] reads: `manifest.csv`,
//! `manifest.jsonl` (the same items) and `schema.json`.

use std::fmt::Write as _;
use std::path::Path;

use super::manifest::SCHEMA_FILE;
use super::Schema;
use crate::error::{IoContext, Result};

/// One item of a manifest: its id, its image path relative to the manifest, its split,
/// and its value (an index into the schema's values) per schema attribute.
pub struct ManifestRow<'a> {
    pub id: String,
    pub image: String,
    pub split: &'a str,
    pub values: &'a [u16],
}

/// Writes `manifest.csv`, `manifest.jsonl` and the schema file into `dir`.
pub fn write_manifest(dir: &Path, schema: &Schema, rows: &[ManifestRow]) -> Result<()> {
    let mut csv = String::from("id,image,split");
    for a in &schema.attributes {
        csv.push(',');
        csv.push_str(&a.name);
    }
    csv.push('\n');
    for row in rows {
        write!(csv, "{},{},{}", row.id, row.image, row.split).expect("string");
        for (a, attr) in schema.attributes.iter().enumerate() {
            write!(csv, ",{}", attr.values[row.values[a] as usize]).expect("string");
        }
        csv.push('\n');
    }
    write_file(&dir.join("manifest.csv"), &csv)?;
    let mut jsonl = String::new();
    for row in rows {
        let labels: serde_json::Map<String, serde_json::Value> = schema
            .attributes
            .iter()
            .enumerate()
            .map(|(a, attr)| {
                (
                    attr.name.clone(),
                    attr.values[row.values[a] as usize].clone().into(),
                )
            })
            .collect();
        let line = serde_json::json!({
            "id": row.id,
            "image": row.image,
            "split": row.split,
            "labels": labels,
        });
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    write_file(&dir.join("manifest.jsonl"), &jsonl)?;
    write_file(
        &dir.join(SCHEMA_FILE),
        &serde_json::to_string_pretty(schema).expect("schema serialises"),
    )
}

pub(super) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).at(path)
}
