//! Training the ASEN family from a labelled catalog: triplet sampling ([`sampling`]),
//! the margin ranking loss and AG-MAN's classification loss and weighting ([`loss`]), Adam
//! with a resumable state ([`adam`]), step decay, batch norm trained in training mode, a
//! frozen-backbone feature cache ([`cache`]), validation MAP after every epoch, the best
//! and the last model, a per-epoch log, and resuming a stopped run.
//!
//! Files written beside `out` (`M.safetensors`): `M.safetensors` (the best model by
//! validation MAP; the last one when the catalog has no validation lists), `M.last.safetensors`,
//! `M.train.json` (options, progress, log), `M.train-state.safetensors` (Adam moments and
//! AG-MAN's loss weights), `M.log.csv` and `M.log.jsonl`, and with a frozen backbone
//! `M.features.cache`.
//!
//! Determinism: every epoch's triplets and flips come from an RNG seeded by (seed, epoch),
//! the model from `Model::init(seed)`, and all state needed to continue is on disk after
//! each epoch, so a run stopped after epoch k and resumed gives the same files as a run
//! that never stopped (CPU, same thread count).

pub mod adam;
pub mod cache;
pub mod data;
pub mod head;
pub mod loss;
pub mod sampling;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::model::{Arch, BackboneConfig, Head, Model, ModelConfig};
use crate::progress::ProgressMode;

use adam::{Adam, AdamParams};
use cache::FeatureCache;
use data::ImageStore;
use loss::{bce_with_logits, one_hot, triplet_loss, LossWeighting};
use sampling::{epoch_rng, Triplet, TripletSampler};

pub use validate::{evaluate, SplitMap};

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
    fn check(&self) -> Result<()> {
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

/// One epoch's record in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub triplet_loss: f64,
    /// Fraction of the epoch's triplets with `s_pos > s_neg` (before each step).
    pub triplet_accuracy: f64,
    pub triplets: usize,
    pub seconds: f64,
    pub triplets_per_second: f64,
    pub images_per_second: f64,
    /// Validation MAP (%) overall and per attribute, when validated.
    pub valid_map: Option<f64>,
    pub valid_map_per_attribute: BTreeMap<String, f64>,
    /// Whether this epoch's model became the best one.
    pub best: bool,
    /// AG-MAN's loss weights (w_cls, w_triplet) after the epoch.
    pub loss_weights: Option<(f32, f32)>,
}

/// Progress within an epoch, for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchProgress {
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    pub done: usize,
    pub total: usize,
    /// Running means over the epoch so far.
    pub loss: f64,
    pub triplet_accuracy: f64,
    pub images_per_second: f64,
    /// Seconds left for the whole run (training only).
    pub eta_seconds: f64,
}

/// What training reports while it runs.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// A phase (decoding, cache building, validation) started.
    Phase(String),
    Batch(BatchProgress),
    Epoch(EpochLog),
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub arch: Arch,
    pub best_model: PathBuf,
    pub last_model: PathBuf,
    pub log_csv: PathBuf,
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    pub best_valid_map: Option<f64>,
    pub parameters_trained: usize,
    pub seconds: f64,
    /// Seconds spent building the feature cache (frozen backbone only).
    pub cache_seconds: Option<f64>,
    /// Whether a fresh frozen trunk's batch-norm statistics were set from training images.
    pub bn_recalibrated: bool,
    pub resumed_from_epoch: Option<usize>,
    pub log: Vec<EpochLog>,
}

/// The files of a run, named after the output model path.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub best: PathBuf,
    pub last: PathBuf,
    pub state_json: PathBuf,
    pub state_tensors: PathBuf,
    pub log_csv: PathBuf,
    pub log_jsonl: PathBuf,
    pub cache: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path) -> Self {
        let stem = match out.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => out.with_extension(""),
            _ => out.to_path_buf(),
        };
        let with = |suffix: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        RunFiles {
            best: out.to_path_buf(),
            last: with(".last.safetensors"),
            state_json: with(".train.json"),
            state_tensors: with(".train-state.safetensors"),
            log_csv: with(".log.csv"),
            log_jsonl: with(".log.jsonl"),
            cache: with(".features.cache"),
        }
    }
}

/// Progress saved after each epoch (`M.train.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    format: u32,
    options: TrainOptions,
    epochs_done: usize,
    adam_steps: u64,
    best_epoch: Option<usize>,
    best_valid_map: Option<f64>,
    log: Vec<EpochLog>,
}

