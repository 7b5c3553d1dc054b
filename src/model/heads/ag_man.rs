//! AG-MAN (IEEE Access) head on the multi-level map `concat[layer3, fused]`: channel-
//! product attention, spatial attention (CBAM-style), channel gate, learned masks.
//! The paper's extra CA block is not part of the published forward pass, so not here.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{
    batch_norm, conv2d, conv2d_no_bias, embedding, linear, BatchNorm, Conv2d, Conv2dConfig,
    Embedding, Init, Linear, VarBuilder,
};

use super::{conv1x1, l2n, softmax_hw, swish, HeadForward};

pub struct AgManHead {
    hidden: usize,
    attr_embedding: Embedding,
    attr_transform1: Linear,
    conv1: Conv2d,
    img_bn1: BatchNorm,
    sa_conv1: Conv2d,
    attr_transform2: Linear,
    fc1: Linear,
    fc2: Linear,
    w: Tensor,
    w1: Tensor,
    w2: Tensor,
    masks: Embedding,
}

impl AgManHead {
    /// `c`: channels of the stacked map (2x layer3's).
    pub fn new(vb: VarBuilder, c: usize, hidden: usize, n: usize) -> Result<Self> {
        let sa_cfg = Conv2dConfig {
            padding: 3,
            ..Default::default()
        };
        let scalar = |name: &str| vb.get_with_hints(1, name, Init::Const(1.0));
        Ok(AgManHead {
            hidden,
            attr_embedding: embedding(n, hidden, vb.pp("attr_embedding"))?,
            attr_transform1: linear(hidden, hidden, vb.pp("attr_transform1"))?,
            conv1: conv2d(c, hidden, 1, Conv2dConfig::default(), vb.pp("conv1"))?,
            img_bn1: batch_norm(hidden, 1e-5, vb.pp("img_bn1"))?,
            sa_conv1: conv2d_no_bias(2, 1, 7, sa_cfg, vb.pp("sa").pp("conv1"))?,
            attr_transform2: linear(hidden, hidden, vb.pp("attr_transform2"))?,
            fc1: linear(2 * hidden, hidden, vb.pp("fc1"))?,
            fc2: linear(hidden, hidden, vb.pp("fc2"))?,
            w: scalar("w")?,
            w1: scalar("w1")?,
            w2: scalar("w2")?,
            masks: embedding(n, hidden, vb.pp("masks"))?,
        })
    }

    /// The masks' initial values: 0.1 everywhere, 1.0 on attribute i's block of
    /// `hidden / n` columns.
    pub fn initial_masks(n: usize, hidden: usize) -> Vec<f32> {
        let block = hidden / n.max(1);
        let mut m = vec![0.1f32; n * hidden];
        for i in 0..n {
            for j in i * block..(i + 1) * block {
                m[i * hidden + j] = 1.0;
            }
        }
        m
    }

    /// The attribute-independent part: `y = conv1(w * f)` and `tanh(img_bn1(y))`.
    pub fn image_part(&self, f: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let y = conv1x1(&f.broadcast_mul(&self.w)?, &self.conv1)?;
        let p_img = self.img_bn1.forward_t(&y, train)?.tanh()?;
        Ok((y, p_img))
    }

    pub fn forward_t(&self, f: &Tensor, attrs: &Tensor, train: bool) -> Result<HeadForward> {
        let (y, p_img) = self.image_part(f, train)?;
        self.attend(&y, &p_img, attrs)
    }

    /// `y` and `p_img` from [`AgManHead::image_part`].
    pub fn attend(&self, y: &Tensor, p_img: &Tensor, attrs: &Tensor) -> Result<HeadForward> {
        Ok(self.attend_levels(y, p_img, attrs)?.0)
    }

    /// As [`AgManHead::attend`], also returning the second level of spatial attention:
    /// the CBAM-style gate `sigmoid(sa.conv1(..))` as `[B, h, w]` (the first level, the
    /// attribute-guided softmax, is `HeadForward::attention`).
    pub fn attend_levels(
        &self,
        y: &Tensor,
        p_img: &Tensor,
        attrs: &Tensor,
    ) -> Result<(HeadForward, Tensor)> {
        let (b, _, h, w) = y.dims4()?;
        let e = self.attr_embedding.forward(attrs)?;
        let a1 = swish(&self.attr_transform1.forward(&e)?)?;
        let logits = (p_img
            .broadcast_mul(&a1.reshape((b, self.hidden, 1, 1))?)?
            .sum_keepdim(1)?
            / (self.hidden as f64).sqrt())?;
        let alpha = softmax_hw(&logits)?;
        let y = y
            .broadcast_mul(&self.w1)?
            .broadcast_mul(&alpha.reshape((b, 1, h, w))?)?;
        let pooled = Tensor::cat(&[&y.mean_keepdim(1)?, &y.max_keepdim(1)?], 1)?;
        let gate = candle_nn::ops::sigmoid(&self.sa_conv1.forward(&pooled)?)?;
        let y = y.broadcast_mul(&gate)?;
        let v = y.sum((2, 3))?;
        let a2 = swish(&self.attr_transform2.forward(&e)?)?;
        let z = self.fc1.forward(&Tensor::cat(&[&v, &a2], 1)?)?.relu()?;
        let m = candle_nn::ops::sigmoid(&self.fc2.forward(&z)?)?;
        let v = (v * m)?.broadcast_mul(&self.w2)?;
        let v = (v * self.masks.forward(attrs)?.relu()?)?;
        Ok((
            HeadForward {
                embeddings: l2n(&v)?,
                attention: alpha.reshape((b, h, w))?,
            },
            gate.reshape((b, h, w))?,
        ))
    }
}
