//! Inference-only ResNet trunk for the CPU: batch norm folded into the convolution weights
//! once at load, activations kept channels-last as `[B*H*W, C]` row-major matrices, so that
//! a 1x1 convolution is one matrix product, a k x k one an im2col (in row chunks) into
//! products, and the bias, residual and ReLU are fused around the product. Candle's CPU
//! convolution instead repacks NCHW to NHWC on every call and multiplies 512-pixel tiles.

use candle_core::{Device, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d};
use rayon::prelude::*;

use super::backbone::ResNet;
use super::bf16::{self, Epilogue, Kernel, PackedB};

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

/// A `[B, H, W, C]` activation in bf16 (raw bits), row-major (C fastest).
pub(crate) struct Act16 {
    pub data: Vec<u16>,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Act16 {
    fn from_act(x: &Act, kernel: Kernel) -> Act16 {
        let mut data = vec![0u16; x.data.len()];
        data.par_chunks_mut(1 << 14)
            .zip(x.data.par_chunks(1 << 14))
            .for_each(|(d, s)| bf16::convert(kernel, s, d));
        Act16 {
            data,
            b: x.b,
            h: x.h,
            w: x.w,
            c: x.c,
        }
    }

    fn to_act(&self) -> Act {
        Act {
            data: self
                .data
                .par_iter()
                .map(|&h| bf16::bf16_to_f32(h))
                .collect(),
            b: self.b,
            h: self.h,
            w: self.w,
            c: self.c,
        }
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
    /// `w` rounded to bf16 and packed for the bf16 kernels (built by `pack_bf16`).
    packed: Option<PackedB>,
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
            packed: None,
        })
    }

    /// Converts the folded weights to bf16 once (the bias stays f32).
    fn pack_bf16(&mut self) {
        let kk = self.k * self.k * self.cin;
        self.packed = Some(PackedB::pack(&self.w, kk, self.cout));
    }

    fn out_size(&self, x_h: usize, x_w: usize) -> (usize, usize) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        ((x_h + 2 * p - k) / s + 1, (x_w + 2 * p - k) / s + 1)
    }

    /// `relu?(conv(x) + bias + residual?)` with bf16 inputs, f32 accumulation and a bf16
    /// result; the im2col rows of each block of output pixels are built right before
    /// their product.
    fn forward16(&self, kernel: Kernel, x: &Act16, residual: Option<&Act16>, relu: bool) -> Act16 {
        let packed = self.packed.as_ref().expect("pack_bf16 before forward16");
        debug_assert_eq!(x.c, self.cin);
        let (oh, ow) = self.out_size(x.h, x.w);
        let rows = x.b * oh * ow;
        let mut out = vec![0u16; rows * self.cout];
        let direct = self.k == 1 && self.stride == 1 && self.pad == 0 && packed.kp == x.c;
        let kp = packed.kp;
        bf16::gemm(
            kernel,
            rows,
            packed,
            direct.then_some(&x.data[..]),
            |r0, block| {
                for (i, row) in block.chunks_mut(kp).enumerate() {
                    self.im2col_row16(x, r0 + i, oh, ow, row);
                }
            },
            Epilogue {
                bias: &self.bias,
                residual: residual.map(|r| &r.data[..]),
                relu,
            },
            &mut out,
        );
        Act16 {
            data: out,
            b: x.b,
            h: oh,
            w: ow,
            c: self.cout,
        }
    }

    /// [`Self::im2col_row`] for bf16 activations; the padding column of an odd k is zero.
    fn im2col_row16(&self, x: &Act16, r: usize, oh: usize, ow: usize, row: &mut [u16]) {
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
                    dst.fill(0);
                } else {
                    let src = ((b * x.h + iy as usize) * x.w + ix as usize) * c;
                    dst.copy_from_slice(&x.data[src..src + c]);
                }
            }
        }
        row[k * k * c..].fill(0);
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

