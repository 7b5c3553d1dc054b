//! The optimisation loop's step: forward, losses, backward and Adam on a batch of
//! triplets, from images or from the frozen trunk's cached maps.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::model::{Arch, Head, Model};

use super::adam::{Adam, AdamParams};
use super::cache::FeatureCache;
use super::data::ImageStore;
use super::loss::{bce_with_logits, one_hot, triplet_loss, LossWeighting};
use super::sampling::Triplet;
use super::{validate, TrainOptions};

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
    pub(super) adam: Adam,
    pub(super) weighting: Option<LossWeighting>,
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
    pub(super) fn embedder(&self) -> validate::Embedder<'_> {
        match (&self.head, &self.cache) {
            (Some(head), Some(cache)) => validate::Embedder::Cached { head, cache },
            _ => validate::Embedder::Images {
                model: self.model,
                store: self.images.as_ref().expect("images loaded when not cached"),
            },
        }
    }

    pub(super) fn save_state(&self, path: &Path) -> Result<()> {
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

    pub(super) fn load_state(&mut self, path: &Path, steps: u64) -> Result<()> {
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
