//! 4-bit codes for the graph walk: the row rotated with bit1's seeded rotation, each
//! rotated coordinate rounded to one of 16 steps `lo + step * c` (per-row `lo` and
//! `step`), and two error terms per row from which the walk gets a strict bound.
//!
//! Codes are stored in blocks of 128 coordinates, 64 bytes each: byte `j` of block `b`
//! holds coordinate `128 b + j` in its low nibble and `128 b + 64 + j` in its high one.
//! The query is rotated the same way and rounded to signed 8-bit steps, so a row's
//! estimate is one u8 x i8 dot product (AVX-512 VNNI, AVX-512 BW or portable code,
//! chosen at run time).

use super::bits::Rotation;

/// Absolute slack added to every upper bound (f32 rounding of the rotation, the stored
/// terms and the estimate, all below 1e-5 for unit vectors).
pub const BOUND_SLACK: f32 = 1e-4;

/// Coordinates per code: the rotation's length rounded up to whole 128-coordinate blocks.
pub fn coded_dim(dim: usize) -> usize {
    super::bits::padded_dim(dim).max(128)
}

/// Bytes of one row's code.
pub fn code_bytes(dim: usize) -> usize {
    coded_dim(dim) / 2
}

/// Per-row terms: the steps `lo + step * c`, `err` = `|y - y~|` (y the rotated row,
/// y~ its decoded code) and `cnorm` = `|c|` (the codes as integers).
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Terms {
    pub lo: f32,
    pub step: f32,
    pub err: f32,
    pub cnorm: f32,
}

/// Index of coordinate `i` in the packed code: (byte, high nibble?).
#[inline]
fn slot(i: usize) -> (usize, bool) {
    let (b, j) = (i / 128, i % 128);
    (b * 64 + j % 64, j >= 64)
}

/// Code of coordinate `i` in a packed row.
#[inline]
pub fn nibble(code: &[u8], i: usize) -> u8 {
    let (b, high) = slot(i);
    if high {
        code[b] >> 4
    } else {
        code[b] & 15
    }
}

/// Encodes one row into `code` (`code_bytes(dim)` bytes). The range is the row's
/// min..max shrunk by the factor (of a few) that gives the smallest error norm:
/// clipping the tails of the rotated coordinates' near-Gaussian spread costs less
/// than the coarser step of the full range.
pub fn encode_row(rot: &Rotation, row: &[f32], code: &mut [u8], scratch: &mut Vec<f32>) -> Terms {
    rot.apply(row, scratch);
    let y = &scratch[..];
    let min = y.iter().copied().fold(f32::INFINITY, f32::min);
    let max = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mid = 0.5 * (min + max);
    let half = 0.5 * (max - min);
    let mut best = (f64::INFINITY, mid, 0f32);
    for f in [1.0f32, 0.9, 0.8, 0.7, 0.6, 0.5] {
        let lo = mid - f * half;
        let step = 2.0 * f * half / 15.0;
        if step.is_nan() || step <= 0.0 {
            best = (0.0, mid, 0.0);
            break;
        }
        let mut e2 = 0f64;
        for &v in y {
            let c = ((v - lo) / step).round().clamp(0.0, 15.0);
            let d = (v - (lo + step * c)) as f64;
            e2 += d * d;
        }
        if e2 < best.0 {
            best = (e2, lo, step);
        }
    }
    let (_, lo, step) = best;
    code.fill(0);
    let (mut e2, mut c2) = (0f64, 0f64);
    for (i, &v) in y.iter().enumerate() {
        let c = if step > 0.0 {
            ((v - lo) / step).round().clamp(0.0, 15.0)
        } else {
            0.0
        };
        let d = (v - (lo + step * c)) as f64;
        e2 += d * d;
        c2 += (c * c) as f64;
        let (b, high) = slot(i);
        code[b] |= (c as u8) << if high { 4 } else { 0 };
    }
    Terms {
        lo,
        step,
        err: e2.sqrt() as f32,
        cnorm: c2.sqrt() as f32,
    }
}

/// Which dot-product kernel runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512Bw,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    pub fn detect() -> Kernel {
        *Kernel::available()
            .last()
            .expect("portable is always there")
    }

    /// Every kernel this CPU can run, the fastest last.
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut v = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            let bw = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw");
            if bw {
                v.push(Kernel::Avx512Bw);
                if std::arch::is_x86_feature_detected!("avx512vnni") {
                    v.push(Kernel::Avx512Vnni);
                }
            }
        }
        v
    }

    /// `sum_i c_i v_i` over the packed 4-bit codes `code` (64 bytes a block) and the
    /// signed query steps `v` (128 a block).
    #[inline]
    pub fn dot(self, code: &[u8], v: &[i8]) -> i32 {
        assert_eq!(code.len() * 2, v.len());
        assert_eq!(code.len() % 64, 0);
        match self {
            Kernel::Portable => dot_portable(code, v),
            // SAFETY: these variants are only made by `available` after the CPU
            // reported the features; the lengths are checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bw => unsafe { x86::dot_bw(code, v) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::dot_vnni(code, v) },
        }
    }
}