/// [`max_pool_3x3_s2`] on bf16 (compared as f32; the maximum of bf16 values is one of them).
fn max_pool16(x: &Act16) -> Act16 {
    let (oh, ow) = ((x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1);
    let c = x.c;
    let mut out = vec![0u16; x.b * oh * ow * c];
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (b, oy) = (row / oh, row % oh);
        let mut best = vec![f32::NEG_INFINITY; c];
        for ox in 0..ow {
            best.fill(f32::NEG_INFINITY);
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
                    for (d, &v) in best.iter_mut().zip(&x.data[src..src + c]) {
                        *d = d.max(bf16::bf16_to_f32(v));
                    }
                }
            }
            for (d, v) in o[ox * c..(ox + 1) * c].iter_mut().zip(&best) {
                *d = bf16::f32_to_bf16(*v);
            }
        }
    });
    Act16 {
        data: out,
        b: x.b,
        h: oh,
        w: ow,
        c,
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
    /// The bf16 kernel when the trunk runs in bf16 (weights packed), else f32.
    bf16: Option<Kernel>,
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
        Ok(FastTrunk {
            stem,
            layers,
            bf16: None,
        })
    }

    /// Switches the trunk to bf16 products with `kernel` (weights converted now, once).
    pub fn use_bf16(&mut self, kernel: Kernel) {
        self.stem.pack_bf16();
        for blk in self.layers.iter_mut().flatten() {
            for c in [&mut blk.c1, &mut blk.c2, &mut blk.c3] {
                c.pack_bf16();
            }
            if let Some(d) = &mut blk.down {
                d.pack_bf16();
            }
        }
        self.bf16 = Some(kernel);
    }

    /// The bf16 kernel in use, `None` for f32.
    pub fn bf16_kernel(&self) -> Option<Kernel> {
        self.bf16
    }

    fn forward16(
        &self,
        kernel: Kernel,
        images: &Tensor,
        keep_layer2: bool,
    ) -> Result<(Option<Act>, Act)> {
        let x = Act16::from_act(&Act::from_nchw(images)?, kernel);
        let x = self.stem.forward16(kernel, &x, None, true);
        let mut x = max_pool16(&x);
        let mut x2 = None;
        for (l, layer) in self.layers.iter().enumerate() {
            for blk in layer {
                let y = blk.c1.forward16(kernel, &x, None, true);
                let y = blk.c2.forward16(kernel, &y, None, true);
                let identity = blk
                    .down
                    .as_ref()
                    .map(|d| d.forward16(kernel, &x, None, false));
                x = blk
                    .c3
                    .forward16(kernel, &y, Some(identity.as_ref().unwrap_or(&x)), true);
            }
            if l == 1 && keep_layer2 {
                x2 = Some(x.to_act());
            }
        }
        Ok((x2, x.to_act()))
    }

    /// NCHW images -> (layer2 output if `keep_layer2`, layer3 output), channels-last.
    pub fn forward(&self, images: &Tensor, keep_layer2: bool) -> Result<(Option<Act>, Act)> {
        if let Some(kernel) = self.bf16 {
            return self.forward16(kernel, images, keep_layer2);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    fn round(v: &[f32]) -> Vec<f32> {
        v.iter()
            .map(|&x| bf16::bf16_to_f32(bf16::f32_to_bf16(x)))
            .collect()
    }

    fn conv(k: usize, stride: usize, pad: usize, cin: usize, cout: usize) -> FoldedConv {
        let kk = k * k * cin;
        FoldedConv {
            k,
            stride,
            pad,
            cin,
            cout,
            // bf16-exact weights, so that the f32 path computes the same product.
            w: round(&values(kk * cout, (kk * 3 + cout) as u32)),
            bias: values(cout, 7),
            packed: None,
        }
    }

    /// A bf16 convolution equals the f32 one on bf16-exact inputs and weights, up to the
    /// rounding of the result to bf16 (and f32 summation order), for every kernel.
    #[test]
    fn bf16_convolutions_match_f32_on_awkward_shapes() {
        // (k, stride, pad, cin, cout, batch, h, w)
        for &(k, s, p, cin, cout, b, h, w) in &[
            (1, 1, 0, 16, 40, 1, 5, 7), // 1x1 direct product, partial panel
            (1, 1, 0, 3, 33, 2, 4, 3),  // 1x1 with an odd k (im2col pads)
            (1, 2, 0, 8, 64, 1, 9, 9),  // 1x1 stride 2 (downsample)
            (3, 2, 1, 6, 17, 1, 9, 8),  // 3x3 stride 2, batch 1, tails
            (3, 1, 1, 10, 32, 3, 6, 5), // 3x3 stride 1
            (7, 2, 3, 3, 8, 2, 17, 15), // the stem: k = 147
        ] {
            let mut c = conv(k, s, p, cin, cout);
            c.pack_bf16();
            let x = Act {
                data: round(&values(b * h * w * cin, (k + cin + h) as u32)),
                b,
                h,
                w,
                c: cin,
            };
            let (oh, ow) = c.out_size(h, w);
            let res = Act {
                data: round(&values(b * oh * ow * cout, 11)),
                b,
                h: oh,
                w: ow,
                c: cout,
            };
            for relu in [false, true] {
                let want = c.forward(&x, Some(&res), relu);
                for kernel in Kernel::available() {
                    let x16 = Act16::from_act(&x, kernel);
                    let r16 = Act16::from_act(&res, kernel);
                    let got = c.forward16(kernel, &x16, Some(&r16), relu).to_act();
                    assert_eq!((got.b, got.h, got.w, got.c), (b, oh, ow, cout));
                    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
                        let tol = w.abs() / 128.0 + 1e-4;
                        assert!(
                            (g - w).abs() <= tol,
                            "{kernel:?} k{k} s{s} cin{cin} cout{cout} b{b} at {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_max_pool_equals_f32_on_bf16_values() {
        let x = Act {
            data: round(&values(2 * 7 * 6 * 5, 3)),
            b: 2,
            h: 7,
            w: 6,
            c: 5,
        };
        let want = max_pool_3x3_s2(&x);
        let got = max_pool16(&Act16::from_act(&x, Kernel::Scalar)).to_act();
        assert_eq!(got.data, want.data);
        assert_eq!((got.h, got.w), (want.h, want.w));
    }
}
