//! Inference-only ResNet trunk for the CPU: batch norm folded into the convolution weights
//! once at load, activations kept channels-last as `[B*H*W, C]` row-major matrices, so that
//! a 1x1 convolution is one matrix product, a k x k one an im2col (in row chunks) into
//! products, and the bias, residual and ReLU are fused around the product. Candle's CPU
//! convolution instead repacks NCHW to NHWC on every call and multiplies 512-pixel tiles.

use candle_core::{Device, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d};
use rayon::prelude::*;

use super::backbone::ResNet;

/// A `[B, H, W, C]` activation, row-major (C fastest).
pub(crate) struct Act {
    pub data: Vec<f32>,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Act {
    /// From an NCHW tensor.
    pub fn from_nchw(x: &Tensor) -> Result<Act> {
        let (b, c, h, w) = x.dims4()?;
        let data = x
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Act { data, b, h, w, c })
    }

    /// To an NCHW tensor on `device`.
    pub fn to_nchw(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.b, self.h, self.w, self.c), device)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// `dst[m, n] += a[m, k] * b[k, n]`, all row-major and contiguous.
fn matmul_acc(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n);
    if m == 0 || n == 0 {
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 && m * n * k > 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three slices have exactly the lengths the strides below address (asserted
    // above), `dst` is borrowed mutably and cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// A convolution with its batch norm folded in: `w` is `[k*k*cin, cout]` with rows ordered
/// (ky, kx, cin) to match channels-last im2col rows.
pub(crate) struct FoldedConv {
    k: usize,
    stride: usize,
    pad: usize,
    cin: usize,
    cout: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// im2col rows per chunk: about 4 MB of f32 per chunk keeps the buffer in the caches' reach.
const CHUNK_FLOATS: usize = 1 << 20;

impl FoldedConv {
    pub fn fold(conv: &Conv2d, bn: &BatchNorm) -> Result<Self> {
        let (cout, cin, kh, kw) = conv.weight().dims4()?;
        if kh != kw {
            candle_core::bail!("fast trunk: non-square kernel {kh}x{kw}");
        }
        let cfg = conv.config();
        let (mean, var) = (bn.running_mean(), bn.running_var());
        let (gamma, beta) = bn.weight_and_bias().ok_or_else(|| {
            candle_core::Error::Msg("fast trunk: batch norm without affine".into())
        })?;
        let scale = (gamma / (var + bn.eps())?.sqrt()?)?;
        let bias = (beta - (mean * &scale)?)?.to_vec1::<f32>()?;
        let scale = scale.to_vec1::<f32>()?;
        let wflat = conv.weight().flatten_all()?.to_vec1::<f32>()?;
        let k = kh;
        let mut w = vec![0f32; k * k * cin * cout];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let src = ((co * cin + ci) * k + ky) * k + kx;
                        let row = (ky * k + kx) * cin + ci;
                        w[row * cout + co] = wflat[src] * scale[co];
                    }
                }
            }
        }
        Ok(FoldedConv {
            k,
            stride: cfg.stride,
            pad: cfg.padding,
            cin,
            cout,
            w,
            bias,
        })
    }

    /// `relu?(conv(x) + bias + residual?)`.
    pub fn forward(&self, x: &Act, residual: Option<&Act>, relu: bool) -> Act {
        debug_assert_eq!(x.c, self.cin);
        let (k, s, p) = (self.k, self.stride, self.pad);
        let oh = (x.h + 2 * p - k) / s + 1;
        let ow = (x.w + 2 * p - k) / s + 1;
        let rows = x.b * oh * ow;
        let cout = self.cout;
        let mut out = vec![0f32; rows * cout];
        match residual {
            Some(r) => {
                debug_assert_eq!(r.data.len(), out.len());
                out.par_chunks_mut(cout)
                    .zip(r.data.par_chunks(cout))
                    .for_each(|(o, r)| {
                        for ((o, r), b) in o.iter_mut().zip(r).zip(&self.bias) {
                            *o = r + b;
                        }
                    });
            }
            None => out
                .par_chunks_mut(cout)
                .for_each(|o| o.copy_from_slice(&self.bias)),
        }
        let kk = k * k * self.cin;
        if k == 1 && s == 1 && p == 0 {
            matmul_acc(&mut out, &x.data, &self.w, rows, cout, kk);
        } else {
            let chunk = (CHUNK_FLOATS / kk).max(1);
            let mut cols = vec![0f32; chunk.min(rows) * kk];
            let mut r0 = 0;
            while r0 < rows {
                let n = chunk.min(rows - r0);
                let buf = &mut cols[..n * kk];
                buf.par_chunks_mut(kk).enumerate().for_each(|(i, row)| {
                    self.im2col_row(x, r0 + i, oh, ow, row);
                });
                matmul_acc(
                    &mut out[r0 * cout..(r0 + n) * cout],
                    buf,
                    &self.w,
                    n,
                    cout,
                    kk,
                );
                r0 += n;
            }
        }
        if relu {
            out.par_chunks_mut(1 << 14).for_each(|c| {
                for v in c {
                    *v = v.max(0.0);
                }
            });
        }
        Act {
            data: out,
            b: x.b,
            h: oh,
            w: ow,
            c: cout,
        }
    }

    /// One im2col row for output pixel `r` (b, oy, ox): k*k input pixels' channels, zero
    /// outside the image.
    fn im2col_row(&self, x: &Act, r: usize, oh: usize, ow: usize, row: &mut [f32]) {
        let (k, s, p, c) = (self.k, self.stride, self.pad, self.cin);
        let b = r / (oh * ow);
        let oy = (r / ow) % oh;
        let ox = r % ow;
        for ky in 0..k {
            let iy = (oy * s + ky) as isize - p as isize;
            for kx in 0..k {
                let ix = (ox * s + kx) as isize - p as isize;
                let dst = &mut row[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                    dst.fill(0.0);
                } else {
                    let src = ((b * x.h + iy as usize) * x.w + ix as usize) * c;
                    dst.copy_from_slice(&x.data[src..src + c]);
                }
            }
        }
    }
}

