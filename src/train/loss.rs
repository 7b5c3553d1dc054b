//! Losses: the margin ranking loss on dot products of normalised embeddings, binary
//! cross-entropy with logits (AG-MAN's classification branch) and AG-MAN's learned
//! weighting of the two.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::Result;

/// The papers' margin.
pub const DEFAULT_MARGIN: f64 = 0.2;

/// The triplet loss of a batch and its triplet accuracy.
#[derive(Debug, Clone)]
pub struct TripletLoss {
    /// Scalar: `mean(max(0, margin - s_pos + s_neg))`.
    pub loss: Tensor,
    /// Number of triplets with `s_pos > s_neg`.
    pub correct: usize,
}

/// `max(0, x)` whose gradient is 0 where `x <= 0`, as PyTorch's. Candle's `relu`
/// backward passes the gradient at exactly 0 (`x >= 0`), which matters for the hinge:
/// a triplet sitting exactly on the margin must not pull the embeddings.
fn hinge(x: &Tensor) -> Result<Tensor> {
    // The comparison carries no gradient, so the mask acts as a constant.
    let active = x.gt(0.0)?.to_dtype(x.dtype())?;
    Ok(x.mul(&active)?)
}

/// Margin ranking loss over `[B, D]` anchor/negative/positive embeddings that are
/// already L2-normalised (every model's output is).
pub fn triplet_loss(
    anchor: &Tensor,
    negative: &Tensor,
    positive: &Tensor,
    margin: f64,
) -> Result<TripletLoss> {
    let s_pos = anchor.mul(positive)?.sum(1)?;
    let s_neg = anchor.mul(negative)?.sum(1)?;
    let violation = (s_neg.sub(&s_pos)? + margin)?;
    let loss = hinge(&violation)?.mean_all()?;
    let correct = s_pos
        .gt(&s_neg)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize;
    Ok(TripletLoss { loss, correct })
}

/// Mean binary cross-entropy of `logits` against `targets` (same shape, 0/1), as
/// PyTorch's `BCEWithLogitsLoss` (mean over every element).
///
/// `softplus(x) = m + ln(e^-m + e^(x-m))` with `m = max(x, 0)` held constant: no overflow,
/// and its gradient is exactly `sigmoid(x)` everywhere (no kink at 0).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.relu()?.detach();
    let softplus = (m.neg()?.exp()? + logits.sub(&m)?.exp()?)?.log()?.add(&m)?;
    Ok(softplus.sub(&logits.mul(targets)?)?.mean_all()?)
}

/// One-hot rows `[B, n]` for attribute indices.
pub fn one_hot(attributes: &[usize], n: usize, device: &Device) -> Result<Tensor> {
    let mut data = vec![0f32; attributes.len() * n];
    for (row, &a) in attributes.iter().enumerate() {
        data[row * n + a] = 1.0;
    }
    Ok(Tensor::from_vec(data, (attributes.len(), n), device)?)
}

/// AG-MAN's dynamic loss weighting (paper eq. 9):
/// `L = 0.5 e^{w0} L_cls + w0 + 0.5 e^{w1} L_triplet + w1`, with `w0`, `w1` learned and
/// initialised at 0 (the paper; the authors' code starts at 1.0).
///
/// Note: `dL/dw = 0.5 e^w L + 1 > 0`, so both weights only ever decrease; the scheme acts
/// as a learned decay of each loss's step size rather than a balance point.
#[derive(Debug, Clone)]
pub struct LossWeighting {
    pub w_cls: Var,
    pub w_triplet: Var,
}

impl LossWeighting {
    pub fn new(device: &Device) -> Result<Self> {
        Ok(LossWeighting {
            w_cls: Var::from_tensor(&Tensor::zeros(1, DType::F32, device)?)?,
            w_triplet: Var::from_tensor(&Tensor::zeros(1, DType::F32, device)?)?,
        })
    }

