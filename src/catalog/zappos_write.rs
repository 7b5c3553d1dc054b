//! Writes the Zappos / CSN triplet-list format that [`super::zappos`] reads:
//! `filenames.json` (one image path a line), `conditions.txt` (one attribute a line) and
//! `tripletlists/<attribute>_tripletlist_<split>.txt` (`anchor far close` lines).

use std::path::Path;

use super::manifest_write::write_file;
use crate::error::{IoContext, Result};

/// The triplets of one attribute in one split (`train`, `val` or `test`), as item
/// positions in the file list: (anchor, far, close).
pub struct TripletList<'a> {
    pub attribute: &'a str,
    pub split: &'a str,
    pub triplets: Vec<[usize; 3]>,
}

/// Writes the file list, the conditions and the triplet lists into `dir`.
pub fn write_zappos(
    dir: &Path,
    filenames: &[String],
    conditions: &[String],
    lists: &[TripletList],
) -> Result<()> {
    std::fs::create_dir_all(dir.join("tripletlists")).at(dir)?;
    let files: String = filenames.iter().map(|f| f.clone() + "\n").collect();
    write_file(&dir.join("filenames.json"), &files)?;
    write_file(&dir.join("conditions.txt"), &(conditions.join("\n") + "\n"))?;
    for list in lists {
        let text: String = list
            .triplets
            .iter()
            .map(|[x, far, close]| format!("{x} {far} {close}\n"))
            .collect();
        write_file(
            &dir.join("tripletlists")
                .join(format!("{}_tripletlist_{}.txt", list.attribute, list.split)),
            &text,
        )?;
    }
    Ok(())
}
