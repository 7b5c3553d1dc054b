//! The one path from an image file to embeddings: decode -> pre-process -> model ->
//! one vector per attribute.
//!
//! Below both the batch job ([`crate::embed`], which times the steps and batches many
//! images) and queries (`search --image`, `tailor show`), and the loader of training's
//! image store: a photo is embedded the same way whoever asks. [`model_for_index`] finds
//! the model an index was embedded with, checked against the index's [`ModelRecord`].

pub mod decode;

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::index::{Index, MANIFEST_FILE};
use crate::model::{preprocess, Model, ModelConfig, ModelRecord};

/// Decodes an image and resizes / centre-crops it to the model's input size (8-bit RGB,
/// not normalised: training keeps these and normalises each batch, flips included).
pub fn load_rgb(path: &Path, cfg: &ModelConfig) -> Result<RgbImage> {
    let image_error = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = decode::decode_rgb(path).map_err(image_error)?;
    preprocess::resize_and_crop(&img, cfg.input_size).map_err(|e| image_error(e.to_string()))
}

/// One image's model input (normalised CHW floats) and the time its (decode,
/// pre-process) steps took; the error is the reason the batch job reports.
pub fn load_pixels_timed(
    path: &Path,
    cfg: &ModelConfig,
) -> std::result::Result<(Vec<f32>, Duration, Duration), String> {
    let t = Instant::now();
    let img = decode::decode_rgb(path)?;
    let decoded = t.elapsed();
    let t = Instant::now();
    let px = preprocess(&img, cfg).map_err(|e| format!("cannot pre-process: {e}"))?;
    Ok((px, decoded, t.elapsed()))
}

/// One image's model input (normalised CHW floats).
pub fn load_pixels(path: &Path, cfg: &ModelConfig) -> Result<Vec<f32>> {
    load_pixels_timed(path, cfg)
        .map(|(px, _, _)| px)
        .map_err(|reason| Error::Image {
            path: path.to_path_buf(),
            reason,
        })
}

/// A batch of model inputs (`n` images' CHW floats, back to back) as a tensor.
pub fn pixels_tensor(
    pixels: Vec<f32>,
    n: usize,
    cfg: &ModelConfig,
    device: &Device,
) -> Result<Tensor> {
    let s = cfg.input_size as usize;
    Ok(Tensor::from_vec(pixels, (n, 3, s, s), device)?)
}

/// Embeddings of a batch of model inputs for attribute positions `attrs`: per image, one
/// vector per attribute.
pub fn embed_pixels(model: &Model, pixels: &Tensor, attrs: &[usize]) -> Result<Vec<Tensor>> {
    model.embed(pixels, attrs)
}

/// Embeds one image file for the given attributes (names): one vector per attribute.
pub fn encode_image(model: &Model, image: &Path, attributes: &[String]) -> Result<Vec<Vec<f32>>> {
    let cfg = model.config();
    let ids = attributes
        .iter()
        .map(|a| cfg.attribute_index(a))
        .collect::<Result<Vec<_>>>()?;
    let px = load_pixels(image, cfg)?;
    let t = pixels_tensor(px, 1, cfg, model.device())?;
    embed_pixels(model, &t, &ids)?
        .into_iter()
        .map(|v| Ok(v.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

/// Loads the model that embedded an index: `model_path` when given, else the path
/// recorded in the index manifest; refuses a model whose identity differs from the one
/// recorded (its vectors would live in another space).
pub fn model_for_index(index: &Index, model_path: Option<&Path>, device: &Device) -> Result<Model> {
    let manifest = index.dir().join(MANIFEST_FILE);
    let record = ModelRecord::from_json(index.model(), &manifest)?.ok_or_else(|| {
        Error::invalid(
            index.dir(),
            "the index records no model (built from vectors); query it by item or by vector",
        )
    })?;
    let path = match (model_path, &record.path) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(Error::invalid(
                index.dir(),
                "the index records no model path; give the model file",
            ))
        }
    };
    let model = Model::load(&path, device)?;
    let expected = record.identity.as_deref().unwrap_or("");
    let found = model.identity()?;
    if found != expected {
        return Err(Error::invalid(
            &path,
            format!(
                "model identity {found} differs from {}, the model that embedded {}",
                ModelRecord::identity_text(Some(&record)),
                index.dir().display()
            ),
        ));
    }
    Ok(model)
}
