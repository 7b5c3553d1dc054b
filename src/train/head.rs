//! Gradient check of every architecture's head alone ([`crate::model::Head`], the one
//! the model runs; training builds it on the model's variables to train from cached
//! backbone maps), in f64 against finite differences.

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use crate::model::{Arch, BackboneConfig, Head, ModelConfig};
    use crate::train::loss::triplet_loss;

    /// Central differences in f64 against candle's backward, for every head. With f64 and
    /// eps = 1e-6 the truncation error (~eps^2 * f''') and the rounding error
    /// (~1e-16 / eps) both sit near 1e-10, far below the 1e-5 relative tolerance; a wrong
    /// backward rule shows up as an O(1) relative error.
    #[test]
    fn head_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let tiny = BackboneConfig::Tiny {
            stem: 4,
            widths: [2, 2, 2, 2],
            blocks: [1, 1, 1, 1],
        };
        let attributes: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        for arch in Arch::ALL {
            let mut cfg = ModelConfig::new(arch, tiny.clone(), attributes.clone(), vec![]);
            cfg.hidden_dim = 6;
            if arch == Arch::AgMan {
                cfg.embed_dim = 6;
            }
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
            let head = Head::new(&cfg, vb).unwrap();
            let b = 2;
            let mut rng = ChaCha8Rng::seed_from_u64(arch as u64);
            let c = cfg.map_channels();
            let map: Vec<f64> = (0..3 * b * c * 9)
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect();
            let map = Tensor::from_vec(map, (3 * b, c, 3, 3), &dev).unwrap();
            let attrs = Tensor::new(&[0u32, 2, 0, 2, 0, 2], &dev).unwrap();
            // A margin of 4 keeps every hinge active (|s| <= 1), so the loss is smooth.
            let loss = || -> Tensor {
                let e = head.forward_t(&map, &attrs, true).unwrap().embeddings;
                let l = triplet_loss(
                    &e.narrow(0, 0, b).unwrap(),
                    &e.narrow(0, b, b).unwrap(),
                    &e.narrow(0, 2 * b, b).unwrap(),
                    4.0,
                )
                .unwrap();
                l.loss
            };
            let vars: Vec<(String, Var)> = {
                let data = varmap.data().lock().unwrap();
                let mut v: Vec<_> = data
                    .iter()
                    .filter(|(n, _)| !n.contains("running_"))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                v.sort_by(|x, y| x.0.cmp(&y.0));
                v
            };
            assert!(!vars.is_empty());
            // Seeded values instead of candle's unseeded initialisation, so the test is
            // reproducible; masks positive so that their ReLU passes gradients.
            for (name, var) in &vars {
                let lo = if name.starts_with("masks") { 0.1 } else { -1.0 };
                let v: Vec<f64> = (0..var.elem_count())
                    .map(|_| rng.gen_range(lo..1.0))
                    .collect();
                var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                    .unwrap();
            }
            let grads = loss().backward().unwrap();
            let (mut checked, mut nonzero) = (0, 0);
            for (name, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                let base = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                // Up to 4 coordinates per tensor.
                for _ in 0..4.min(base.len()) {
                    let i = rng.gen_range(0..base.len());
                    let eps = 1e-6;
                    let at = |delta: f64| -> f64 {
                        let mut v = base.clone();
                        v[i] += delta;
                        var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                            .unwrap();
                        loss().to_scalar::<f64>().unwrap()
                    };
                    let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
                        .unwrap();
                    let analytic = g.as_ref().map_or(0.0, |g| g[i]);
                    let scale = numeric.abs().max(analytic.abs()).max(1e-4);
                    assert!(
                        (numeric - analytic).abs() / scale < 1e-5,
                        "{arch}: d loss / d {name}[{i}]: backward {analytic:e}, \
                         finite differences {numeric:e}"
                    );
                    checked += 1;
                    nonzero += (analytic.abs() > 1e-4) as usize;
                }
            }
            assert!(checked >= 8, "{arch}: only {checked} coordinates checked");
            // The check must exercise real gradients, not zeros matching zeros.
            assert!(
                nonzero * 2 >= checked,
                "{arch}: {nonzero}/{checked} non-zero gradients"
            );
        }
    }
}
