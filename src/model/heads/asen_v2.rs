//! ASENet_V2, the authors' "advanced version": embedding-table attributes, batch-normed
//! image projection, scaled dot-product spatial attention, no final projection.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{
    batch_norm, conv2d, embedding, linear, BatchNorm, Conv2d, Conv2dConfig, Embedding, Linear,
    VarBuilder,
};

use super::{l2n, softmax_hw, weighted_pool, HeadForward};

pub struct AsenV2Head {
    hidden: usize,
    attr_embedding: Embedding,
    attr_transform1: Linear,
    conv1: Conv2d,
    img_bn1: BatchNorm,
    attr_transform2: Linear,
    fc1: Linear,
    fc2: Linear,
}

impl AsenV2Head {
    pub fn new(vb: VarBuilder, c: usize, hidden: usize, n: usize) -> Result<Self> {
        Ok(AsenV2Head {
            hidden,
            attr_embedding: embedding(n, hidden, vb.pp("attr_embedding"))?,
            attr_transform1: linear(hidden, hidden, vb.pp("attr_transform1"))?,
            conv1: conv2d(c, hidden, 1, Conv2dConfig::default(), vb.pp("conv1"))?,
            img_bn1: batch_norm(hidden, 1e-5, vb.pp("img_bn1"))?,
            attr_transform2: linear(hidden, hidden, vb.pp("attr_transform2"))?,
            fc1: linear(c + hidden, hidden, vb.pp("fc1"))?,
            fc2: linear(hidden, c, vb.pp("fc2"))?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, attrs: &Tensor, train: bool) -> Result<HeadForward> {
        let (b, _, h, w) = x.dims4()?;
        let e = self.attr_embedding.forward(attrs)?;
        let p_img = self
            .img_bn1
            .forward_t(&self.conv1.forward(x)?, train)?
            .tanh()?;
        let a1 = self.attr_transform1.forward(&e)?.tanh()?;
        let logits = (p_img
            .broadcast_mul(&a1.reshape((b, self.hidden, 1, 1))?)?
            .sum_keepdim(1)?
            / (self.hidden as f64).sqrt())?;
        let alpha = softmax_hw(&logits)?;
        let v = weighted_pool(x, &alpha)?;
        let a2 = self.attr_transform2.forward(&e)?.relu()?;
        let z = self.fc1.forward(&Tensor::cat(&[&v, &a2], 1)?)?.relu()?;
        let m = candle_nn::ops::sigmoid(&self.fc2.forward(&z)?)?;
        Ok(HeadForward {
            embeddings: l2n(&(v * m)?)?,
            attention: alpha.reshape((b, h, w))?,
        })
    }
}