const STATE_FORMAT: u32 = 1;
const FLIP_STREAM: u64 = 0xf11b;

/// Trains a model on `catalog` and writes it to `out` (plus the run's other files).
/// With `resume`, continues the run whose files sit beside `out`.
pub fn train(
    catalog: &Catalog,
    opts: &TrainOptions,
    out: &Path,
    resume: bool,
    device: &Device,
    progress: ProgressMode,
    report: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainSummary> {
    let start = Instant::now();
    opts.check()?;
    let files = RunFiles::new(out);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let state = if resume {
        Some(read_state(&files, opts)?)
    } else {
        None
    };

    let train_items = catalog.splits.items.get("train").ok_or_else(|| {
        Error::invalid(
            &catalog.source,
            "the catalog has no train split to learn from",
        )
    })?;
    let sampler = match opts.triplets {
        TripletSource::Labels => TripletSampler::from_labels(catalog, train_items, opts.seed)?,
        TripletSource::Lists => TripletSampler::from_lists(catalog, "train", opts.seed)?,
        TripletSource::Auto if catalog.triplets.iter().any(|l| l.split == "train") => {
            TripletSampler::from_lists(catalog, "train", opts.seed)?
        }
        TripletSource::Auto => TripletSampler::from_labels(catalog, train_items, opts.seed)?,
    };

    // The model: resumed, given, or fresh; then rebuilt on a VarMap for training.
    let base = match (&state, &opts.init_model) {
        (Some(_), _) => Model::load(&files.last, device)?,
        (None, Some(path)) => Model::load(path, device)?,
        (None, None) => Model::init(model_config(catalog, opts)?, opts.seed, device)?,
    };
    check_schema(base.config(), catalog)?;
    let varmap = VarMap::new();
    let model = base.trainable(&varmap)?;
    drop(base);
    let cfg = model.config().clone();
    if state.is_none() {
        if let Some(path) = &opts.backbone_init {
            load_backbone(&varmap, &cfg, path, device)?;
        }
    }

    let valid = if opts.validate {
        validate::ValidSet::new(catalog, "valid")?
    } else {
        None
    };
    let mut trainer = Trainer::new(&model, &varmap, opts, device)?;
    if let Some(st) = &state {
        trainer.load_state(&files.state_tensors, st.adam_steps)?;
    }

    // Images, or cached backbone maps.
    let mut cache_seconds = None;
    let mut needed = sampler.items();
    if let Some(v) = &valid {
        needed.extend(v.items());
        needed.sort_unstable();
        needed.dedup();
    }
    let mut bn_recalibrated = false;
    if opts.freeze_backbone && state.is_none() && batch_norm_is_initial(&varmap, &cfg)? {
        // A fresh (not pretrained) trunk frozen with identity batch-norm statistics gives
        // badly scaled maps (activations grow through the residual blocks and saturate the
        // heads' tanh/sigmoid). Its statistics are set from training images first.
        report(&TrainEvent::Phase(format!(
            "batch-norm statistics of the fresh trunk from {} training images",
            CALIBRATION_IMAGES.min(train_items.len())
        )));
        calibrate_batch_norm(&model, catalog, &sampler.items(), progress)?;
        bn_recalibrated = true;
    }
    if opts.freeze_backbone {
        let t0 = Instant::now();
        report(&TrainEvent::Phase(format!(
            "feature cache for {} images (x2 flips)",
            needed.len()
        )));
        let path = opts.feature_cache.as_ref().unwrap_or(&files.cache);
        trainer.cache = Some(build_cache(
            &model, &varmap, catalog, &needed, path, progress,
        )?);
        cache_seconds = Some(t0.elapsed().as_secs_f64());
    } else {
        report(&TrainEvent::Phase(format!(
            "decoding {} images",
            needed.len()
        )));
        trainer.images = Some(ImageStore::load(catalog, &needed, &cfg, progress)?);
    }

    let mut log = state.as_ref().map(|s| s.log.clone()).unwrap_or_default();
    let mut best_epoch = state.as_ref().and_then(|s| s.best_epoch);
    let mut best_map = state.as_ref().and_then(|s| s.best_valid_map);
    let first_epoch = state.as_ref().map_or(0, |s| s.epochs_done);
    let run_start = Instant::now();
    let mut trained_triplets = 0usize;
    let total_triplets = (opts.epochs.saturating_sub(first_epoch)) * opts.triplets_per_epoch;

    for epoch in first_epoch..opts.epochs {
        let epoch_start = Instant::now();
        let lr = opts.learning_rate(epoch);
        trainer.adam.set_learning_rate(lr);
        let triplets = sampler.epoch(epoch, opts.triplets_per_epoch);
        let mut flip_rng = epoch_rng(opts.seed, epoch, FLIP_STREAM);
        let flips: Vec<bool> = (0..3 * triplets.len())
            .map(|_| rand::Rng::gen_bool(&mut flip_rng, 0.5))
            .collect();
        let (mut loss_sum, mut tloss_sum, mut correct, mut done) = (0.0, 0.0, 0usize, 0usize);
        for (b, chunk) in triplets.chunks(opts.batch).enumerate() {
            let f = &flips[3 * b * opts.batch..3 * b * opts.batch + 3 * chunk.len()];
            let s = trainer.step(chunk, f)?;
            loss_sum += s.loss * chunk.len() as f64;
            tloss_sum += s.triplet_loss * chunk.len() as f64;
            correct += s.correct;
            done += chunk.len();
            trained_triplets += chunk.len();
            let rate = trained_triplets as f64 / run_start.elapsed().as_secs_f64().max(1e-9);
            report(&TrainEvent::Batch(BatchProgress {
                epoch: epoch + 1,
                epochs: opts.epochs,
                done,
                total: triplets.len(),
                loss: loss_sum / done as f64,
                triplet_accuracy: correct as f64 / done as f64,
                images_per_second: 3.0 * rate,
                eta_seconds: (total_triplets - trained_triplets) as f64 / rate,
            }));
        }
        let seconds = epoch_start.elapsed().as_secs_f64();

        let (valid_map, per_attr) = match &valid {
            Some(v) => {
                report(&TrainEvent::Phase("validation".into()));
                let m = v.evaluate(&trainer.embedder(), device)?;
                (Some(m.overall), m.per_attribute_named(&cfg.attributes))
            }
            None => (None, BTreeMap::new()),
        };
        let is_best = match (valid_map, best_map) {
            (Some(m), Some(b)) => m > b,
            (Some(_), None) => true,
            (None, _) => true,
        };
        save_model(&model, &files.last)?;
        if is_best {
            save_model(&model, &files.best)?;
            best_epoch = Some(epoch + 1);
            best_map = valid_map;
        }
        let entry = EpochLog {
            epoch: epoch + 1,
            lr,
            loss: loss_sum / done as f64,
            triplet_loss: tloss_sum / done as f64,
            triplet_accuracy: correct as f64 / done as f64,
            triplets: done,
            seconds,
            triplets_per_second: done as f64 / seconds.max(1e-9),
            images_per_second: 3.0 * done as f64 / seconds.max(1e-9),
            valid_map,
            valid_map_per_attribute: per_attr,
            best: is_best,
            loss_weights: trainer.weighting.as_ref().map(|w| w.values()).transpose()?,
        };
        log.push(entry.clone());
        trainer.save_state(&files.state_tensors)?;
        write_state(
            &files,
            &TrainState {
                format: STATE_FORMAT,
                options: opts.clone(),
                epochs_done: epoch + 1,
                adam_steps: trainer.adam.steps(),
                best_epoch,
                best_valid_map: best_map,
                log: log.clone(),
            },
        )?;
        write_logs(&files, &log, &cfg.attributes)?;
        report(&TrainEvent::Epoch(entry));
    }

    Ok(TrainSummary {
        arch: cfg.arch,
        best_model: files.best.clone(),
        last_model: files.last.clone(),
        log_csv: files.log_csv.clone(),
        epochs: opts.epochs,
        best_epoch,
        best_valid_map: best_map,
        parameters_trained: trainer.adam.parameter_count(),
        seconds: start.elapsed().as_secs_f64(),
        cache_seconds,
        bn_recalibrated,
        resumed_from_epoch: state.map(|s| s.epochs_done),
        log,
    })
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

fn check_schema(cfg: &ModelConfig, catalog: &Catalog) -> Result<()> {
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

/// Copies backbone tensors (torchvision names, optionally with the model's prefix) from a
/// safetensors file into the model; every backbone variable must be found with its shape.
fn load_backbone(varmap: &VarMap, cfg: &ModelConfig, path: &Path, device: &Device) -> Result<()> {
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
const CALIBRATION_IMAGES: usize = 2048;
const CALIBRATION_BATCH: usize = 32;

/// Whether every batch norm of the trunk still has its initial statistics (mean 0, var 1).
fn batch_norm_is_initial(varmap: &VarMap, cfg: &ModelConfig) -> Result<bool> {
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
fn calibrate_batch_norm(
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
fn backbone_key(varmap: &VarMap, cfg: &ModelConfig) -> Result<u64> {
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

fn build_cache(
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

fn save_model(model: &Model, path: &Path) -> Result<()> {
    crate::fsio::atomic_write_path(path, |tmp| model.save(tmp))
}

fn read_state(files: &RunFiles, opts: &TrainOptions) -> Result<TrainState> {
    let path = &files.state_json;
    let text = std::fs::read_to_string(path).at(path)?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| Error::corrupted(path, format!("not a training state: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(Error::IncompatibleVersion {
            path: path.clone(),
            found: state.format,
            supported: STATE_FORMAT.to_string(),
            hint: "start the run again instead of resuming it".into(),
        });
    }
    // Everything but the epoch count must match the stopped run.
    let mut same = opts.clone();
    same.epochs = state.options.epochs;
    if same != state.options {
        return Err(Error::Usage(format!(
            "{}: resuming needs the options of the stopped run (only the epoch count may change); \
             the run used {}",
            path.display(),
            serde_json::to_string(&state.options).unwrap_or_default()
        )));
    }
    if state.epochs_done >= opts.epochs {
        return Err(Error::Usage(format!(
            "{}: the run already finished {} epochs; ask for more epochs to continue it",
            path.display(),
            state.epochs_done
        )));
    }
    Ok(state)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::atomic_write(path, bytes)
}

fn write_state(files: &RunFiles, state: &TrainState) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomic(&files.state_json, &json)
}

fn write_logs(files: &RunFiles, log: &[EpochLog], attributes: &[String]) -> Result<()> {
    let mut csv = String::from(
        "epoch,lr,loss,triplet_loss,triplet_accuracy,triplets,seconds,triplets_per_second,\
         images_per_second,valid_map,best",
    );
    for a in attributes {
        csv.push_str(&format!(",valid_map_{a}"));
    }
    csv.push('\n');
    let mut jsonl = String::new();
    for e in log {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
        csv.push_str(&format!(
            "{},{:.4e},{:.6},{:.6},{:.4},{},{:.2},{:.1},{:.1},{},{}",
            e.epoch,
            e.lr,
            e.loss,
            e.triplet_loss,
            e.triplet_accuracy,
            e.triplets,
            e.seconds,
            e.triplets_per_second,
            e.images_per_second,
            opt(e.valid_map),
            e.best
        ));
        for a in attributes {
            csv.push(',');
            csv.push_str(&opt(e.valid_map_per_attribute.get(a).copied()));
        }
        csv.push('\n');
        jsonl.push_str(&serde_json::to_string(e).map_err(|e| Error::Usage(e.to_string()))?);
        jsonl.push('\n');
    }
    write_atomic(&files.log_csv, csv.as_bytes())?;
    write_atomic(&files.log_jsonl, jsonl.as_bytes())
}

/// Loss and accuracy of one optimisation step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub triplet_loss: f64,
    pub correct: usize,
}

/// The optimisation state of a run: what is trained, how, and from what inputs.
pub struct Trainer<'m> {
    model: &'m Model,
    /// The head alone (frozen backbone: trained from cached maps).
    head: Option<Head>,
    adam: Adam,
    weighting: Option<LossWeighting>,
    margin: f64,
    num_attributes: usize,
    device: Device,
    pub images: Option<ImageStore>,
    pub cache: Option<FeatureCache>,
}

impl<'m> Trainer<'m> {
    /// `model` must have been built on `varmap` ([`Model::trainable`]).
    pub fn new(
        model: &'m Model,
        varmap: &VarMap,
        opts: &TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        let cfg = model.config();
        let prefix = format!("{}.", cfg.arch.backbone_prefix());
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .filter(|(n, _)| !n.ends_with(".running_mean") && !n.ends_with(".running_var"))
            .filter(|(n, _)| !(opts.freeze_backbone && n.starts_with(&prefix)))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let head = if opts.freeze_backbone {
            let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
            Some(Head::new(cfg, vb)?)
        } else {
            None
        };
        // AG-MAN's classification branch lives in the trunk: with a frozen trunk its
        // logits are constants, so only the triplet loss trains the head.
        let weighting = if cfg.arch == Arch::AgMan && !opts.freeze_backbone {
            let w = LossWeighting::new(device)?;
            vars.extend(w.vars());
            Some(w)
        } else {
            None
        };
        let adam = Adam::new(
            vars,
            AdamParams {
                lr: opts.lr,
                ..Default::default()
            },
        )?;
        Ok(Trainer {
            model,
            head,
            adam,
            weighting,
            margin: opts.margin,
            num_attributes: cfg.num_attributes(),
            device: device.clone(),
            images: None,
            cache: None,
        })
    }

    /// The loss of a batch of triplets (flips: 3 per triplet, anchors then negatives then
    /// positives), in training mode.
    pub fn batch_loss(&self, triplets: &[Triplet], flips: &[bool]) -> Result<(Tensor, StepStats)> {
        let b = triplets.len();
        let items: Vec<usize> = triplets
            .iter()
            .map(|t| t.anchor)
            .chain(triplets.iter().map(|t| t.negative))
            .chain(triplets.iter().map(|t| t.positive))
            .collect();
        let attrs: Vec<usize> = (0..3)
            .flat_map(|_| triplets.iter().map(|t| t.attribute))
            .collect();
        let attr_ids = Tensor::from_vec(
            attrs.iter().map(|&a| a as u32).collect::<Vec<_>>(),
            3 * b,
            &self.device,
        )?;
        let (emb, logits) = match (&self.head, &self.cache, &self.images) {
            (Some(head), Some(cache), _) => {
                let maps = cache.gather(&items, flips, &self.device)?;
                (head.forward_t(&maps, &attr_ids, true)?.embeddings, None)
            }
            (None, _, Some(store)) => {
                let images = store.batch(&items, flips, &self.device)?;
                let out = self.model.forward_t(&images, &attr_ids, true)?;
                (out.embeddings, out.logits)
            }
            _ => {
                return Err(Error::Usage(
                    "the trainer has no inputs (images or feature cache)".into(),
                ))
            }
        };
        let tl = triplet_loss(
            &emb.narrow(0, 0, b)?,
            &emb.narrow(0, b, b)?,
            &emb.narrow(0, 2 * b, b)?,
            self.margin,
        )?;
        let triplet_value = tl.loss.to_scalar::<f32>()? as f64;
        let loss = match (&self.weighting, logits) {
            (Some(w), Some(logits)) => {
                let targets = one_hot(&attrs, self.num_attributes, &self.device)?;
                let cls = bce_with_logits(&logits, &targets)?;
                w.combine(&cls, &tl.loss)?
            }
            _ => tl.loss,
        };
        let stats = StepStats {
            loss: loss.to_scalar::<f32>()? as f64,
            triplet_loss: triplet_value,
            correct: tl.correct,
        };
        Ok((loss, stats))
    }

    /// One Adam step on a batch; returns the loss before the step.
    pub fn step(&mut self, triplets: &[Triplet], flips: &[bool]) -> Result<StepStats> {
        let (loss, stats) = self.batch_loss(triplets, flips)?;
        if !stats.loss.is_finite() {
            return Err(Error::Usage(format!(
                "the loss became {} at optimiser step {}: lower the learning rate",
                stats.loss,
                self.adam.steps() + 1
            )));
        }
        let grads = loss.backward()?;
        self.adam.step(&grads)?;
        Ok(stats)
    }

    /// Something that embeds items in eval mode (for validation).
    fn embedder(&self) -> validate::Embedder<'_> {
        match (&self.head, &self.cache) {
            (Some(head), Some(cache)) => validate::Embedder::Cached { head, cache },
            _ => validate::Embedder::Images {
                model: self.model,
                store: self.images.as_ref().expect("images loaded when not cached"),
            },
        }
    }

    fn save_state(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = self.adam.state_tensors();
        if let Some(w) = &self.weighting {
            for (n, v) in w.vars() {
                tensors.insert(n, v.as_tensor().clone());
            }
        }
        crate::fsio::atomic_write_path(path, |tmp| {
            Ok(candle_core::safetensors::save(&tensors, tmp)?)
        })
    }

    fn load_state(&mut self, path: &Path, steps: u64) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| Error::corrupted(path, e.to_string()))?;
        if let Some(w) = &self.weighting {
            for (n, v) in w.vars() {
                let t = tensors
                    .get(&n)
                    .ok_or_else(|| Error::corrupted(path, format!("no {n}")))?;
                v.set(t)?;
            }
        }
        self.adam
            .load_state(&tensors, steps)
            .map_err(|e| Error::corrupted(path, e.to_string()))
    }
}
