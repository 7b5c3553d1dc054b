//! Retrieval sheets (`tailor show search`): the query image, the attribute, the top-k with
//! ranks, scores, ids and value names, framed green (same value as the query) or red
//! (another value) from the labels; with `explain`, the model's spatial attention for the
//! attribute over the query and every result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::RgbImage;
use serde::Serialize;

use super::draw::{self, AttentionMap, GREY, INK, MATCH, MISMATCH, QUERY};
use super::grid::{Cell, Grid, LegendItem};
use crate::catalog::{Catalog, ValueId};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::model::{self, Model};
use crate::query::{self, Query, Target, Weighted};

/// What the sheet is for.
#[derive(Debug, Clone)]
pub enum SheetQuery {
    /// An item of the index (its image found in the catalog).
    Item(String),
    /// An image file, embedded with the index's model.
    Image(PathBuf),
}

pub struct SheetRequest<'a> {
    pub index: &'a Index,
    /// Where the images are (and the labels, when the index carries none).
    pub catalog: &'a Catalog,
    /// The index's model (identity already checked): needed for image queries and
    /// `explain`.
    pub model: Option<&'a Model>,
    pub query: SheetQuery,
    pub attr: String,
    pub k: usize,
    pub ef: usize,
    pub exact: bool,
    pub explain: bool,
    /// Tile size in px (ignored when `size` is given).
    pub tile: u32,
    /// Exact picture size.
    pub size: Option<(u32, u32)>,
}

/// One result as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct SheetResult {
    pub rank: usize,
    pub id: String,
    pub score: f32,
    /// Its value for the attribute, when labelled.
    pub value: Option<String>,
    /// Same value as the query (None: not judged, a label is missing).
    pub same_value: Option<bool>,
    /// Why its picture is missing, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_problem: Option<String>,
    /// Where its picture is on the sheet: `[x, y, width, height]` in pixels; the frame
    /// (when drawn) is `frame_px` wide around it.
    pub tile: [u32; 4],
}

/// A drawn sheet and what is on it.
#[derive(Debug, Clone, Serialize)]
pub struct SheetSummary {
    pub attribute: String,
    pub query: String,
    pub query_value: Option<String>,
    /// Whether frames were drawn (labels for the query and its results).
    pub judged: bool,
    pub explained: bool,
    pub results: Vec<SheetResult>,
    /// Degradations, as printed on the sheet.
    pub notes: Vec<String>,
    /// The query's picture box `[x, y, width, height]`.
    pub query_tile: [u32; 4],
    /// Width of the frames in pixels.
    pub frame_px: u32,
}

/// Item id -> catalog position.
pub struct CatalogLookup<'a> {
    pub catalog: &'a Catalog,
    by_id: HashMap<&'a str, usize>,
}

impl<'a> CatalogLookup<'a> {
    pub fn new(catalog: &'a Catalog) -> Self {
        CatalogLookup {
            catalog,
            by_id: catalog
                .items
                .iter()
                .enumerate()
                .map(|(i, it)| (it.id.as_str(), i))
                .collect(),
        }
    }

    pub fn item(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn image_path(&self, id: &str) -> Option<PathBuf> {
        self.item(id).map(|i| self.catalog.image_path(i))
    }
}

/// Where an item's value for an attribute comes from: the index's labels, else the
/// catalog's.
pub struct ValueSource<'a> {
    index: &'a Index,
    lookup: &'a CatalogLookup<'a>,
    /// (attribute position, value names) in the index schema, or in the catalog's.
    from_index: Option<(usize, Vec<String>)>,
    from_catalog: Option<(usize, Vec<String>)>,
}

impl<'a> ValueSource<'a> {
    pub fn new(index: &'a Index, lookup: &'a CatalogLookup<'a>, attr: &str) -> Self {
        let pick = |s: &crate::catalog::Schema| {
            s.attribute_index(attr)
                .ok()
                .map(|a| (a, s.attributes[a].values.clone()))
        };
        ValueSource {
            index,
            lookup,
            from_index: index.schema().and_then(pick),
            from_catalog: pick(&lookup.catalog.schema),
        }
    }

    /// Whether any labels exist for the attribute.
    pub fn labelled(&self) -> bool {
        self.from_index.is_some() || self.from_catalog.is_some()
    }

    /// Value id and name of the item at `row` of the index.
    pub fn value(&self, row: usize) -> Option<(ValueId, String)> {
        if let Some((a, names)) = &self.from_index {
            if let Some(v) = self.index.label(row, *a) {
                return Some((v, names.get(v as usize).cloned().unwrap_or_default()));
            }
        }
        let (a, names) = self.from_catalog.as_ref()?;
        let item = self.lookup.item(self.index.id(row))?;
        let v = self.lookup.catalog.labels.get(item, *a)?;
        Some((v, names.get(v as usize).cloned().unwrap_or_default()))
    }
}

