//! Everything that defines a training run: its options, and the model configuration a
//! fresh run starts from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::model::{Arch, BackboneConfig, ModelConfig};

use super::loss;

/// Where triplets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TripletSource {
    /// The catalog's train triplet lists when it has them, else drawn from labels.
    Auto,
    /// Drawn from labels (the papers' procedure).
    Labels,
    /// The catalog's train triplet lists (Zappos format).
    Lists,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub arch: Arch,
    pub backbone: BackboneConfig,
    /// Input side in pixels (default: the backbone's, 224 for ResNet-50, 64 for tiny).
    pub input_size: Option<u32>,
    /// Width of the attention spaces (default: 512 for ResNet-50, 16 for tiny).
    pub hidden_dim: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub margin: f64,
    pub triplets_per_epoch: usize,
    /// Learning rate times `decay` every `step_size` epochs.
    pub step_size: usize,
    pub decay: f64,
    pub seed: u64,
    /// Train the heads only, from cached backbone maps.
    pub freeze_backbone: bool,
    /// Backbone weights (torchvision names, safetensors) to start from.
    pub backbone_init: Option<PathBuf>,
    /// A tailor model file to start from instead of a fresh initialisation.
    pub init_model: Option<PathBuf>,
    pub triplets: TripletSource,
    /// Validation MAP after each epoch (needs the catalog's "valid" lists).
    pub validate: bool,
    /// Feature cache file (default `M.features.cache` beside the output). Runs whose
    /// backbones have the same weights can share one: the file is keyed by them.
    #[serde(default)]
    pub feature_cache: Option<PathBuf>,
}

impl Default for TrainOptions {
    /// The ASEN recipe (Adam 1e-4, batch 16, margin 0.2, step 1, gamma 0.985) on the tiny
    /// backbone, with a CPU-sized budget.
    fn default() -> Self {
        TrainOptions {
            arch: Arch::Asen,
            backbone: BackboneConfig::tiny(),
            input_size: None,
            hidden_dim: None,
            epochs: 10,
            batch: 16,
            lr: 1e-4,
            margin: loss::DEFAULT_MARGIN,
            triplets_per_epoch: 10_000,
            step_size: 1,
            decay: 0.985,
            seed: 0,
            freeze_backbone: false,
            backbone_init: None,
            init_model: None,
            triplets: TripletSource::Auto,
            validate: true,
            feature_cache: None,
        }
    }
}

impl TrainOptions {
    pub(super) fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(m));
        if self.epochs == 0 || self.batch == 0 || self.triplets_per_epoch == 0 {
            return bad("epochs, batch and triplets per epoch must be positive".into());
        }
        if self.step_size == 0 {
            return bad("the learning-rate step size must be at least 1 epoch".into());
        }
        let lr_ok = self.lr > 0.0 && self.lr.is_finite();
        if !lr_ok || self.decay.is_nan() || self.decay <= 0.0 || self.decay > 1.0 {
            return bad(format!(
                "learning rate must be positive and decay in (0, 1], got {} and {}",
                self.lr, self.decay
            ));
        }
        if self.margin.is_nan() || self.margin < 0.0 {
            return bad(format!("margin must be non-negative, got {}", self.margin));
        }
        Ok(())
    }

    /// Learning rate of a 0-based epoch.
    pub fn learning_rate(&self, epoch: usize) -> f64 {
        self.lr * self.decay.powi((epoch / self.step_size) as i32)
    }
}

/// The model configuration for a fresh run on this catalog.
pub fn model_config(catalog: &Catalog, opts: &TrainOptions) -> Result<ModelConfig> {
    let attrs = &catalog.schema.attributes;
    let mut cfg = ModelConfig::new(
        opts.arch,
        opts.backbone.clone(),
        attrs.iter().map(|a| a.name.clone()).collect(),
        attrs.iter().map(|a| a.values.clone()).collect(),
    );
    if let Some(s) = opts.input_size {
        cfg.input_size = s;
    }
    if let Some(h) = opts.hidden_dim {
        cfg.hidden_dim = h;
        if cfg.arch == Arch::AgMan {
            cfg.embed_dim = h;
        }
    }
    cfg.validate("training options")?;
    Ok(cfg)
}

pub(super) fn check_schema(cfg: &ModelConfig, catalog: &Catalog) -> Result<()> {
    let names = catalog.schema.names();
    if cfg.attributes != names {
        return Err(Error::invalid(
            &catalog.source,
            format!(
                "the model's attributes ({}) differ from the catalog's ({})",
                cfg.attributes.join(", "),
                names.join(", ")
            ),
        ));
    }
    Ok(())
}
