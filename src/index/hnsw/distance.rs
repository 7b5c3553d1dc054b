//! Inner products between an f32 query and stored rows (f32, f16 or int8), with an
//! AVX2+FMA path chosen at run time and a portable fallback.
//!
//! All vectors are L2-normalised, so the inner product is the cosine similarity.

/// Whether the AVX2/FMA/F16C kernels can run on this CPU (cached by std).
#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX-512F kernel can run on this CPU (cached by std).
#[inline]
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `<a, b>` for two f32 slices of the same length.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU supports avx512f (checked above); the kernel reads only
            // within the bounds of both slices.
            return unsafe { x86::dot_f32_avx512(a, b) };
        }
        if has_avx2() {
            // SAFETY: the CPU supports avx2+fma (checked above); the kernel reads only
            // within the bounds of both slices.
            return unsafe { x86::dot_f32(a, b) };
        }
    }
    dot_f32_scalar(a, b)
}

/// `<a, b>` where `b` holds IEEE half-precision bits.
#[inline]
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: avx2+fma+f16c present (checked above); reads stay within both slices.
        return unsafe { x86::dot_f16(a, b) };
    }
    a.iter()
        .zip(b)
        .map(|(x, &h)| x * half::f16::from_bits(h).to_f32())
        .sum()
}

/// An f32 query rounded to i16 steps, for exact integer inner products with int8 rows:
/// a madd of i16 by sign-extended i8 does 16 products in two instructions, where
/// converting every code to f32 took three per 8.
pub struct QueryI16 {
    pub codes: Vec<i16>,
    /// The value of one i16 unit: `max |q_i| / 2^14`, so every code is within +-2^14.
    pub step: f32,
}

impl QueryI16 {
    pub fn new(q: &[f32]) -> QueryI16 {
        let max = q.iter().fold(0f32, |m, x| m.max(x.abs()));
        let step = if max > 0.0 { max / 16384.0 } else { 1.0 };
        let codes = q.iter().map(|x| (x / step).round() as i16).collect();
        QueryI16 { codes, step }
    }

    /// Bound on `|<q, c> - step * <codes, c>|` over int8 rows `c` of this length: each
    /// code is off by at most half a step and `|c_i| <= 128`.
    pub fn rounding_bound(&self) -> f32 {
        self.step * 0.5 * 128.0 * self.codes.len() as f32
    }
}

/// `<a, b>`, exactly, for an i16 query and int8 codes of the same length.
#[inline]
pub fn dot_i16_i8(a: &[i16], b: &[i8]) -> i64 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: avx2 present (checked above); reads stay within both slices.
        return unsafe { x86::dot_i16_i8(a, b) };
    }
    a.iter().zip(b).map(|(&x, &c)| x as i64 * c as i64).sum()
}

/// `<a, b>`, exactly, for two int8 code rows of the same length with codes in
/// -127..=127 (as [`crate::index::disk::store::quantize`] writes them).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i64 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: avx2 present (checked above); reads stay within both slices.
        return unsafe { x86::dot_i8(a, b) };
    }
    a.iter().zip(b).map(|(&x, &y)| x as i64 * y as i64).sum()
}

fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums so that the loop vectorises without fast-math.
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Scales `v` to unit L2 norm in place; returns the original norm.
pub fn normalize(v: &mut [f32]) -> f32 {
    let norm = (v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>()).sqrt() as f32;
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
    norm
}

/// Lines to prefetch of an f32 row and of a compact (int8, f16) row; see [`prefetch`].
pub const PREFETCH_F32_LINES: usize = 4;
pub const PREFETCH_COMPACT_LINES: usize = 16;

