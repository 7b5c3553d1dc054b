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
//!
//! One file per job: [`options`](TrainOptions) (what defines a run), `run_files` (the
//! files beside `out`, written atomically), `state` (`M.train.json`, read on resume),
//! `trunk` (pretrained weights, batch-norm calibration, the frozen trunk's cache),
//! `trainer` (one optimisation step), and here the epoch loop that ties them together.

pub mod adam;
pub mod cache;
pub mod data;
pub mod head;
pub mod loss;
mod options;
mod run_files;
pub mod sampling;
mod state;
mod trainer;
mod trunk;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::model::{Arch, Model};
use crate::progress::ProgressMode;

use data::ImageStore;
use sampling::{epoch_rng, TripletSampler};

pub use options::{model_config, TrainOptions, TripletSource};
pub use run_files::RunFiles;
pub use trainer::{StepStats, Trainer};
pub use validate::{evaluate, SplitMap};

use options::check_schema;
use run_files::{save_model, write_logs};
use state::{read_state, write_state, TrainState, STATE_FORMAT};
use trunk::{
    batch_norm_is_initial, build_cache, calibrate_batch_norm, load_backbone, CALIBRATION_IMAGES,
};

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
