//! ResNet with bottleneck blocks (expansion 4) and torchvision parameter names, cut after
//! layer3 (ASEN, ASENet_V2, CSN, triplet) or in AG-MAN's multi-level form.

use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::config::BackboneConfig;

const BN_EPS: f64 = 1e-5;

fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    conv2d_no_bias(cin, cout, k, cfg, vb)
}

fn bn(vb: VarBuilder, c: usize) -> Result<BatchNorm> {
    batch_norm(c, BN_EPS, vb)
}

/// 3x3 / stride 2 / padding 1 max-pool (the ResNet stem's and AG-MAN's). Training mode
/// takes the maximum of nine shifted views so that it has a backward pass (candle's
/// max_pool2d only differentiates when kernel == stride); padding repeats the edge, which
/// equals -inf padding because every window then holds the replicated pixel itself.
pub fn max_pool_3x3_s2(x: &Tensor, train: bool) -> Result<Tensor> {
    let x = x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?;
    if !train {
        return x.max_pool2d_with_stride(3, 2);
    }
    let (_, _, hp, wp) = x.dims4()?;
    let (ho, wo) = ((hp - 3) / 2 + 1, (wp - 3) / 2 + 1);
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        for dx in 0..3 {
            let s = x.narrow(2, dy, 2 * ho - 1)?.narrow(3, dx, 2 * wo - 1)?;
            out = Some(match out {
                None => s,
                Some(o) => o.maximum(&s)?,
            });
        }
    }
    let m = out.expect("nine windows");
    // Keep every other row and column: pad to even, fold pairs, take the first of each.
    let (b, c, h, w) = m.dims4()?;
    let m = m.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
    m.reshape((b, c, (h + 1) / 2, 2, (w + 1) / 2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, ho, wo))
}

pub struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Bottleneck {
    fn new(vb: VarBuilder, cin: usize, planes: usize, stride: usize) -> Result<Self> {
        let cout = planes * 4;
        let downsample = if stride != 1 || cin != cout {
            Some((
                conv(vb.pp("downsample.0"), cin, cout, 1, stride)?,
                bn(vb.pp("downsample.1"), cout)?,
            ))
        } else {
            None
        };
        Ok(Bottleneck {
            conv1: conv(vb.pp("conv1"), cin, planes, 1, 1)?,
            bn1: bn(vb.pp("bn1"), planes)?,
            conv2: conv(vb.pp("conv2"), planes, planes, 3, stride)?,
            bn2: bn(vb.pp("bn2"), planes)?,
            conv3: conv(vb.pp("conv3"), planes, cout, 1, 1)?,
            bn3: bn(vb.pp("bn3"), cout)?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let y = self
            .bn2
            .forward_t(&self.conv2.forward(&y)?, train)?
            .relu()?;
        let y = self.bn3.forward_t(&self.conv3.forward(&y)?, train)?;
        let identity = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + identity)?.relu()
    }

    /// (conv, bn) pairs in forward order, for folding batch norm at inference time.
    pub(crate) fn parts(&self) -> BottleneckParts<'_> {
        BottleneckParts {
            c1: (&self.conv1, &self.bn1),
            c2: (&self.conv2, &self.bn2),
            c3: (&self.conv3, &self.bn3),
            down: self.downsample.as_ref().map(|(c, b)| (c, b)),
        }
    }
}

pub(crate) struct BottleneckParts<'a> {
    pub c1: (&'a Conv2d, &'a BatchNorm),
    pub c2: (&'a Conv2d, &'a BatchNorm),
    pub c3: (&'a Conv2d, &'a BatchNorm),
    pub down: Option<(&'a Conv2d, &'a BatchNorm)>,
}

/// What a backbone hands to the heads.
pub struct BackboneOutput {
    /// `[B, C, h, w]` image map (AG-MAN: `concat[layer3, layer3 + conv1_1(pool(layer2))]`).
    pub map: Tensor,
    /// AG-MAN's attribute classification logits `[B, n]`.
    pub logits: Option<Tensor>,
}

/// The ResNet trunk. `layers` holds layer1..layer3, plus layer4 for AG-MAN.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    layers: Vec<Vec<Bottleneck>>,
    /// AG-MAN: `conv1_1` (layer2 channels -> layer3 channels, 1x1, bias) and `fc_embed`.
    multi: Option<(Conv2d, Linear)>,
}

