//! ASEN (AAAI 2020, code class `ASENet`) and its two ablations: without ASA (uniform
//! pooling) and without ACA (no channel gate).

use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d, linear, linear_no_bias, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::{l2n, one_hot, softmax_hw, uniform_attention, weighted_pool, HeadForward};

/// Attribute-aware spatial attention.
struct Asa {
    mask_fc1: Linear,
    conv1: Conv2d,
    conv2: Conv2d,
}

/// Attribute-aware channel attention.
struct Aca {
    mask_fc2: Linear,
    fc1: Linear,
    fc2: Linear,
}

pub struct AsenHead {
    n: usize,
    asa: Option<Asa>,
    aca: Option<Aca>,
    feature_fc: Linear,
}

impl AsenHead {
    /// `c`: map channels, `hidden`: ASA width, `n`: attributes.
    pub fn new(
        vb: VarBuilder,
        c: usize,
        hidden: usize,
        n: usize,
        with_asa: bool,
        with_aca: bool,
    ) -> Result<Self> {
        let asa = if with_asa {
            Some(Asa {
                mask_fc1: linear_no_bias(n, hidden, vb.pp("mask_fc1"))?,
                conv1: conv2d(c, hidden, 1, Conv2dConfig::default(), vb.pp("conv1"))?,
                conv2: conv2d(hidden, 1, 1, Conv2dConfig::default(), vb.pp("conv2"))?,
            })
        } else {
            None
        };
        let aca = if with_aca {
            Some(Aca {
                mask_fc2: linear_no_bias(n, c, vb.pp("mask_fc2"))?,
                fc1: linear(2 * c, hidden, vb.pp("fc1"))?,
                fc2: linear(hidden, c, vb.pp("fc2"))?,
            })
        } else {
            None
        };
        Ok(AsenHead {
            n,
            asa,
            aca,
            feature_fc: linear(c, c, vb.pp("feature_fc"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, attrs: &Tensor) -> Result<HeadForward> {
        let (b, _, h, w) = x.dims4()?;
        let onehot = one_hot(attrs, self.n, x)?;
        let (v, attention) = match &self.asa {
            Some(asa) => {
                let p_img = asa.conv1.forward(x)?.tanh()?;
                let p_att = asa.mask_fc1.forward(&onehot)?.tanh()?;
                let (_, hid, _, _) = p_img.dims4()?;
                let joint = p_img.broadcast_mul(&p_att.reshape((b, hid, 1, 1))?)?;
                let alpha = softmax_hw(&asa.conv2.forward(&joint)?.tanh()?)?;
                (weighted_pool(x, &alpha)?, alpha.reshape((b, h, w))?)
            }
            None => (
                x.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?,
                uniform_attention(x)?,
            ),
        };
        let v = match &self.aca {
            Some(aca) => {
                let q = aca.mask_fc2.forward(&onehot)?.relu()?;
                let z = aca.fc1.forward(&Tensor::cat(&[&v, &q], 1)?)?.relu()?;
                let m = candle_nn::ops::sigmoid(&aca.fc2.forward(&z)?)?;
                (v * m)?
            }
            None => v,
        };
        Ok(HeadForward {
            embeddings: l2n(&self.feature_fc.forward(&v)?)?,
            attention,
        })
    }
}