/// Hints the CPU to fetch the first `max_lines` cache lines of `bytes`; the hardware
/// prefetcher streams the rest of a row once the dot product reads it. Measured with
/// 1024-d rows: whole 4 KiB f32 rows stalled on the line-fill buffers (57% of f32 search
/// time sat on prefetch instructions; 4 lines gave 1.3x the q/s of 64 on a 20k index),
/// while the 1 KiB int8 rows gain from being prefetched whole (16 lines rather than 4:
/// 1.2x on a 100k index whose rows do not fit in L3).
#[inline]
pub fn prefetch(bytes: &[u8], max_lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let lines = bytes.len().div_ceil(64).min(max_lines);
        for i in 0..lines {
            // SAFETY: prefetch is a hint that never faults; the address is inside `bytes`.
            unsafe { _mm_prefetch(bytes.as_ptr().add(i * 64) as *const i8, _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, max_lines);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_hadd_ps(s, s);
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // Four independent accumulators hide the FMA latency (4 cycles, 2 per cycle).
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            acc2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                acc2,
            );
            acc3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                acc3,
            );
            i += 32;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc0, acc1),
            _mm256_add_ps(acc2, acc3),
        ));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// Four 16-lane accumulators (64 floats a step), then 16 at a time, then a masked
    /// load for the last few.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut acc2 = _mm512_setzero_ps();
        let mut acc3 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 64 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
            acc2 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 32)),
                _mm512_loadu_ps(pb.add(i + 32)),
                acc2,
            );
            acc3 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 48)),
                _mm512_loadu_ps(pb.add(i + 48)),
                acc3,
            );
            i += 64;
        }
        while i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u16 << (n - i)) - 1;
            acc1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
                acc1,
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc0, acc1),
            _mm512_add_ps(acc2, acc3),
        ))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let h0 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i) as *const __m128i));
            let h1 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i + 8) as *const __m128i));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), h0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), h1, acc1);
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * half::f16::from_bits(*pb.add(i)).to_f32();
            i += 1;
        }
        s
    }

    /// The 32 products of the codes at `a` and `b`, summed in fours into i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn products_i8(a: *const i8, b: *const i8) -> __m256i {
        let a = _mm256_loadu_si256(a as *const __m256i);
        let b = _mm256_loadu_si256(b as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// The sum of the i32 lanes of two accumulators.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sum_lanes(acc0: __m256i, acc1: __m256i) -> i64 {
        let mut lanes = [0i32; 16];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc0);
        _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, acc1);
        lanes.iter().map(|&x| x as i64).sum()
    }

    /// `|a| * sign(a) b` in u8 x i8 pairs: `maddubs` adds two products of at most
    /// 127 * 127 into an i16 without saturating (codes never reach -128), `madd` by ones
    /// adds pairs of those into i32 lanes, 4 * 127^2 per lane per 32 elements; 2^14
    /// iterations stay below 2^31 before the lanes are moved into an i64.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut total = 0i64;
        let mut i = 0;
        while i + 32 <= n {
            let chunk_end = (i + 32 * 16384).min(n);
            let mut acc0 = _mm256_setzero_si256();
            let mut acc1 = _mm256_setzero_si256();
            while i + 64 <= chunk_end {
                acc0 = _mm256_add_epi32(acc0, products_i8(pa.add(i), pb.add(i)));
                acc1 = _mm256_add_epi32(acc1, products_i8(pa.add(i + 32), pb.add(i + 32)));
                i += 64;
            }
            if i + 32 <= chunk_end {
                acc0 = _mm256_add_epi32(acc0, products_i8(pa.add(i), pb.add(i)));
                i += 32;
            }
            total += sum_lanes(acc0, acc1);
        }
        while i < n {
            total += *pa.add(i) as i64 * *pb.add(i) as i64;
            i += 1;
        }
        total
    }

    /// The madd sums two products of at most 2^14 * 2^7 into an i32 lane, and each
    /// accumulator lane takes one such pair per 32 elements: 4,096 elements add at most
    /// 2^29 to a lane before the lanes are moved into an i64.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i16_i8(a: &[i16], b: &[i8]) -> i64 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut total = 0i64;
        let mut i = 0;
        while i + 16 <= n {
            let chunk_end = (i + 4096).min(n);
            let mut acc0 = _mm256_setzero_si256();
            let mut acc1 = _mm256_setzero_si256();
            while i + 32 <= chunk_end {
                let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
                let c1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16) as *const __m128i));
                let q0 = _mm256_loadu_si256(pa.add(i) as *const __m256i);
                let q1 = _mm256_loadu_si256(pa.add(i + 16) as *const __m256i);
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, c0));
                acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(q1, c1));
                i += 32;
            }
            if i + 16 <= chunk_end {
                let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
                let q0 = _mm256_loadu_si256(pa.add(i) as *const __m256i);
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, c0));
                i += 16;
            }
            total += sum_lanes(acc0, acc1);
        }
        while i < n {
            total += *pa.add(i) as i64 * *pb.add(i) as i64;
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vecs(n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..n).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.4).collect();
        let b = (0..n).map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5).collect();
        (a, b)
    }

    #[test]
    fn kernels_match_scalar() {
        for n in [0, 1, 7, 15, 16, 33, 47, 63, 64, 65, 1024, 1031] {
            let (a, b) = vecs(n);
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_f32(&a, &b) - want).abs() < 1e-4, "f32 n={n}");
            assert!((dot_f32_scalar(&a, &b) - want).abs() < 1e-4);
            // Every kernel this CPU can run, whichever one `dot_f32` picks.
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: avx2+fma present.
                    assert!((unsafe { x86::dot_f32(&a, &b) } - want).abs() < 1e-4);
                }
                if has_avx512() {
                    // SAFETY: avx512f present.
                    assert!((unsafe { x86::dot_f32_avx512(&a, &b) } - want).abs() < 1e-4);
                }
            }
            let h: Vec<u16> = b
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect();
            let want_h: f32 = a
                .iter()
                .zip(&h)
                .map(|(x, &y)| x * half::f16::from_bits(y).to_f32())
                .sum();
            assert!((dot_f16(&a, &h) - want_h).abs() < 1e-4, "f16 n={n}");
            let c: Vec<i8> = b.iter().map(|&x| (x * 200.0) as i8).collect();
            let q = QueryI16::new(&a);
            let want_c: i64 = q
                .codes
                .iter()
                .zip(&c)
                .map(|(&x, &y)| x as i64 * y as i64)
                .sum();
            assert_eq!(dot_i16_i8(&q.codes, &c), want_c, "i8 n={n}");
            let exact: f32 = a.iter().zip(&c).map(|(x, &y)| x * y as f32).sum();
            let approx = want_c as f32 * q.step;
            assert!(
                (exact - approx).abs() <= q.rounding_bound(),
                "i16 rounding n={n}"
            );
        }
    }

    /// Extreme codes over more than one 4,096-element chunk: no i32 lane may overflow.
    #[test]
    fn integer_dot_does_not_overflow() {
        for n in [4096, 4111, 9000, 20000] {
            let a = vec![i16::MAX >> 1; n];
            let b = vec![-128i8; n];
            let want = n as i64 * (i16::MAX >> 1) as i64 * -128;
            assert_eq!(dot_i16_i8(&a, &b), want, "n={n}");
        }
        let q = QueryI16::new(&[0.5, -1.0, 0.25]);
        assert_eq!(q.codes, vec![8192, -16384, 4096]);
        assert_eq!(QueryI16::new(&[0.0; 4]).codes, vec![0; 4]);
    }

    /// Every kernel of `dot_i8` this CPU has against the scalar sum, extreme codes over
    /// lengths that end mid-vector and one past the i32 chunk.
    #[test]
    fn int8_by_int8_matches_scalar() {
        // Every residue mod 255 shifted to -127..=127, the whole range of the codes.
        let codes = |n: usize, k: usize| -> Vec<i8> {
            (0..n)
                .map(|i| ((i * k + 11) % 255) as i16 - 127)
                .map(|x| x as i8)
                .collect()
        };
        let lengths = [
            0,
            1,
            31,
            32,
            33,
            63,
            64,
            65,
            100,
            1024,
            1031,
            32 * 16384 + 40,
        ];
        for n in lengths {
            let (a, b) = (codes(n, 37), codes(n, 91));
            let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
            assert_eq!(dot_i8(&a, &b), want, "n={n}");
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: avx2 present.
                assert_eq!(unsafe { x86::dot_i8(&a, &b) }, want, "avx2 n={n}");
            }
            let hi = vec![127i8; n];
            let lo = vec![-127i8; n];
            assert_eq!(dot_i8(&hi, &lo), -(n as i64) * 127 * 127, "extreme n={n}");
            assert_eq!(dot_i8(&lo, &lo), n as i64 * 127 * 127, "extreme n={n}");
        }
    }

    #[test]
    fn normalize_unit() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(normalize(&mut v), 5.0);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        let mut z = vec![0.0; 3];
        assert_eq!(normalize(&mut z), 0.0);
    }
}