impl ResNet {
    /// Builds the trunk; `multi_level` adds layer4, `conv1_1` and `fc_embed` (n outputs).
    pub fn new(vb: VarBuilder, cfg: &BackboneConfig, multi_level: Option<usize>) -> Result<Self> {
        let widths = cfg.widths();
        let blocks = cfg.blocks();
        let depth = if multi_level.is_some() { 4 } else { 3 };
        let mut cin = cfg.stem();
        let mut layers = Vec::with_capacity(depth);
        for l in 0..depth {
            let lvb = vb.pp(format!("layer{}", l + 1));
            let mut layer = Vec::with_capacity(blocks[l]);
            for i in 0..blocks[l] {
                let stride = if i == 0 && l > 0 { 2 } else { 1 };
                layer.push(Bottleneck::new(lvb.pp(i), cin, widths[l], stride)?);
                cin = widths[l] * 4;
            }
            layers.push(layer);
        }
        let multi = match multi_level {
            Some(n) => {
                let conv1_1 = candle_nn::conv2d(
                    cfg.channels(2),
                    cfg.channels(3),
                    1,
                    Conv2dConfig::default(),
                    vb.pp("conv1_1"),
                )?;
                let fc_embed = candle_nn::linear(cfg.channels(4), n, vb.pp("fc_embed"))?;
                Some((conv1_1, fc_embed))
            }
            None => None,
        };
        Ok(ResNet {
            conv1: conv(vb.pp("conv1"), 3, cfg.stem(), 7, 2)?,
            bn1: bn(vb.pp("bn1"), cfg.stem())?,
            layers,
            multi,
        })
    }

    fn run_layer(&self, l: usize, x: Tensor, train: bool) -> Result<Tensor> {
        self.layers[l]
            .iter()
            .try_fold(x, |x, b| b.forward_t(&x, train))
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<BackboneOutput> {
        let x = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let x = max_pool_3x3_s2(&x, train)?;
        let x = self.run_layer(0, x, train)?;
        let x2 = self.run_layer(1, x, train)?;
        let x3 = self.run_layer(2, x2.clone(), train)?;
        self.finish(x2, x3, train)
    }

    /// Everything after layer3 (shared with the fast inference path).
    pub(crate) fn finish(&self, x2: Tensor, x3: Tensor, train: bool) -> Result<BackboneOutput> {
        match &self.multi {
            None => Ok(BackboneOutput {
                map: x3,
                logits: None,
            }),
            Some((conv1_1, fc_embed)) => {
                let side = conv1_1.forward(&max_pool_3x3_s2(&x2, train)?)?;
                let local = (&x3 + side)?;
                let x4 = self.run_layer(3, local.clone(), train)?;
                let pooled = x4.mean(D::Minus1)?.mean(D::Minus1)?;
                let logits = fc_embed.forward(&pooled)?;
                Ok(BackboneOutput {
                    map: Tensor::cat(&[&x3, &local], 1)?,
                    logits: Some(logits),
                })
            }
        }
    }

    pub(crate) fn stem(&self) -> (&Conv2d, &BatchNorm) {
        (&self.conv1, &self.bn1)
    }
    pub(crate) fn layers(&self) -> &[Vec<Bottleneck>] {
        &self.layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn train_max_pool_matches_eval_max_pool() {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (7, 9), (5, 6)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();
            let a = max_pool_3x3_s2(&x, false).unwrap();
            let b = max_pool_3x3_s2(&x, true).unwrap();
            assert_eq!(a.dims(), b.dims());
            assert_eq!(a.dims()[2], (h + 2 - 3) / 2 + 1);
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(
                d.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap(),
                0.0
            );
        }
    }

    #[test]
    fn train_max_pool_has_a_gradient() {
        let dev = Device::Cpu;
        let v = candle_core::Var::randn(0f32, 1.0, (1, 2, 6, 6), &dev).unwrap();
        let y = max_pool_3x3_s2(v.as_tensor(), true)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = y.backward().unwrap();
        let gv = g.get(v.as_tensor()).expect("gradient for the input");
        assert!(gv.sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}