/// Decodes an image for display; a failure is a reason string.
fn load_picture(path: &Path) -> std::result::Result<RgbImage, String> {
    crate::encode::decode::decode_rgb(path).map(|img| img.to_rgb8())
}

/// The attribute's first-level spatial attention of each image (None where an image is
/// missing), in one batch.
pub fn attention_of(
    model: &Model,
    attr: &str,
    images: &[Option<&RgbImage>],
) -> Result<Vec<Option<AttentionMap>>> {
    let cfg = model.config();
    let a = cfg.attribute_index(attr)?;
    let present: Vec<&RgbImage> = images.iter().flatten().copied().collect();
    if present.is_empty() {
        return Ok(vec![None; images.len()]);
    }
    let s = cfg.input_size as usize;
    let mut px = Vec::with_capacity(present.len() * 3 * s * s);
    for img in &present {
        px.extend(model::preprocess(
            &image::DynamicImage::ImageRgb8((*img).clone()),
            cfg,
        )?);
    }
    let t = Tensor::from_vec(px, (present.len(), 3, s, s), model.device())?;
    let maps = model.attention_levels(&t, &[a])?.remove(0).remove(0);
    let (_, h, w) = maps.dims3()?;
    let flat = maps.flatten_all()?.to_vec1::<f32>()?;
    let mut it = flat.chunks(h * w);
    Ok(images
        .iter()
        .map(|img| {
            img.and_then(|_| it.next()).map(|v| AttentionMap {
                h,
                w,
                values: v.to_vec(),
            })
        })
        .collect())
}

