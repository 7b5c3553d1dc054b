//! Reader for the CSN split of Zappos50k: triplet lists per condition.
//!
//! ```text
//! data/filenames.json        one image path per line (a text file, despite its name),
//!                            relative to data/ut-zap50k-images/
//! data/tripletlists/<cond>_tripletlist_{train,val,test}.txt   lines `a b c`:
//!                            image a is closer to c than to b (indices into filenames.json)
//! ```
//! Conditions keep CSN's index order (class, closure, gender, heel) when those are the
//! names; other condition sets are ordered by an optional `conditions.txt` (one name per
//! line, tailor's extension), else alphabetically. Images resolve against
//! `ut-zap50k-images/` when that directory exists, else against the directory itself.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{
    read_lines, Attribute, Catalog, CatalogFormat, Item, Labels, Schema, Splits, TripletList,
};
use crate::error::{Error, Result};

const CSN_CONDITIONS: [&str; 4] = ["class", "closure", "gender", "heel"];
const SPLIT_NAMES: [(&str, &str); 3] = [("train", "train"), ("val", "valid"), ("test", "test")];

pub fn read(dir: &Path) -> Result<Catalog> {
    let list_path = dir.join("filenames.json");
    let mut items = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in read_lines(&list_path)?.iter().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            return Err(Error::parse(&list_path, i + 1, "empty image path"));
        }
        super::check_id(&list_path, i + 1, name)?;
        if let Some(first) = seen.insert(name.to_string(), i + 1) {
            return Err(Error::parse(
                &list_path,
                i + 1,
                format!("duplicate image {name:?} (first listed on line {first})"),
            ));
        }
        items.push(Item {
            id: name.to_string(),
            image: PathBuf::from(name),
        });
    }

    let lists_dir = dir.join("tripletlists");
    let mut found = BTreeSet::new();
    let entries = std::fs::read_dir(&lists_dir).map_err(|e| Error::io(&lists_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&lists_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((cond, _)) = name.split_once("_tripletlist_") {
            found.insert(cond.to_string());
        }
    }
    if found.is_empty() {
        return Err(Error::invalid(
            &lists_dir,
            "no <condition>_tripletlist_<split>.txt files",
        ));
    }
    let order_path = dir.join("conditions.txt");
    let conditions: Vec<String> = if order_path.is_file() {
        let listed: Vec<String> = read_lines(&order_path)?
            .into_iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        for cond in &found {
            if !listed.contains(cond) {
                return Err(Error::invalid(
                    &order_path,
                    format!("condition {cond:?} has triplet lists but is not listed here"),
                ));
            }
        }
        listed
    } else if found.iter().all(|c| CSN_CONDITIONS.contains(&c.as_str())) {
        CSN_CONDITIONS
            .iter()
            .filter(|c| found.contains(**c))
            .map(|c| c.to_string())
            .collect()
    } else {
        found.into_iter().collect()
    };

    let mut triplets = Vec::new();
    for (attribute, cond) in conditions.iter().enumerate() {
        for (file_split, split) in SPLIT_NAMES {
            let path = lists_dir.join(format!("{cond}_tripletlist_{file_split}.txt"));
            if !path.is_file() {
                continue;
            }
            let mut list = Vec::new();
            for (i, line) in read_lines(&path)?.iter().enumerate() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.is_empty() {
                    continue;
                }
                if fields.len() != 3 {
                    return Err(Error::parse(
                        &path,
                        i + 1,
                        format!("expected `a b c` (three image indices), found {line:?}"),
                    ));
                }
                let mut t = [0usize; 3];
                for (slot, f) in t.iter_mut().zip(&fields) {
                    let v: usize = f.parse().map_err(|_| {
                        Error::parse(
                            &path,
                            i + 1,
                            format!("image index {f:?} is not a non-negative integer"),
                        )
                    })?;
                    if v >= items.len() {
                        return Err(Error::parse(
                            &path,
                            i + 1,
                            format!(
                                "image index {v} is past the end of filenames.json ({} entries)",
                                items.len()
                            ),
                        ));
                    }
                    *slot = v;
                }
                list.push(t);
            }
            triplets.push(TripletList {
                attribute,
                split: split.to_string(),
                triplets: list,
            });
        }
    }
    let schema = Schema {
        attributes: conditions
            .iter()
            .map(|c| Attribute {
                name: c.clone(),
                values: Vec::new(),
            })
            .collect(),
    };
    let image_root = if dir.join("ut-zap50k-images").is_dir() {
        dir.join("ut-zap50k-images")
    } else {
        dir.to_path_buf()
    };
    Ok(Catalog {
        source: dir.to_path_buf(),
        format: CatalogFormat::Zappos,
        image_root,
        labels: Labels::new(items.len(), schema.len()),
        schema,
        items,
        splits: Splits::default(),
        triplets,
    })
}
