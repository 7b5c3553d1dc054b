//! Attention panels (`tailor show attention`): the image, then one panel per attribute
//! (per level, for AG-MAN's two) with the model's spatial attention upsampled over it,
//! as in the ASEN and AG-MAN attention figures.

use std::path::Path;

use candle_core::Tensor;
use image::RgbImage;
use serde::Serialize;

use super::draw::{self, AttentionMap, GREY, INK, MISMATCH};
use super::grid::{Cell, Grid, LegendItem};
use crate::error::{Error, Result};
use crate::model::{self, Model};

/// One panel as drawn.
#[derive(Debug, Clone, Serialize)]
pub struct PanelSummary {
    pub attribute: String,
    pub level: String,
    /// Map size (the backbone map's h x w).
    pub map: [usize; 2],
    /// Largest attention weight and where (row, column of the map).
    pub peak: f32,
    pub peak_at: [usize; 2],
    pub uniform: bool,
}

/// Every level of attention of `img` for each attribute (model order): `[attr][level]`.
pub fn attention_maps(
    model: &Model,
    img: &RgbImage,
    attrs: &[usize],
) -> Result<Vec<Vec<AttentionMap>>> {
    let cfg = model.config();
    let s = cfg.input_size as usize;
    let px = model::preprocess(&image::DynamicImage::ImageRgb8(img.clone()), cfg)?;
    let t = Tensor::from_vec(px, (1, 3, s, s), model.device())?;
    model
        .attention_levels(&t, attrs)?
        .into_iter()
        .map(|levels| {
            levels
                .into_iter()
                .map(|m| {
                    let (_, h, w) = m.dims3()?;
                    Ok(AttentionMap {
                        h,
                        w,
                        values: m.flatten_all()?.to_vec1::<f32>()?,
                    })
                })
                .collect()
        })
        .collect()
}

/// Resolves attribute names against the model (all of them when `names` is empty).
pub fn model_attributes(model: &Model, names: &[String]) -> Result<Vec<usize>> {
    let cfg = model.config();
    if names.is_empty() {
        return Ok((0..cfg.num_attributes()).collect());
    }
    names.iter().map(|n| cfg.attribute_index(n)).collect()
}

/// Draws the panels for an image file.
pub fn attention_sheet(
    model: &Model,
    image: &Path,
    attrs: &[String],
    tile: u32,
    size: Option<(u32, u32)>,
) -> Result<(RgbImage, Vec<PanelSummary>)> {
    let ids = model_attributes(model, attrs)?;
    let img = crate::encode::decode::decode_rgb(image)
        .map_err(|reason| Error::Image {
            path: image.to_path_buf(),
            reason,
        })?
        .to_rgb8();
    let label = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| image.display().to_string());
    panels(model, &img, &label, &ids, tile, size)
}

/// Draws the panels for a decoded image (`label` names it in the title).
pub fn panels(
    model: &Model,
    img: &RgbImage,
    label: &str,
    ids: &[usize],
    tile: u32,
    size: Option<(u32, u32)>,
) -> Result<(RgbImage, Vec<PanelSummary>)> {
    let cfg = model.config();
    let maps = attention_maps(model, img, ids)?;
    let level_names = model.attention_levels_names();
    let base = draw::square_crop(img, 256);
    let lead = Cell {
        image: base.clone(),
        overlay: None,
        frame: None,
        lines: vec![("image".into(), INK), (label.to_string(), GREY)],
    };
    let mut cells = Vec::new();
    let mut summary = Vec::new();
    for (&a, levels) in ids.iter().zip(&maps) {
        for (li, m) in levels.iter().enumerate() {
            let (peak_i, peak) =
                m.values
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
            let uniform = m.is_uniform();
            let level = level_names
                .get(li)
                .copied()
                .unwrap_or("attention")
                .to_string();
            let mut lines = vec![(cfg.attributes[a].clone(), INK)];
            if levels.len() > 1 || uniform {
                lines.push((level.clone(), if uniform { MISMATCH } else { GREY }));
            }
            lines.push((format!("{}x{} map, peak {peak:.3}", m.h, m.w), GREY));
            cells.push(Cell {
                image: base.clone(),
                overlay: Some(m.clone()),
                frame: None,
                lines,
            });
            summary.push(PanelSummary {
                attribute: cfg.attributes[a].clone(),
                level,
                map: [m.h, m.w],
                peak,
                peak_at: [peak_i / m.w.max(1), peak_i % m.w.max(1)],
                uniform,
            });
        }
    }
    let levels = level_names.len();
    let mut notes = Vec::new();
    if summary.iter().all(|p| p.uniform) {
        notes.push((
            format!(
                "{} pools every position evenly: its attention is uniform, nothing to overlay",
                cfg.arch
            ),
            MISMATCH,
        ));
    }
    let grid = Grid {
        title: format!("{} — spatial attention of a {} model", label, cfg.arch),
        notes,
        lead: Some(lead),
        cells,
        // AG-MAN: each attribute's two levels side by side, three attributes a row.
        columns: if levels > 1 { 3 * levels } else { 4 },
        legend: vec![
            LegendItem::Heat,
            LegendItem::Text("each map normalised to its own range".into()),
        ],
    };
    Ok((grid.render(tile, size)?, summary))
}