/// Searches and draws the sheet.
pub fn search_sheet(req: &SheetRequest) -> Result<(RgbImage, SheetSummary)> {
    let ix = req.index;
    if ix.live_len() == 0 {
        return Err(Error::invalid(
            ix.dir(),
            "the index is empty: nothing to show",
        ));
    }
    ix.dim(&req.attr)?; // unknown attribute: the index's error names the known ones
    if req.k == 0 {
        return Err(Error::Usage(
            "the number of results must be at least 1".into(),
        ));
    }
    if req.explain && req.model.is_none() {
        return Err(Error::Usage(
            "explaining results needs the index's model (none was given or recorded)".into(),
        ));
    }
    let lookup = CatalogLookup::new(req.catalog);
    let values = ValueSource::new(ix, &lookup, &req.attr);
    let mut notes = Vec::new();

    // The query: its picture, its vector (or item), its value.
    let (target, query_label, query_pic, query_value) = match &req.query {
        SheetQuery::Item(id) => {
            let row = ix
                .row(id)
                .filter(|&r| !ix.is_removed(r))
                .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
            let pic = match lookup.image_path(id) {
                Some(p) => load_picture(&p).map_err(|reason| format!("{}: {reason}", p.display())),
                None => Err(format!(
                    "{id} is not in catalog {}",
                    req.catalog.source.display()
                )),
            };
            (Target::Item(id.clone()), id.clone(), pic, values.value(row))
        }
        SheetQuery::Image(path) => {
            let model = req.model.ok_or_else(|| {
                Error::Usage(
                    "a query by image needs the index's model (none was given or recorded)".into(),
                )
            })?;
            let pic = load_picture(path).map_err(|reason| Error::Image {
                path: path.clone(),
                reason,
            })?;
            let v = crate::encode::encode_image(model, path, std::slice::from_ref(&req.attr))?;
            notes.push(
                "query is an image file: its value is unknown, results are not framed".into(),
            );
            (
                Target::Vectors(v),
                path.display().to_string(),
                Ok(pic),
                None,
            )
        }
    };
    let hits = query::search(
        ix,
        &Query {
            target,
            attrs: vec![Weighted {
                attr: req.attr.clone(),
                weight: 1.0,
            }],
            k: req.k,
            ef: req.ef,
            exact: req.exact,
            filter: None,
            include_self: false,
        },
    )?;
    if !values.labelled() {
        notes.push(format!(
            "no labels for {:?} in the index or the catalog: results are not framed green/red",
            req.attr
        ));
    } else if matches!(req.query, SheetQuery::Item(_)) && query_value.is_none() {
        notes.push("the query item has no label for this attribute: results are not framed".into());
    }
    if hits.is_empty() {
        notes.push("the search returned no results".into());
    }

    let mut results = Vec::with_capacity(hits.len());
    let mut pics = Vec::with_capacity(hits.len());
    for (i, h) in hits.iter().enumerate() {
        let value = values.value(h.row);
        let same = match (&query_value, &value) {
            (Some((q, _)), Some((v, _))) => Some(q == v),
            _ => None,
        };
        let pic = match lookup.image_path(&h.id) {
            Some(p) => load_picture(&p).map_err(|r| format!("unreadable image: {r}")),
            None => Err("not in the catalog".to_string()),
        };
        results.push(SheetResult {
            rank: i + 1,
            id: h.id.clone(),
            score: h.score,
            value: value.map(|(_, n)| n),
            same_value: same,
            image_problem: pic.as_ref().err().cloned(),
            tile: [0; 4],
        });
        pics.push(pic);
    }
    let missing = results.iter().filter(|r| r.image_problem.is_some()).count();
    if missing > 0 {
        notes.push(format!(
            "{missing} result image(s) could not be shown (grey tiles)"
        ));
    }
    if let Err(problem) = &query_pic {
        notes.push(format!("query image could not be shown: {problem}"));
    }

    let attention = if req.explain {
        let model = req.model.expect("checked above");
        let mut all: Vec<Option<&RgbImage>> = vec![query_pic.as_ref().ok()];
        all.extend(pics.iter().map(|p| p.as_ref().ok()));
        attention_of(model, &req.attr, &all)?
    } else {
        Vec::new()
    };
    let uniform = attention.iter().flatten().any(|a| a.is_uniform());
    if uniform {
        notes.push("this model pools uniformly for the attribute: no attention to overlay".into());
    }

    let judged = results.iter().any(|r| r.same_value.is_some());
    let tile_of = |pic: &std::result::Result<RgbImage, String>| -> Result<RgbImage> {
        match pic {
            Ok(img) => Ok(draw::square_crop(img, 256)),
            Err(reason) => draw::placeholder(256, reason),
        }
    };
    let query_value_name = query_value.as_ref().map(|(_, n)| n.clone());
    let lead = Cell {
        image: tile_of(&query_pic)?,
        overlay: attention.first().cloned().flatten(),
        frame: Some(QUERY),
        lines: vec![
            ("query".to_string(), QUERY),
            (query_label.clone(), INK),
            (
                query_value_name
                    .clone()
                    .map(|v| format!("{}: {v}", req.attr))
                    .unwrap_or_else(|| format!("{}: unknown", req.attr)),
                GREY,
            ),
        ],
    };
    let mut cells = Vec::with_capacity(results.len());
    for (i, (r, pic)) in results.iter().zip(&pics).enumerate() {
        let frame = r.same_value.map(|s| if s { MATCH } else { MISMATCH });
        let mark = match r.same_value {
            Some(true) => " ✓",
            Some(false) => " ✗",
            None => "",
        };
        cells.push(Cell {
            image: tile_of(pic)?,
            overlay: attention.get(i + 1).cloned().flatten(),
            frame,
            lines: vec![
                (
                    format!("#{} {:.4}{mark}", r.rank, r.score),
                    frame.unwrap_or(INK),
                ),
                (r.id.clone(), INK),
                (r.value.clone().unwrap_or_else(|| "unlabelled".into()), GREY),
            ],
        });
    }
    let mut legend = Vec::new();
    if judged {
        legend.push(LegendItem::Swatch(MATCH, format!("same {}", req.attr)));
        legend.push(LegendItem::Swatch(
            MISMATCH,
            format!("different {}", req.attr),
        ));
    } else {
        legend.push(LegendItem::Text("not framed: no ground truth".into()));
    }
    if req.explain && !uniform {
        legend.push(LegendItem::Heat);
    }
    legend.push(LegendItem::Text(if req.exact {
        "exact cosine".into()
    } else {
        format!("HNSW, ef {}", req.ef)
    }));
    let correct = results
        .iter()
        .filter(|r| r.same_value == Some(true))
        .count();
    let title = if judged {
        format!(
            "{} — top {} for {} ({} of {} share its value)",
            req.attr,
            results.len(),
            query_label,
            correct,
            results.len()
        )
    } else {
        format!("{} — top {} for {}", req.attr, results.len(), query_label)
    };
    let grid = Grid {
        title,
        notes: notes.iter().map(|n| (n.clone(), MISMATCH)).collect(),
        lead: Some(lead),
        cells,
        columns: 5,
        legend,
    };
    let (img, boxes, frame_px) = grid.render_with_boxes(req.tile, req.size)?;
    for (r, b) in results.iter_mut().zip(&boxes[1..]) {
        r.tile = *b;
    }
    Ok((
        img,
        SheetSummary {
            attribute: req.attr.clone(),
            query: query_label,
            query_value: query_value_name,
            judged,
            explained: req.explain && !uniform,
            results,
            notes,
            query_tile: boxes[0],
            frame_px,
        },
    ))
}
