//! Training images in memory: each image decoded, resized and centre-cropped once (the
//! model's pre-processing), kept as 8-bit RGB; batches are normalised on the fly with
//! an optional horizontal flip per image.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::progress::{Progress, ProgressMode};

const ABSENT: u32 = u32::MAX;

/// Pre-processed images of a set of catalog items.
pub struct ImageStore {
    size: usize,
    /// Catalog item -> row (ABSENT when not loaded).
    rows: Vec<u32>,
    /// Rows of `size * size * 3` bytes, HWC.
    pixels: Vec<u8>,
    mean: [f32; 3],
    std: [f32; 3],
}

impl ImageStore {
    /// Decodes `items` (catalog indices) with the model's pre-processing.
    pub fn load(
        catalog: &Catalog,
        items: &[usize],
        cfg: &ModelConfig,
        progress: ProgressMode,
    ) -> Result<Self> {
        let size = cfg.input_size as usize;
        let bar = Progress::new("decode images", items.len() as u64, progress);
        let decoded: Vec<Vec<u8>> = items
            .par_iter()
            .map(|&item| {
                // The same path as embedding: a photo is trained as it will be indexed.
                let rgb = crate::encode::load_rgb(&catalog.image_path(item), cfg)?;
                bar.inc(1);
                Ok(rgb.into_raw())
            })
            .collect::<Result<_>>()?;
        bar.finish();
        let mut rows = vec![ABSENT; catalog.items.len()];
        let mut pixels = Vec::with_capacity(items.len() * size * size * 3);
        for (row, (&item, px)) in items.iter().zip(decoded).enumerate() {
            rows[item] = row as u32;
            pixels.extend_from_slice(&px);
        }
        Ok(ImageStore {
            size,
            rows,
            pixels,
            mean: cfg.mean,
            std: cfg.std,
        })
    }

    pub fn contains(&self, item: usize) -> bool {
        self.rows.get(item).is_some_and(|&r| r != ABSENT)
    }

    /// Normalised CHW floats of one item, mirrored left-right when `flip`.
    pub fn write_chw(&self, item: usize, flip: bool, out: &mut [f32]) -> Result<()> {
        let row = match self.rows.get(item) {
            Some(&r) if r != ABSENT => r as usize,
            _ => {
                return Err(Error::Usage(format!(
                    "item {item} was not loaded for training"
                )))
            }
        };
        let s = self.size;
        let plane = s * s;
        let px = &self.pixels[row * plane * 3..(row + 1) * plane * 3];
        for y in 0..s {
            for x in 0..s {
                let src = if flip { s - 1 - x } else { x };
                let p = &px[(y * s + src) * 3..(y * s + src) * 3 + 3];
                for c in 0..3 {
                    out[c * plane + y * s + x] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
                }
            }
        }
        Ok(())
    }

    /// `[B, 3, s, s]` normalised batch of `items`, image i mirrored when `flips[i]`.
    pub fn batch(&self, items: &[usize], flips: &[bool], device: &Device) -> Result<Tensor> {
        let s = self.size;
        let per = 3 * s * s;
        let mut data = vec![0f32; items.len() * per];
        for (i, (&item, &flip)) in items.iter().zip(flips).enumerate() {
            self.write_chw(item, flip, &mut data[i * per..(i + 1) * per])?;
        }
        Ok(Tensor::from_vec(data, (items.len(), 3, s, s), device)?)
    }
}
