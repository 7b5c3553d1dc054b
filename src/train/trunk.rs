//! The trunk before training: pretrained weights copied in, batch-norm statistics
//! calibrated on training images, and the frozen trunk's feature cache.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use crate::progress::ProgressMode;

use super::cache::{self, FeatureCache};
use super::data::ImageStore;

/// Copies backbone tensors (torchvision names, optionally with the model's prefix) from a
/// safetensors file into the model; every backbone variable must be found with its shape.
pub(super) fn load_backbone(
    varmap: &VarMap,
    cfg: &ModelConfig,
    path: &Path,
    device: &Device,
) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::invalid(path, format!("cannot read safetensors: {e}")))?;
    let prefix = format!("{}.", cfg.arch.backbone_prefix());
    let data = varmap.data().lock().expect("varmap lock");
    let mut missing = Vec::new();
    let mut loaded = 0usize;
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with(&prefix)) {
        let short = &name[prefix.len()..];
        let candidates = [
            short.to_string(),
            name.clone(),
            format!("embeddingnet.{name}"),
            format!("module.{short}"),
        ];
        match candidates.iter().find_map(|c| tensors.get(c)) {
            Some(t) if t.dims() == var.dims() => {
                var.set(&t.to_dtype(DType::F32)?)?;
                loaded += 1;
            }
            Some(t) => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "{short}: shape {:?}, the model needs {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ))
            }
            // AG-MAN's own additions to the trunk are not in an ImageNet checkpoint.
            None if short.starts_with("conv1_1.") || short.starts_with("fc_embed.") => {}
            None => missing.push(short.to_string()),
        }
    }
    if !missing.is_empty() || loaded == 0 {
        missing.sort();
        return Err(Error::invalid(
            path,
            format!(
                "backbone tensors missing ({} of {}): {}",
                missing.len(),
                missing.len() + loaded,
                missing
                    .iter()
                    .take(8)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}

/// Training images whose batch statistics set a fresh frozen trunk's running statistics.
pub(super) const CALIBRATION_IMAGES: usize = 2048;
const CALIBRATION_BATCH: usize = 32;

/// Whether every batch norm of the trunk still has its initial statistics (mean 0, var 1).
pub(super) fn batch_norm_is_initial(varmap: &VarMap, cfg: &ModelConfig) -> Result<bool> {
    let prefix = format!("{}.", cfg.arch.backbone_prefix());
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with(&prefix)) {
        let want = if name.ends_with(".running_mean") {
            0.0
        } else if name.ends_with(".running_var") {
            1.0
        } else {
            continue;
        };
        let v = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|&x| x != want) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs training-mode forwards over evenly spaced training images so that the trunk's
/// running statistics (momentum 0.1, 64 batches: the initial values keep < 0.2 % weight)
/// describe the data. Nothing else changes: no gradient, no optimiser step.
pub(super) fn calibrate_batch_norm(
    model: &Model,
    catalog: &Catalog,
    train_items: &[usize],
    progress: ProgressMode,
) -> Result<()> {
    let n = CALIBRATION_IMAGES.min(train_items.len());
    let picked: Vec<usize> = (0..n)
        .map(|i| train_items[i * train_items.len() / n])
        .collect();
    let store = ImageStore::load(catalog, &picked, model.config(), progress)?;
    for chunk in picked.chunks(CALIBRATION_BATCH) {
        let images = store.batch(chunk, &vec![false; chunk.len()], model.device())?;
        model.backbone_forward(&images, true)?;
    }
    Ok(())
}

/// Fingerprint of the backbone's weights (cache key).
pub(super) fn backbone_key(varmap: &VarMap, cfg: &ModelConfig) -> Result<u64> {
    let prefix = format!("{}.", cfg.arch.backbone_prefix());
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().filter(|n| n.starts_with(&prefix)).collect();
    names.sort();
    let mut h = crc32fast::Hasher::new();
    h.update(&cfg.input_size.to_le_bytes());
    h.update(
        serde_json::to_string(&cfg.backbone)
            .unwrap_or_default()
            .as_bytes(),
    );
    let mut h2 = crc32fast::Hasher::new();
    for n in names {
        // Without the prefix: trunks with the same weights share a cache whatever the
        // architecture calls them (`backbonenet.` / `embeddingnet.`).
        h.update(&n.as_bytes()[prefix.len()..]);
        let v = data[n].as_tensor().flatten_all()?.to_vec1::<f32>()?;
        h2.update(bytemuck::cast_slice(&v));
    }
    Ok(((h.finalize() as u64) << 32) | h2.finalize() as u64)
}

pub(super) fn build_cache(
    model: &Model,
    varmap: &VarMap,
    catalog: &Catalog,
    items: &[usize],
    path: &Path,
    progress: ProgressMode,
) -> Result<FeatureCache> {
    let cfg = model.config();
    let key = backbone_key(varmap, cfg)?;
    if let Some(c) = FeatureCache::open(path, key, items, catalog.items.len())? {
        return Ok(c);
    }
    let store = ImageStore::load(catalog, items, cfg, progress)?;
    let device = model.device().clone();
    let s = cfg.input_size as usize;
    let probe = Tensor::zeros((1, 3, s, s), DType::F32, &device)?;
    let dims: [usize; 3] = match model.backbone_forward(&probe, false)?.map.dims() {
        [_, c, h, w] => [*c, *h, *w],
        d => return Err(Error::Usage(format!("unexpected backbone map shape {d:?}"))),
    };
    let spec = cache::CacheSpec {
        key,
        items,
        catalog_items: catalog.items.len(),
        dims,
    };
    FeatureCache::build(
        path,
        &spec,
        32,
        |chunk, flip| {
            let images = store.batch(chunk, &vec![flip; chunk.len()], &device)?;
            let map = model.backbone_forward(&images, false)?.map;
            Ok(map.flatten_all()?.to_vec1::<f32>()?)
        },
        progress,
    )
}
