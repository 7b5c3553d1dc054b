//! The architecture's head alone, built on the same variables as the model (a
//! [`VarBuilder`] over the training `VarMap` hands back the model's own `Var`s), so that
//! heads can train from cached backbone maps. Also used to check head gradients in f64.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::model::heads::{
    ag_man::AgManHead, asen::AsenHead, asen_v2::AsenV2Head, csn::CsnHead, HeadForward,
};
use crate::model::{Arch, ModelConfig};

/// One architecture's head on a backbone map.
pub enum TrainHead {
    Asen(AsenHead),
    AsenV2(AsenV2Head),
    AgMan(AgManHead),
    Csn(CsnHead),
}

impl TrainHead {
    /// Builds the head of `cfg.arch` under `vb`'s root, with the model's tensor names.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let n = cfg.num_attributes();
        let c = cfg.map_channels();
        let hid = cfg.hidden_dim;
        Ok(match cfg.arch {
            Arch::Asen => TrainHead::Asen(AsenHead::new(vb, c, hid, n, true, true)?),
            Arch::AsenNoAsa => TrainHead::Asen(AsenHead::new(vb, c, hid, n, false, true)?),
            Arch::AsenNoAca => TrainHead::Asen(AsenHead::new(vb, c, hid, n, true, false)?),
            Arch::AsenV2 => TrainHead::AsenV2(AsenV2Head::new(vb, c, hid, n)?),
            Arch::AgMan => TrainHead::AgMan(AgManHead::new(vb, c, hid, n)?),
            Arch::Csn => TrainHead::Csn(CsnHead::new(vb, c, cfg.embed_dim, n, true)?),
            Arch::Triplet => TrainHead::Csn(CsnHead::new(vb, c, cfg.embed_dim, n, false)?),
        })
    }

    /// Image i of `map` (`[B, C, h, w]`) embedded for attribute `attrs[i]` (`[B]` u32).
    pub fn forward_t(&self, map: &Tensor, attrs: &Tensor, train: bool) -> Result<HeadForward> {
        Ok(match self {
            TrainHead::Asen(h) => h.forward(map, attrs)?,
            TrainHead::AsenV2(h) => h.forward_t(map, attrs, train)?,
            TrainHead::AgMan(h) => h.forward_t(map, attrs, train)?,
            TrainHead::Csn(h) => h.forward(map, attrs)?,
        })
    }
}
