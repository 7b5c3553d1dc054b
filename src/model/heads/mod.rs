//! Attribute-conditioned heads on a backbone map `[B, C, h, w]`: each maps (map,
//! attribute per image) to an L2-normalised embedding and a spatial attention map.
//! Spatial sizes always come from the map.

pub mod ag_man;
pub mod asen;
pub mod asen_v2;
pub mod csn;

use candle_core::{Result, Tensor, D};

/// A head's output for a batch: `[B, dim]` embeddings and `[B, h, w]` attention.
pub struct HeadForward {
    pub embeddings: Tensor,
    pub attention: Tensor,
}

/// Row-wise L2 normalisation. The epsilon inside the square root keeps the gradient finite
/// for a zero row; its effect on outputs is below f32 resolution for non-degenerate rows.
pub fn l2n(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Softmax over the h*w positions of `[B, 1, h, w]` logits, returned as `[B, h*w]`.
pub fn softmax_hw(logits: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = logits.dims4()?;
    candle_nn::ops::softmax(&logits.reshape((b, h * w))?, 1)
}

/// `sum_hw(alpha * x)` for `x [B, C, h, w]` and `alpha [B, h*w]`, as a batched product.
pub fn weighted_pool(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h * w))?
        .matmul(&alpha.reshape((b, h * w, 1))?)?
        .reshape((b, c))
}

/// Uniform attention `[B, h, w]` for heads that average-pool.
pub fn uniform_attention(x: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    Tensor::full(1f32 / (h * w) as f32, (b, h, w), x.device())?.to_dtype(x.dtype())
}

/// `t * sigmoid(t)`.
pub fn swish(t: &Tensor) -> Result<Tensor> {
    t * candle_nn::ops::sigmoid(t)?
}

/// One-hot rows `[B, n]` for attribute ids `[B]` (u32).
pub fn one_hot(attrs: &Tensor, n: usize, like: &Tensor) -> Result<Tensor> {
    candle_nn::encoding::one_hot(attrs.clone(), n, 1f32, 0f32)?.to_dtype(like.dtype())
}
