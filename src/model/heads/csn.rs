//! Conditional Similarity Network (learned per-attribute masks over one embedding) and
//! the plain triplet network (the same without masks: one space for every attribute).

use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};

use super::{l2n, uniform_attention, HeadForward};

pub struct CsnHead {
    embed_fc: Linear,
    masks: Option<Embedding>,
}

impl CsnHead {
    /// `with_masks` false gives the triplet baseline.
    pub fn new(vb: VarBuilder, c: usize, dim: usize, n: usize, with_masks: bool) -> Result<Self> {
        let masks = if with_masks {
            Some(embedding(n, dim, vb.pp("masks"))?)
        } else {
            None
        };
        Ok(CsnHead {
            embed_fc: linear(c, dim, vb.pp("embed_fc"))?,
            masks,
        })
    }

    pub fn forward(&self, x: &Tensor, attrs: &Tensor) -> Result<HeadForward> {
        let pooled = x.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?;
        let e = self.embed_fc.forward(&pooled)?;
        let e = match &self.masks {
            Some(m) => (e * m.forward(attrs)?.relu()?)?,
            None => e,
        };
        Ok(HeadForward {
            embeddings: l2n(&e)?,
            attention: uniform_attention(x)?,
        })
    }
}
