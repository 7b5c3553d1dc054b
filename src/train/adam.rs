//! Adam (PyTorch's `torch.optim.Adam`, no weight decay) with a state that can be saved
//! and restored, so that a resumed run continues exactly where it stopped. Candle's
//! `AdamW` keeps its moments private; with weight decay 0 it is the same update.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};

/// Adam hyper-parameters (PyTorch defaults except the learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam over a fixed, named set of variables.
pub struct Adam {
    vars: Vec<(String, Var)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    /// Updates done so far.
    step: u64,
    params: AdamParams,
}

impl Adam {
    /// Variables are kept in name order, so the update order never depends on a hash map.
    pub fn new(mut vars: Vec<(String, Var)>, params: AdamParams) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let first = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let second = first.clone();
        Ok(Adam {
            vars,
            first,
            second,
            step: 0,
            params,
        })
    }

    pub fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Number of scalar parameters optimised.
    pub fn parameter_count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// One update from the gradients of a backward pass. Variables without a gradient
    /// (not on the loss's path) keep their value and moments.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bias1 = 1.0 - p.beta1.powi(t);
        let bias2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: a moment must not keep this step's graph (and through the previous
            // moment, every earlier step's) alive.
            let g = g.detach();
            let m = ((&self.first[i] * p.beta1)? + (&g * (1.0 - p.beta1))?)?.detach();
            let v = ((&self.second[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?.detach();
            let denom = ((v.sqrt()? / bias2_sqrt)? + p.eps)?;
            let update = (m.div(&denom)? * (p.lr / bias1))?;
            var.set(&var.as_tensor().sub(&update)?)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`adam.m.<var>`, `adam.v.<var>`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.first[i].clone());
            out.insert(format!("adam.v.{name}"), self.second[i].clone());
        }
        out
    }

    /// Restores moments saved by [`Adam::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.first[i]), ("v", &mut self.second[i])] {
                let key = format!("adam.{kind}.{name}");
                let t = tensors.get(&key).ok_or_else(|| {
                    Error::Usage(format!("the training state has no optimiser moment {key}"))
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::Usage(format!(
                        "optimiser moment {key} has shape {:?}, the variable {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                *slot = t.to_device(var.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn matches_pytorch_adam_on_a_quadratic() {
        // Two steps of torch.optim.Adam(lr=0.1) on f(x) = sum(x^2) from x = [1, -2]:
        // each step moves every coordinate by ~lr against the sign of its gradient.
        let x = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut opt = Adam::new(
            vec![("x".into(), x.clone())],
            AdamParams {
                lr: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..2 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        // Step 1: m/sqrt(v) = sign(g) exactly -> x = [0.9, -1.9]. Step 2: gradients
        // [1.8, -3.8]; m_hat/sqrt(v_hat) is within 1e-3 of sign(g) -> [0.8, -1.8].
        assert!(
            (v[0] - 0.8).abs() < 2e-3 && (v[1] + 1.8).abs() < 2e-3,
            "{v:?}"
        );
    }

    #[test]
    fn state_round_trip() {
        let x = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("x".into(), x.clone())], AdamParams::default()).unwrap();
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        let state = opt.state_tensors();
        let mut other = Adam::new(vec![("x".into(), x.clone())], AdamParams::default()).unwrap();
        other.load_state(&state, opt.steps()).unwrap();
        assert_eq!(other.steps(), 1);
        assert_eq!(
            other.state_tensors()["adam.v.x"].to_vec1::<f32>().unwrap(),
            state["adam.v.x"].to_vec1::<f32>().unwrap()
        );
        let mut bad = HashMap::new();
        bad.insert("adam.m.x".to_string(), state["adam.m.x"].clone());
        assert!(other.load_state(&bad, 1).is_err());
    }
}