/// 3x3 / stride 2 / padding 1 max-pool, channels-last (padding never wins).
fn max_pool_3x3_s2(x: &Act) -> Act {
    let (oh, ow) = ((x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1);
    let c = x.c;
    let mut out = vec![f32::NEG_INFINITY; x.b * oh * ow * c];
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (b, oy) = (row / oh, row % oh);
        for ox in 0..ow {
            let dst = &mut o[ox * c..(ox + 1) * c];
            for ky in 0..3 {
                let iy = (oy * 2 + ky) as isize - 1;
                if iy < 0 || iy >= x.h as isize {
                    continue;
                }
                for kx in 0..3 {
                    let ix = (ox * 2 + kx) as isize - 1;
                    if ix < 0 || ix >= x.w as isize {
                        continue;
                    }
                    let src = ((b * x.h + iy as usize) * x.w + ix as usize) * c;
                    for (d, v) in dst.iter_mut().zip(&x.data[src..src + c]) {
                        *d = d.max(*v);
                    }
                }
            }
        }
    });
    Act {
        data: out,
        b: x.b,
        h: oh,
        w: ow,
        c,
    }
}

struct FastBlock {
    c1: FoldedConv,
    c2: FoldedConv,
    c3: FoldedConv,
    down: Option<FoldedConv>,
}

/// The folded trunk up to layer3.
pub(crate) struct FastTrunk {
    stem: FoldedConv,
    layers: Vec<Vec<FastBlock>>,
}

impl FastTrunk {
    pub fn fold(net: &ResNet) -> Result<Self> {
        let (c, b) = net.stem();
        let stem = FoldedConv::fold(c, b)?;
        let mut layers = Vec::new();
        for layer in net.layers().iter().take(3) {
            let mut blocks = Vec::new();
            for blk in layer {
                let p = blk.parts();
                blocks.push(FastBlock {
                    c1: FoldedConv::fold(p.c1.0, p.c1.1)?,
                    c2: FoldedConv::fold(p.c2.0, p.c2.1)?,
                    c3: FoldedConv::fold(p.c3.0, p.c3.1)?,
                    down: match p.down {
                        Some((c, b)) => Some(FoldedConv::fold(c, b)?),
                        None => None,
                    },
                });
            }
            layers.push(blocks);
        }
        Ok(FastTrunk { stem, layers })
    }

    /// NCHW images -> (layer2 output if `keep_layer2`, layer3 output), channels-last.
    pub fn forward(&self, images: &Tensor, keep_layer2: bool) -> Result<(Option<Act>, Act)> {
        let x = Act::from_nchw(images)?;
        let x = self.stem.forward(&x, None, true);
        let mut x = max_pool_3x3_s2(&x);
        let mut x2 = None;
        for (l, layer) in self.layers.iter().enumerate() {
            for blk in layer {
                let y = blk.c1.forward(&x, None, true);
                let y = blk.c2.forward(&y, None, true);
                let identity = blk.down.as_ref().map(|d| d.forward(&x, None, false));
                x = blk
                    .c3
                    .forward(&y, Some(identity.as_ref().unwrap_or(&x)), true);
            }
            if l == 1 && keep_layer2 {
                x2 = Some(Act {
                    data: x.data.clone(),
                    ..x
                });
            }
        }
        Ok((x2, x))
    }
}
