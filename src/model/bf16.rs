//! bf16 matrix products for the folded CPU trunk: bf16 inputs (activations and weights),
//! f32 accumulation, a fused epilogue (bias, optional bf16 residual, optional ReLU) that
//! rounds the result back to bf16.
//!
//! Two kernels compute the same thing: [`Kernel::Avx512Bf16`] (`vdpbf16ps`, chosen at run
//! time where the CPU has AVX512-BF16) and [`Kernel::Scalar`], the reference the tests
//! compare it with. The scalar kernel follows the instruction's documented arithmetic:
//! for each pair of k, `acc += a[2p+1]*b[2p+1]` then `acc += a[2p]*b[2p]`, each a
//! single-rounded f32 add of an exact product; denormal inputs and outputs are zero.
//!
//! Weights are packed once ([`PackedB`]): k padded to an even count, n to panels of
//! [`NR`] columns, each panel stored as `[k/2][NR][2]` so that one 64-byte load gives the
//! two k of 16 columns that `vdpbf16ps` multiplies with a broadcast pair of an A row.

use rayon::prelude::*;

/// Columns per packed weight panel (two 16-lane f32 accumulators).
pub(crate) const NR: usize = 32;
/// Rows per register tile of the AVX512-BF16 kernel (2 x 12 accumulators).
const MR: usize = 12;
/// Rows per parallel task: a block of A (im2col rows) is built and multiplied by every
/// weight panel while it is in the core's cache.
pub(crate) const MC: usize = 4 * MR;

/// Environment variable that hides AVX512-BF16 from the dispatch (to test the refusal on a
/// CPU without it; documented in the README).
pub const DISABLE_ENV: &str = "TAILOR_DISABLE_AVX512BF16";

/// A bf16 matrix-product kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable reference: one f32 multiply-add per product, in the hardware's order.
    Scalar,
    /// `vdpbf16ps` on 512-bit registers (x86-64 with AVX512F, AVX512BW and AVX512-BF16).
    Avx512Bf16,
}

impl Kernel {
    /// The fastest bf16 kernel this CPU runs, or `None` where it has no bf16 instructions
    /// (or [`DISABLE_ENV`] is set to anything but `0`).
    pub fn detect() -> Option<Kernel> {
        if std::env::var(DISABLE_ENV).is_ok_and(|v| v != "0") {
            return None;
        }
        Self::hardware()
    }

    #[cfg(target_arch = "x86_64")]
    fn hardware() -> Option<Kernel> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16"))
        .then_some(Kernel::Avx512Bf16)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn hardware() -> Option<Kernel> {
        None
    }

    /// Every kernel this CPU can run (the scalar one always): what the tests exercise.
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::Scalar];
        v.extend(Self::hardware());
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx512Bf16 => "avx512-bf16",
        }
    }
}

/// f32 -> bf16, round to nearest even, NaN kept quiet, denormals flushed to signed zero
/// (what `vcvtneps2bf16` does).
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The value the dot-product instruction sees: denormals read as zero.
fn bf16_daz(h: u16) -> f32 {
    if h & 0x7f80 == 0 {
        0.0
    } else {
        bf16_to_f32(h)
    }
}