/// Scalar reference of [`Kernel::dot`].
pub fn dot_portable(code: &[u8], v: &[i8]) -> i32 {
    let mut s = 0i32;
    for (block, q) in code.chunks_exact(64).zip(v.chunks_exact(128)) {
        for j in 0..64 {
            s += (block[j] & 15) as i32 * q[j] as i32 + (block[j] >> 4) as i32 * q[64 + j] as i32;
        }
    }
    s
}

/// A query prepared for 4-bit rows: rotated (`z`), rounded to `z ~ delta * v`,
/// `v` in -127..=127.
pub struct QueryNibbles {
    pub v: Vec<i8>,
    pub delta: f32,
    /// `sum_i z_i`.
    pub sum: f32,
    /// `|z|` and `|z - delta * v|`.
    pub norm: f32,
    pub err: f32,
    kernel: Kernel,
}

/// `y` rounded to the nearest integer, ties away from zero, as `f32::round` (a libm call
/// per coordinate on baseline x86-64): exact for |y| < 2^23, and beyond that (never here:
/// |y| <= 127 by the choice of `delta`) still on the right side of the clamp to +-127.
#[inline]
fn round_small(y: f32) -> f32 {
    let t = y as i32 as f32;
    let f = y - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

impl QueryNibbles {
    pub fn new(rot: &Rotation, q: &[f32], dim: usize) -> QueryNibbles {
        QueryNibbles::with_kernel(rot, q, dim, Kernel::detect())
    }

    pub fn with_kernel(rot: &Rotation, q: &[f32], dim: usize, kernel: Kernel) -> QueryNibbles {
        let mut z = Vec::new();
        rot.apply(q, &mut z);
        let max = z.iter().fold(0f32, |m, x| m.max(x.abs()));
        let delta = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut v = vec![0i8; coded_dim(dim)];
        let (mut e2, mut n2, mut sum) = (0f64, 0f64, 0f64);
        for (i, &x) in z.iter().enumerate() {
            let c = round_small(x / delta).clamp(-127.0, 127.0);
            v[i] = c as i8;
            let d = (x - delta * c) as f64;
            e2 += d * d;
            n2 += x as f64 * x as f64;
            sum += x as f64;
        }
        QueryNibbles {
            v,
            delta,
            sum: sum as f32,
            norm: n2.sqrt() as f32,
            err: e2.sqrt() as f32,
            kernel,
        }
    }

    /// Estimate of `<o, q>`: `lo * sum(z) + step * delta * <c, v>`.
    #[inline]
    pub fn estimate(&self, code: &[u8], t: Terms) -> f32 {
        let d = self.kernel.dot(code, &self.v);
        t.lo * self.sum + t.step * self.delta * d as f32
    }

    /// Strict upper bound on `<o, q>`: `<y, z> = <y~, z> + <y - y~, z>`, the second at
    /// most `err * |z|`; `<y~, z> = lo sum(z) + step <c, z>` and `<c, z>` differs from
    /// `delta <c, v>` by at most `cnorm * |z - delta v|` (Cauchy-Schwarz both times).
    #[inline]
    pub fn upper_bound(&self, est: f32, t: Terms) -> f32 {
        est + (t.err * self.norm + t.step * t.cnorm * self.err) * (1.0 + 1e-5) + BOUND_SLACK
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 64 code bytes a step: low and high nibbles split into two byte vectors, each
    /// multiplied with its 64 query bytes by VPDPBUSD (u8 x i8, four products a lane
    /// summed into i32).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot_vnni(code: &[u8], v: &[i8]) -> i32 {
        let mask = _mm512_set1_epi8(15);
        let mut acc = _mm512_setzero_si512();
        let mut acc2 = _mm512_setzero_si512();
        for b in 0..code.len() / 64 {
            let x = _mm512_loadu_si512(code.as_ptr().add(b * 64) as *const _);
            let lo = _mm512_and_si512(x, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
            let q0 = _mm512_loadu_si512(v.as_ptr().add(b * 128) as *const _);
            let q1 = _mm512_loadu_si512(v.as_ptr().add(b * 128 + 64) as *const _);
            acc = _mm512_dpbusd_epi32(acc, lo, q0);
            acc2 = _mm512_dpbusd_epi32(acc2, hi, q1);
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(acc, acc2))
    }

    /// The same with VPMADDUBSW (pairs summed into i16: at most 2 * 15 * 127, no
    /// saturation) and VPMADDWD against ones.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dot_bw(code: &[u8], v: &[i8]) -> i32 {
        let mask = _mm512_set1_epi8(15);
        let ones = _mm512_set1_epi16(1);
        let mut acc = _mm512_setzero_si512();
        for b in 0..code.len() / 64 {
            let x = _mm512_loadu_si512(code.as_ptr().add(b * 64) as *const _);
            let lo = _mm512_and_si512(x, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
            let q0 = _mm512_loadu_si512(v.as_ptr().add(b * 128) as *const _);
            let q1 = _mm512_loadu_si512(v.as_ptr().add(b * 128 + 64) as *const _);
            let p = _mm512_add_epi16(_mm512_maddubs_epi16(lo, q0), _mm512_maddubs_epi16(hi, q1));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, ones));
        }
        _mm512_reduce_add_epi32(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hnsw::bits::DEFAULT_SEED;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_small_rounds_as_f32_round() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let ties = (-300..=300).map(|i| i as f32 * 0.5);
        let near_ties = (-300..=300).flat_map(|i| {
            let t = i as f32 * 0.5;
            [t.next_up(), t.next_down()]
        });
        let random = (0..100_000).map(|_| rng.gen_range(-200.0f32..200.0));
        for y in ties
            .chain(near_ties)
            .chain(random)
            .chain([0.0, -0.0, 8388607.5])
        {
            assert_eq!(round_small(y), y.round(), "{y}");
        }
        for y in [1e9f32, -1e9, f32::MAX, f32::MIN] {
            assert_eq!(
                round_small(y).clamp(-127.0, 127.0),
                y.round().clamp(-127.0, 127.0)
            );
        }
    }

    #[test]
    fn every_kernel_matches_the_scalar_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let kernels = Kernel::available();
        eprintln!("bit4 kernels on this CPU: {kernels:?}");
        for blocks in [1usize, 2, 3, 8, 16] {
            for _ in 0..20 {
                let code: Vec<u8> = (0..blocks * 64).map(|_| rng.gen()).collect();
                let v: Vec<i8> = (0..blocks * 128)
                    .map(|_| rng.gen_range(-127i32..=127) as i8)
                    .collect();
                // The reference, coordinate by coordinate through `slot`.
                let mut want = 0i32;
                for (i, &q) in v.iter().enumerate() {
                    let (b, high) = slot(i);
                    let c = if high { code[b] >> 4 } else { code[b] & 15 };
                    want += c as i32 * q as i32;
                }
                for k in &kernels {
                    assert_eq!(k.dot(&code, &v), want, "{k:?} blocks {blocks}");
                }
            }
        }
    }

    #[test]
    fn estimate_bound_holds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for dim in [5usize, 64, 100, 256, 1024] {
            let rot = Rotation::new(dim, DEFAULT_SEED);
            let mut rows: Vec<Vec<f32>> = (0..40)
                .map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect())
                .collect();
            let base = rows[0].clone();
            rows.push(base.iter().map(|x| -x).collect());
            let mut one_hot = vec![0.0; dim];
            one_hot[dim / 2] = 1.0;
            rows.push(one_hot);
            for r in rows.iter_mut() {
                crate::index::hnsw::distance::normalize(r);
            }
            let mut scratch = Vec::new();
            let mut code = vec![0u8; code_bytes(dim)];
            let coded: Vec<(Vec<u8>, Terms)> = rows
                .iter()
                .map(|r| {
                    let t = encode_row(&rot, r, &mut code, &mut scratch);
                    (code.clone(), t)
                })
                .collect();
            let (mut err, mut n) = (0f32, 0f32);
            for q in &rows {
                for k in Kernel::available() {
                    let qn = QueryNibbles::with_kernel(&rot, q, dim, k);
                    for (r, (code, t)) in rows.iter().zip(&coded) {
                        let exact: f32 = q.iter().zip(r).map(|(a, b)| a * b).sum();
                        let est = qn.estimate(code, *t);
                        assert!(exact <= qn.upper_bound(est, *t), "dim {dim}");
                        err += (exact - est).abs();
                        n += 1.0;
                    }
                }
            }
            eprintln!("dim {dim}: mean |error| {}", err / n);
            assert!(err / n < 0.05, "dim {dim}: mean |error| {}", err / n);
        }
    }
}
