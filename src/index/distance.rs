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

/// `<a, b>` for two f32 slices of the same length.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports avx2+fma (checked above); the kernel reads only
        // within the bounds of both slices.
        return unsafe { x86::dot_f32(a, b) };
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

/// `<a, b>` where `b` holds int8 codes (multiply by the row's scale afterwards).
#[inline]
pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: avx2+fma present (checked above); reads stay within both slices.
        return unsafe { x86::dot_i8(a, b) };
    }
    a.iter().zip(b).map(|(x, &c)| x * c as f32).sum()
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

/// Hints the CPU to fetch the cache lines of `bytes` (first few lines only).
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let lines = bytes.len().div_ceil(64).min(64);
        for i in 0..lines {
            // SAFETY: prefetch is a hint that never faults; the address is inside `bytes`.
            unsafe { _mm_prefetch(bytes.as_ptr().add(i * 64) as *const i8, _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
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

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let codes = _mm_loadu_si128(pb.add(i) as *const __m128i);
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(codes, 8)));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), lo, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), hi, acc1);
            i += 16;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * *pb.add(i) as f32;
            i += 1;
        }
        s
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
        for n in [0, 1, 7, 16, 33, 47, 1024, 1031] {
            let (a, b) = vecs(n);
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_f32(&a, &b) - want).abs() < 1e-4, "f32 n={n}");
            assert!((dot_f32_scalar(&a, &b) - want).abs() < 1e-4);
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
            let want_c: f32 = a.iter().zip(&c).map(|(x, &y)| x * y as f32).sum();
            assert!((dot_i8(&a, &c) - want_c).abs() < 1e-2, "i8 n={n}");
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
