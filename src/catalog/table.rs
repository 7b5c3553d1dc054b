//! A catalog's items held compactly, for jobs that walk every item once (`embed`).
//!
//! [`super::Catalog`] keeps one `Item` (two heap strings, ~110 bytes) per item plus the
//! evaluation lists; at 100M items that is the machine. An [`ItemTable`] keeps the ids and
//! image paths in one text arena with two offsets per item, and the labels as value codes
//! (two bytes per attribute): the bytes of the strings themselves plus 16 + 2 x attributes
//! per item. The manifest readers fill it row by row (see [`super::manifest`]), so reading
//! never holds more than the table and one row.

use std::path::{Path, PathBuf};

use super::{Catalog, CatalogFormat, Item, Labels, Schema};
use crate::error::{Error, Result};

/// Ids and image paths in one arena, labels as codes.
#[derive(Debug, Clone)]
pub struct ItemTable {
    /// The path the catalog was opened from.
    pub source: PathBuf,
    pub format: CatalogFormat,
    /// Directory that relative image paths are resolved against.
    pub image_root: PathBuf,
    pub schema: Schema,
    pub labels: Labels,
    /// Every item's id then image path, back to back.
    text: String,
    /// Per item: where its id ends and where its image path ends in `text` (an id starts
    /// where the previous item's image path ends).
    ends: Vec<[u64; 2]>,
}

impl ItemTable {
    /// An empty table; `labels` gets a row per pushed item.
    pub fn new(source: &Path, format: CatalogFormat, image_root: &Path, schema: Schema) -> Self {
        let attributes = schema.len();
        ItemTable {
            source: source.to_path_buf(),
            format,
            image_root: image_root.to_path_buf(),
            schema,
            labels: Labels::new(0, attributes),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// Appends an unlabelled item; returns its index. Item indices are u32 (the embed
    /// job's shard lists hold them as such): a 4,294,967,296th item is refused.
    pub fn push(&mut self, id: &str, image: &str) -> Result<usize> {
        let index = self.ends.len();
        if index >= u32::MAX as usize {
            return Err(Error::invalid(
                &self.source,
                format!("more than {} items; split the catalog", u32::MAX),
            ));
        }
        self.text.push_str(id);
        let id_end = self.text.len() as u64;
        self.text.push_str(image);
        self.ends.push([id_end, self.text.len() as u64]);
        self.labels.push_item();
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn start(&self, item: usize) -> usize {
        match item {
            0 => 0,
            _ => self.ends[item - 1][1] as usize,
        }
    }

    /// An item's external id.
    pub fn id(&self, item: usize) -> &str {
        &self.text[self.start(item)..self.ends[item][0] as usize]
    }

    /// An item's image path as listed (absolute or relative to [`Self::image_root`]).
    pub fn image(&self, item: usize) -> &Path {
        let [id_end, end] = self.ends[item];
        Path::new(&self.text[id_end as usize..end as usize])
    }

    /// Absolute (or root-joined) path of an item's image.
    pub fn image_path(&self, item: usize) -> PathBuf {
        self.image_root.join(self.image(item))
    }

    /// Heap bytes the table holds (capacities, not lengths): the figure that must stay
    /// near the strings' own bytes plus 16 + 2 x attributes per item.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<[u64; 2]>()
            + self.labels.heap_bytes()
    }

    /// Gives back the growth slack of the arena and offsets once reading is done.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.labels.shrink_to_fit();
    }

    /// The items as owned [`Item`]s (for [`Catalog`]).
    pub(crate) fn items(&self) -> Vec<Item> {
        (0..self.len())
            .map(|i| Item {
                id: self.id(i).to_string(),
                image: self.image(i).to_path_buf(),
            })
            .collect()
    }

    /// The table of an in-memory catalog (the ASEN and Zappos readers build one whole).
    pub fn from_catalog(catalog: &Catalog) -> Result<Self> {
        let mut table = ItemTable::new(
            &catalog.source,
            catalog.format,
            &catalog.image_root,
            catalog.schema.clone(),
        );
        for item in &catalog.items {
            let image = item.image.to_str().ok_or_else(|| {
                Error::invalid(
                    &catalog.source,
                    format!(
                        "item {:?}: image path {:?} is not UTF-8",
                        item.id,
                        item.image.display()
                    ),
                )
            })?;
            table.push(&item.id, image)?;
        }
        table.labels = catalog.labels.clone();
        table.shrink_to_fit();
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Attribute;

    fn schema(attributes: usize) -> Schema {
        Schema {
            attributes: (0..attributes)
                .map(|a| Attribute {
                    name: format!("a{a}"),
                    values: vec!["x".into(), "y".into()],
                })
                .collect(),
        }
    }

    #[test]
    fn items_round_trip_through_the_arena() {
        let mut t = ItemTable::new(
            Path::new("m.csv"),
            CatalogFormat::Csv,
            Path::new("/catalog-root"),
            schema(2),
        );
        for (id, image) in [("a", "img/a.png"), ("", ""), ("ü-2", "/abs/ü.jpg")] {
            t.push(id, image).unwrap();
        }
        t.labels.set(2, 1, Some(1));
        assert_eq!(t.len(), 3);
        assert_eq!((t.id(0), t.image(0)), ("a", Path::new("img/a.png")));
        assert_eq!((t.id(1), t.image(1)), ("", Path::new("")));
        assert_eq!((t.id(2), t.image(2)), ("ü-2", Path::new("/abs/ü.jpg")));
        assert_eq!(t.image_path(0), Path::new("/catalog-root/img/a.png"));
        assert_eq!(t.image_path(2), Path::new("/abs/ü.jpg"));
        assert_eq!((t.labels.get(2, 1), t.labels.get(2, 0)), (Some(1), None));
        let items = t.items();
        assert_eq!(items[2].id, "ü-2");
    }

    /// The accounting that keeps `embed` flat: per item, the strings' bytes plus two
    /// offsets and one code per attribute, with no per-item allocation.
    #[test]
    fn bytes_per_item_are_the_strings_plus_offsets_and_codes() {
        let n = 100_000;
        let attributes = 7;
        let mut t = ItemTable::new(
            Path::new("m.csv"),
            CatalogFormat::Csv,
            Path::new("."),
            schema(attributes),
        );
        let mut strings = 0;
        for i in 0..n {
            let (id, image) = (format!("sf-{i:07}"), format!("images/{i:07}.png"));
            strings += id.len() + image.len();
            t.push(&id, &image).unwrap();
        }
        t.shrink_to_fit();
        let fixed = 16 + 2 * attributes;
        assert_eq!(t.heap_bytes(), strings + n * fixed);
        // 10 + 18 bytes of text: 58 bytes an item, where `Item`s cost ~110 before labels.
        assert_eq!(t.heap_bytes() / n, 58);
    }
}