    /// Named variables for the optimiser and the training state.
    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![
            ("loss.w_cls".to_string(), self.w_cls.clone()),
            ("loss.w_triplet".to_string(), self.w_triplet.clone()),
        ]
    }

    pub fn combine(&self, cls: &Tensor, triplet: &Tensor) -> Result<Tensor> {
        let term = |w: &Var, l: &Tensor| -> Result<Tensor> {
            let w = w.as_tensor().reshape(())?;
            Ok(((w.exp()? * 0.5)?.mul(l)? + &w)?)
        };
        Ok((term(&self.w_cls, cls)? + term(&self.w_triplet, triplet)?)?)
    }

    /// Current values (w_cls, w_triplet), for the log.
    pub fn values(&self) -> Result<(f32, f32)> {
        let get = |w: &Var| -> Result<f32> { Ok(w.as_tensor().reshape(())?.to_scalar::<f32>()?) };
        Ok((get(&self.w_cls)?, get(&self.w_triplet)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], rows: usize) -> Tensor {
        Tensor::from_slice(data, (rows, data.len() / rows), &Device::Cpu).unwrap()
    }

    #[test]
    fn triplet_loss_by_hand() {
        // Row 0: s_pos 1, s_neg 0 -> hinge(0.2 - 1) = 0, correct.
        // Row 1: s_pos 0, s_neg 1 -> 1.2, wrong.
        let a = t(&[1.0, 0.0, 0.0, 1.0], 2);
        let p = t(&[1.0, 0.0, 1.0, 0.0], 2);
        let n = t(&[0.0, 1.0, 0.0, 1.0], 2);
        let l = triplet_loss(&a, &n, &p, 0.2).unwrap();
        let v = l.loss.to_scalar::<f32>().unwrap();
        assert!((v - 0.6).abs() < 1e-6, "{v}");
        assert_eq!(l.correct, 1);
    }

    #[test]
    fn hinge_has_no_gradient_at_zero() {
        let x = Var::from_slice(&[-1.0f32, 0.0, 2.0], 3, &Device::Cpu).unwrap();
        let y = hinge(x.as_tensor()).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gx, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn bce_matches_the_formula_and_its_gradient_is_sigmoid_minus_target() {
        let xs = [-30.0f32, -1.5, 0.0, 0.7, 40.0, 3.0];
        let ys = [0.0f32, 1.0, 1.0, 0.0, 1.0, 1.0];
        let x = Var::from_slice(&xs, (2, 3), &Device::Cpu).unwrap();
        let y = t(&ys, 2);
        let l = bce_with_logits(x.as_tensor(), &y).unwrap();
        let expect: f64 = xs
            .iter()
            .zip(ys)
            .map(|(&x, y)| {
                let x = x as f64;
                let s = 1.0 / (1.0 + (-x).exp());
                -(y as f64) * s.ln().max(-100.0) - (1.0 - y as f64) * (1.0 - s).ln().max(-100.0)
            })
            .sum::<f64>()
            / 6.0;
        let got = l.to_scalar::<f32>().unwrap() as f64;
        // x = -30 with y = 0 and x = 40 with y = 1 are ~0 either way; the ln clamps above
        // only matter for |x| > 100.
        assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
        let g = l.backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        for (i, gi) in gx.to_vec1::<f32>().unwrap().into_iter().enumerate() {
            let s = 1.0 / (1.0 + (-xs[i] as f64).exp());
            assert!((gi as f64 - (s - ys[i] as f64) / 6.0).abs() < 1e-6);
        }
    }

    #[test]
    fn weighting_matches_equation_9() {
        let w = LossWeighting::new(&Device::Cpu).unwrap();
        w.w_cls
            .set(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap())
            .unwrap();
        let cls = Tensor::new(2.0f32, &Device::Cpu).unwrap();
        let tri = Tensor::new(0.3f32, &Device::Cpu).unwrap();
        let l = w.combine(&cls, &tri).unwrap().to_scalar::<f32>().unwrap();
        let expect = 0.5 * 0.5f32.exp() * 2.0 + 0.5 + 0.5 * 0.3;
        assert!((l - expect).abs() < 1e-6);
    }
}