/// f32 with denormals flushed to zero, as the instruction leaves its accumulator.
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// Converts `src` into `dst` (same length) with [`f32_to_bf16`]'s rounding.
pub(crate) fn convert(kernel: Kernel, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    match kernel {
        Kernel::Scalar => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = f32_to_bf16(*s);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bf16 => {
            // SAFETY: this kernel is only handed out by `Kernel::hardware`, after run-time
            // detection of avx512f, avx512bw and avx512bf16.
            unsafe { avx512::convert(src, dst) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx512Bf16 => unreachable!("AVX512-BF16 is never detected off x86-64"),
    }
}

/// Weights `[k, n]` (row-major f32), rounded to bf16 and packed in [`NR`]-column panels of
/// `[kp/2][NR][2]`, zero-padded to `kp = k rounded up to even` rows and whole panels.
pub(crate) struct PackedB {
    pub kp: usize,
    pub n: usize,
    data: Vec<u16>,
}

impl PackedB {
    pub fn pack(w: &[f32], k: usize, n: usize) -> PackedB {
        assert_eq!(w.len(), k * n);
        let kp = k.next_multiple_of(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * kp * NR];
        for p in 0..panels {
            let panel = &mut data[p * kp * NR..(p + 1) * kp * NR];
            for kk in 0..k {
                for j in 0..NR.min(n - p * NR) {
                    panel[(kk / 2) * 2 * NR + j * 2 + kk % 2] = f32_to_bf16(w[kk * n + p * NR + j]);
                }
            }
        }
        PackedB { kp, n, data }
    }

    fn panel(&self, p: usize) -> &[u16] {
        &self.data[p * self.kp * NR..(p + 1) * self.kp * NR]
    }

    /// Packed element (k, j) of panel p, for the scalar kernel.
    fn at(&self, kk: usize, col: usize) -> u16 {
        let (p, j) = (col / NR, col % NR);
        self.panel(p)[(kk / 2) * 2 * NR + j * 2 + kk % 2]
    }
}

/// What follows the product: `out = relu?(a*b + bias + residual?)`, rounded to bf16.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub bias: &'a [f32],
    /// `[rows, n]` bf16, the same rows as the output.
    pub residual: Option<&'a [u16]>,
    pub relu: bool,
}

/// `out[rows, n] = epilogue(a[rows, kp] * b)`, rows split over rayon in blocks of [`MC`].
/// `fill(r0, block)` writes A rows `r0..r0 + block.len() / kp` (bf16, `kp` wide, with any
/// padding columns zero) into `block`; `direct`, when given, is A itself (`[rows, kp]`)
/// and no copy is made.
pub(crate) fn gemm<F>(
    kernel: Kernel,
    rows: usize,
    b: &PackedB,
    direct: Option<&[u16]>,
    fill: F,
    ep: Epilogue,
    out: &mut [u16],
) where
    F: Fn(usize, &mut [u16]) + Sync,
{
    let (n, kp) = (b.n, b.kp);
    assert_eq!(out.len(), rows * n);
    assert_eq!(ep.bias.len(), n);
    if let Some(r) = ep.residual {
        assert_eq!(r.len(), rows * n);
    }
    if let Some(a) = direct {
        assert_eq!(a.len(), rows * kp);
    }
    if rows == 0 || n == 0 {
        return;
    }
    out.par_chunks_mut(MC * n).enumerate().for_each_init(
        Vec::new,
        |buf: &mut Vec<u16>, (blk, o)| {
            let r0 = blk * MC;
            let m = o.len() / n;
            let a: &[u16] = match direct {
                Some(a) => &a[r0 * kp..(r0 + m) * kp],
                None => {
                    buf.resize(m * kp, 0);
                    fill(r0, &mut buf[..m * kp]);
                    &buf[..m * kp]
                }
            };
            let res = ep.residual.map(|r| &r[r0 * n..(r0 + m) * n]);
            block(kernel, a, m, b, ep.bias, res, ep.relu, o);
        },
    );
}

/// One block of `m` rows, single-threaded.
#[allow(clippy::too_many_arguments)]
fn block(
    kernel: Kernel,
    a: &[u16],
    m: usize,
    b: &PackedB,
    bias: &[f32],
    res: Option<&[u16]>,
    relu: bool,
    out: &mut [u16],
) {
    match kernel {
        Kernel::Scalar => scalar_block(a, m, b, bias, res, relu, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bf16 => {
            // SAFETY: handed out only after run-time detection of avx512f/bw/bf16; the
            // slices' lengths are checked by `gemm` (a: m*kp, out and res: m*n).
            unsafe { avx512::block(a, m, b, bias, res, relu, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx512Bf16 => unreachable!("AVX512-BF16 is never detected off x86-64"),
    }
}

fn scalar_block(
    a: &[u16],
    m: usize,
    b: &PackedB,
    bias: &[f32],
    res: Option<&[u16]>,
    relu: bool,
    out: &mut [u16],
) {
    let (n, kp) = (b.n, b.kp);
    for r in 0..m {
        let row = &a[r * kp..(r + 1) * kp];
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..kp / 2 {
                acc = ftz(acc + bf16_daz(row[2 * p + 1]) * bf16_daz(b.at(2 * p + 1, j)));
                acc = ftz(acc + bf16_daz(row[2 * p]) * bf16_daz(b.at(2 * p, j)));
            }
            let mut v = acc + bias[j];
            if let Some(res) = res {
                v += bf16_to_f32(res[r * n + j]);
            }
            if relu {
                v = v.max(0.0);
            }
            out[r * n + j] = f32_to_bf16(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{PackedB, MR, NR};

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
            i += 16;
        }
        if i < n {
            let mask = (1u16 << (n - i)) - 1;
            let v = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(i) as *mut i16, mask, h);
        }
    }

    /// All panels for one block of rows: for each panel, register tiles of [`MR`] rows
    /// (then the remaining rows), each over the full k.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn block(
        a: &[u16],
        m: usize,
        b: &PackedB,
        bias: &[f32],
        res: Option<&[u16]>,
        relu: bool,
        out: &mut [u16],
    ) {
        let n = b.n;
        for p in 0..n.div_ceil(NR) {
            let panel = b.panel(p).as_ptr();
            let c0 = p * NR;
            let cols = NR.min(n - c0);
            let mut r = 0;
            while r < m {
                let t = MR.min(m - r);
                let ctx = Tile {
                    a: a.as_ptr().add(r * b.kp),
                    lda: b.kp,
                    pairs: b.kp / 2,
                    panel,
                    bias: bias.as_ptr().add(c0),
                    res: res.map(|x| x.as_ptr().add(r * n + c0)),
                    out: out.as_mut_ptr().add(r * n + c0),
                    ldc: n,
                    cols,
                    relu,
                };
                match t {
                    12 => tile::<12>(&ctx),
                    11 => tile::<11>(&ctx),
                    10 => tile::<10>(&ctx),
                    9 => tile::<9>(&ctx),
                    8 => tile::<8>(&ctx),
                    7 => tile::<7>(&ctx),
                    6 => tile::<6>(&ctx),
                    5 => tile::<5>(&ctx),
                    4 => tile::<4>(&ctx),
                    3 => tile::<3>(&ctx),
                    2 => tile::<2>(&ctx),
                    _ => tile::<1>(&ctx),
                }
                r += t;
            }
        }
    }

    struct Tile {
        a: *const u16,
        lda: usize,
        pairs: usize,
        panel: *const u16,
        bias: *const f32,
        res: Option<*const u16>,
        out: *mut u16,
        ldc: usize,
        /// Valid columns of this panel (NR, or fewer in the last one).
        cols: usize,
        relu: bool,
    }

    /// `R` rows x [`NR`] columns: 2R accumulators in registers over all k pairs, then the
    /// epilogue with masked loads/stores for a partial panel.
    #[inline(always)]
    unsafe fn tile<const R: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let mut bp = t.panel;
        for p in 0..t.pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(32) as *const _));
            for (i, acc) in acc.iter_mut().enumerate() {
                let pair = (t.a.add(i * t.lda + 2 * p) as *const i32).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
            bp = bp.add(2 * NR);
        }
        let lo = t.cols.min(16);
        let hi = t.cols - lo;
        let mask = |c: usize| -> u16 {
            if c >= 16 {
                u16::MAX
            } else {
                (1u16 << c) - 1
            }
        };
        let masks = [mask(lo), mask(hi)];
        let zero = _mm512_setzero_ps();
        for (i, acc) in acc.iter().enumerate() {
            for (h, &mk) in masks.iter().enumerate() {
                if mk == 0 {
                    continue;
                }
                let mut v = _mm512_add_ps(acc[h], _mm512_maskz_loadu_ps(mk, t.bias.add(16 * h)));
                if let Some(res) = t.res {
                    let r16 =
                        _mm256_maskz_loadu_epi16(mk, res.add(i * t.ldc + 16 * h) as *const i16);
                    let rf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r16), 16));
                    v = _mm512_add_ps(v, rf);
                }
                if t.relu {
                    v = _mm512_max_ps(v, zero);
                }
                let o: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(t.out.add(i * t.ldc + 16 * h) as *mut i16, mk, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2) with some exact zeros.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 11 == 5 {
                    0.0
                } else {
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                }
            })
            .collect()
    }

    #[test]
    fn scalar_rounding_matches_hand_worked_cases() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80, "rounds up to infinity");
        assert_eq!(f32_to_bf16(1e-40), 0, "denormal flushed");
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn every_kernel_converts_like_the_scalar_rounding() {
        let mut src = values(1000 + 13, 3);
        src.extend([
            0.0,
            -0.0,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x3f80_7fff),
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
        ]);
        let mut want = vec![0u16; src.len()];
        convert(Kernel::Scalar, &src, &mut want);
        for k in Kernel::available() {
            for len in [0, 1, 15, 16, 17, src.len()] {
                let mut got = vec![0u16; len];
                convert(k, &src[..len], &mut got);
                assert_eq!(got, want[..len], "{k:?} len {len}");
            }
            let mut nan = [0u16];
            convert(k, &[f32::NAN], &mut nan);
            assert!(bf16_to_f32(nan[0]).is_nan(), "{k:?}");
        }
    }

    /// The product computed in f64 from the same bf16 values: both kernels must be within
    /// f32 accumulation error of it, and the hardware kernel equal to the scalar one up to
    /// one bf16 rounding step of the output.
    #[allow(clippy::too_many_arguments)]
    fn check(m: usize, k: usize, n: usize, residual: bool, relu: bool, direct: bool) {
        let a32 = values(m * k, (m * 31 + k * 7 + n) as u64);
        let w = values(k * n, (k * 5 + n) as u64);
        let bias = values(n, 99 + n as u64);
        let b = PackedB::pack(&w, k, n);
        let kp = b.kp;
        // A rows padded to kp with zeros, as im2col writes them.
        let mut a = vec![0u16; m * kp];
        for r in 0..m {
            for c in 0..k {
                a[r * kp + c] = f32_to_bf16(a32[r * k + c]);
            }
        }
        let res: Vec<u16> = values(m * n, 7).iter().map(|&v| f32_to_bf16(v)).collect();
        let ep = Epilogue {
            bias: &bias,
            residual: residual.then_some(&res[..]),
            relu,
        };
        let fill =
            |r0: usize, blk: &mut [u16]| blk.copy_from_slice(&a[r0 * kp..r0 * kp + blk.len()]);
        let mut want = vec![0u16; m * n];
        gemm(
            Kernel::Scalar,
            m,
            &b,
            direct.then_some(&a[..]),
            fill,
            ep,
            &mut want,
        );
        // Independent f64 reference from the unpacked weights.
        for r in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (bias[j] as f64, bias[j].abs() as f64);
                for c in 0..k {
                    let x = bf16_to_f32(a[r * kp + c]) as f64
                        * bf16_to_f32(f32_to_bf16(w[c * n + j])) as f64;
                    s += x;
                    mag += x.abs();
                }
                if residual {
                    let x = bf16_to_f32(res[r * n + j]) as f64;
                    s += x;
                    mag += x.abs();
                }
                if relu {
                    s = s.max(0.0);
                }
                let got = bf16_to_f32(want[r * n + j]) as f64;
                let tol = mag * (k as f64 + 2.0) * 1e-7 + s.abs() / 128.0;
                assert!((got - s).abs() <= tol, "scalar ({r},{j}) {got} vs {s}");
            }
        }
        for kernel in Kernel::available() {
            let mut got = vec![0u16; m * n];
            gemm(kernel, m, &b, direct.then_some(&a[..]), fill, ep, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (gf, wf) = (bf16_to_f32(*g), bf16_to_f32(*w));
                assert!(
                    g == w || (gf - wf).abs() <= wf.abs().max(gf.abs()) / 64.0,
                    "{kernel:?} m {m} k {k} n {n} at {i}: {gf} vs {wf}"
                );
            }
        }
    }

    #[test]
    fn every_kernel_equals_the_reference_on_awkward_shapes() {
        // (rows, k, n): single row, odd k, partial panels, rows beyond a tile and a block.
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 2, 32),
            (1, 147, 64),
            (5, 3, 17),
            (13, 64, 33),
            (12, 9 * 8, 16),
            (49, 27, 40),
            (MC + 7, 130, 95),
            (2 * MC, 256, 64),
        ] {
            for (residual, relu) in [(false, false), (true, true), (false, true)] {
                check(m, k, n, residual, relu, false);
            }
            if k % 2 == 0 {
                check(m, k, n, true, true, true);
            }
        }
    }
}
