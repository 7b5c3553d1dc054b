//! Blocked inner products of query rows against candidate rows (`S = Q C^T`), for exact
//! evaluation.
//!
//! Both operands are gathered once into panel layouts that a register-blocked
//! micro-kernel reads sequentially: candidates in panels of [`NR`] rows stored k-major
//! (`[panel][k][NR]`), queries in panels of [`MR`] rows (`[panel][k][MR]`). Gathering
//! and packing are one pass, so candidate rows may be any subset of a memory-mapped
//! matrix.
//!
//! Blocking follows the usual sgemm plan, with the candidates as the vector operand: a
//! candidate micro-panel of `kc` dimensions (`kc x NR` floats) stays in L1 while every
//! query micro-panel of the block streams past it from L2 (`MR` broadcasts per step,
//! against `NR` vector loads per step if the roles were swapped). Candidates are walked
//! in chunks whose score columns (`block x chunk` floats) stay in L2, so the partial sums
//! carried between `kc` slabs never go to memory. The micro-kernel reads and writes its
//! `MR x NR` tile directly in the score rows.
//!
//! Kernels: AVX-512 (chosen at run time), AVX2+FMA, and a portable one. They sum in the
//! same order; the portable one rounds the product before adding (no FMA), so scores can
//! differ in the last bit between machines without FMA and machines with it.

use rayon::prelude::*;

/// Query rows per micro-tile.
pub const MR: usize = 8;
/// Candidate rows per micro-tile (three AVX-512 vectors).
pub const NR: usize = 48;
/// Bytes of score columns (`block x chunk` floats) kept in L2 across the `kc` slabs.
const CHUNK_BYTES: usize = 512 * 1024;
/// Dimensions per slab: a candidate micro-panel of `kc x NR` floats (36 KiB) stays in a
/// 48 KiB L1.
const DEFAULT_KC: usize = 192;

/// f32 storage aligned to 64 bytes, so that packed panels never straddle cache lines.
#[derive(Debug, Default)]
pub struct AlignedBuf {
    raw: Vec<f32>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    /// Resizes to `len` zeros (contents are not kept).
    pub fn reset(&mut self, len: usize) {
        let fresh = self.raw.len() < len + 16;
        if fresh {
            // Zeroed by the allocator (fresh pages), so no second pass over it.
            self.raw = vec![0.0; len + 16];
        }
        let addr = self.raw.as_ptr() as usize;
        self.offset = ((64 - addr % 64) % 64) / 4;
        self.len = len;
        if !fresh {
            self.as_mut_slice().fill(0.0);
        }
    }
    /// Resizes to `len` floats without clearing reused memory (the caller overwrites all
    /// of it).
    pub fn resize_for_overwrite(&mut self, len: usize) {
        if self.raw.len() < len + 16 {
            self.raw = vec![0.0; len + 16];
        }
        let addr = self.raw.as_ptr() as usize;
        self.offset = ((64 - addr % 64) % 64) / 4;
        self.len = len;
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.raw[self.offset..self.offset + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.offset..self.offset + self.len]
    }
}

/// Candidate rows packed for [`score_block`].
#[derive(Debug)]
pub struct PackedCandidates {
    dim: usize,
    count: usize,
    panels: AlignedBuf,
}

impl PackedCandidates {
    /// Gathers `rows` of the row-major `matrix` (rows of `dim` floats) into panels, in
    /// parallel. Every row index must be in range (checked by the caller).
    pub fn pack(matrix: &[f32], dim: usize, rows: &[usize]) -> Self {
        let mut packed = PackedCandidates {
            dim,
            count: 0,
            panels: AlignedBuf::default(),
        };
        packed.repack(matrix, dim, rows);
        packed
    }

    /// [`PackedCandidates::pack`] into this buffer, reusing its memory (no fresh pages
    /// to fault in when one evaluation packs attribute after attribute).
    pub fn repack(&mut self, matrix: &[f32], dim: usize, rows: &[usize]) {
        let panel_len = dim * NR;
        self.dim = dim;
        self.count = rows.len();
        self.panels
            .resize_for_overwrite(rows.len().div_ceil(NR) * panel_len);
        if panel_len == 0 {
            return;
        }
        self.panels
            .as_mut_slice()
            .par_chunks_mut(panel_len)
            .zip(rows.par_chunks(NR))
            .for_each(|(panel, rows)| {
                if rows.len() < NR {
                    // The padding columns of the last panel score zero.
                    panel.fill(0.0);
                }
                pack_panel(matrix, dim, rows, NR, panel)
            });
    }
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// Writes `rows` (at most `width`) into a k-major panel `[dim][width]`, zero-padded.
/// Dimensions go 16 at a time (one cache line of each row), so the writes of a step
/// stay within a few KiB instead of striding over the whole panel.
fn pack_panel(matrix: &[f32], dim: usize, rows: &[usize], width: usize, panel: &mut [f32]) {
    const STEP: usize = 16;
    for k0 in (0..dim).step_by(STEP) {
        let k1 = (k0 + STEP).min(dim);
        let dst = &mut panel[k0 * width..k1 * width];
        for (j, &row) in rows.iter().enumerate() {
            let src = &matrix[row * dim + k0..row * dim + k1];
            for (d, &v) in dst.iter_mut().skip(j).step_by(width).zip(src) {
                *d = v;
            }
        }
    }
}

/// Packs query rows into `buf` as `[panel][dim][MR]`, zero-padded to whole panels.
pub fn pack_queries(matrix: &[f32], dim: usize, rows: &[usize], buf: &mut AlignedBuf) {
    let panel_len = dim * MR;
    buf.reset(rows.len().div_ceil(MR) * panel_len);
    if panel_len == 0 {
        return;
    }
    for (panel, rows) in buf
        .as_mut_slice()
        .chunks_mut(panel_len)
        .zip(rows.chunks(MR))
    {
        pack_panel(matrix, dim, rows, MR, panel);
    }
}

type Tile = [[f32; NR]; MR];
/// `(query part, candidate part, steps, tile, tile row stride, accumulate)`: the `MR x NR`
/// tile of products over `steps` dimensions, written at `tile` (rows `stride` floats
/// apart), added to what is there when `accumulate`.
type MicroKernel = unsafe fn(*const f32, *const f32, usize, *mut f32, usize, bool);

/// Scores `queries` (packed by [`pack_queries`], `nq` rows) against every candidate into
/// `out` (`nq x candidates.count()`, row-major). Single-threaded: callers parallelise
/// over query blocks.
pub fn score_block(
    queries: &AlignedBuf,
    nq: usize,
    candidates: &PackedCandidates,
    out: &mut [f32],
) {
    score_block_with(queries, nq, candidates, out, Blocking::default());
}

/// Cache blocking of [`score_block_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Dimensions per slab (a candidate micro-panel of `kc x NR` floats stays in L1).
    pub kc: usize,
    /// Bytes of score columns (`block x chunk` floats) kept in L2 across the slabs.
    pub chunk_bytes: usize,
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking {
            kc: DEFAULT_KC,
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

/// [`score_block`] with explicit cache blocking (for tuning).
pub fn score_block_with(
    queries: &AlignedBuf,
    nq: usize,
    candidates: &PackedCandidates,
    out: &mut [f32],
    blocking: Blocking,
) {
    let dim = candidates.dim;
    let n = candidates.count;
    assert_eq!(out.len(), nq * n, "score buffer has the wrong size");
    assert_eq!(queries.as_slice().len(), nq.div_ceil(MR) * dim * MR);
    if nq == 0 || n == 0 {
        return;
    }
    if dim == 0 {
        out.fill(0.0);
        return;
    }
    let kernel = select_kernel();
    let kc = blocking.kc.clamp(1, dim);
    let q_panels = queries.as_slice();
    let c_panels = candidates.panels.as_slice();
    let chunk_panels = (blocking.chunk_bytes / (nq * NR * 4)).max(1);
    let n_panels = n.div_ceil(NR);
    // Edge tiles (fewer than MR rows or NR columns) go through this buffer.
    let mut edge: Tile = [[0.0; NR]; MR];
    for chunk_start in (0..n_panels).step_by(chunk_panels) {
        let chunk_end = (chunk_start + chunk_panels).min(n_panels);
        for k0 in (0..dim).step_by(kc) {
            let steps = kc.min(dim - k0);
            let accumulate = k0 > 0;
            for cp in chunk_start..chunk_end {
                let c_panel = &c_panels[cp * dim * NR..(cp + 1) * dim * NR];
                let c_part = &c_panel[k0 * NR..(k0 + steps) * NR];
                let c0 = cp * NR;
                let cols = NR.min(n - c0);
                for (qp, q_panel) in q_panels.chunks_exact(dim * MR).enumerate() {
                    let q0 = qp * MR;
                    let rows = MR.min(nq - q0);
                    let q_part = &q_panel[k0 * MR..(k0 + steps) * MR];
                    if rows == MR && cols == NR {
                        let start = q0 * n + c0;
                        // The tile's last element, (q0 + MR - 1) * n + c0 + NR - 1, is in
                        // `out`: the last row starts at most `nq - 1` rows in and the
                        // full tile ends at most at column `n`.
                        let tile = &mut out[start..start + (MR - 1) * n + NR];
                        // SAFETY: the parts hold `steps` steps of MR / NR floats and the
                        // tile slice covers MR rows of NR floats at stride n (bounds
                        // checked by the slicing above); `kernel` suits this CPU.
                        unsafe {
                            kernel(
                                q_part.as_ptr(),
                                c_part.as_ptr(),
                                steps,
                                tile.as_mut_ptr(),
                                n,
                                accumulate,
                            )
                        };
                        continue;
                    }
                    if accumulate {
                        for (i, tile_row) in edge.iter_mut().enumerate().take(rows) {
                            let start = (q0 + i) * n + c0;
                            tile_row[..cols].copy_from_slice(&out[start..start + cols]);
                        }
                    }
                    // SAFETY: as above, with the edge buffer (MR rows of NR floats).
                    unsafe {
                        kernel(
                            q_part.as_ptr(),
                            c_part.as_ptr(),
                            steps,
                            edge.as_mut_ptr() as *mut f32,
                            NR,
                            accumulate,
                        )
                    };
                    for (i, tile_row) in edge.iter().enumerate().take(rows) {
                        let start = (q0 + i) * n + c0;
                        out[start..start + cols].copy_from_slice(&tile_row[..cols]);
                    }
                }
            }
        }
    }
}

fn select_kernel() -> MicroKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return avx512::kernel;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return kernel_avx2_fma;
        }
    }
    kernel_portable
}

/// The portable micro-kernel, written so that the compiler vectorises the `NR` lanes.
#[inline(always)]
unsafe fn kernel_body<const FUSED: bool>(
    q: *const f32,
    c: *const f32,
    dim: usize,
    tile: *mut f32,
    stride: usize,
    accumulate: bool,
) {
    let mut acc: Tile = [[0.0; NR]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller passes MR rows of NR floats at `stride`.
            *row = unsafe { *(tile.add(i * stride) as *const [f32; NR]) };
        }
    }
    for p in 0..dim {
        // SAFETY: the caller passes panels of `dim` steps.
        let cv = unsafe { &*(c.add(p * NR) as *const [f32; NR]) };
        let qv = unsafe { &*(q.add(p * MR) as *const [f32; MR]) };
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = if FUSED {
                    qv[i].mul_add(cv[j], acc[i][j])
                } else {
                    acc[i][j] + qv[i] * cv[j]
                };
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: as above.
        unsafe { *(tile.add(i * stride) as *mut [f32; NR]) = *row };
    }
}

unsafe fn kernel_portable(
    q: *const f32,
    c: *const f32,
    dim: usize,
    tile: *mut f32,
    stride: usize,
    acc: bool,
) {
    // SAFETY: forwarded contract.
    unsafe { kernel_body::<false>(q, c, dim, tile, stride, acc) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2_fma(
    q: *const f32,
    c: *const f32,
    dim: usize,
    tile: *mut f32,
    stride: usize,
    acc: bool,
) {
    // SAFETY: forwarded contract; the CPU has AVX2 and FMA (checked by select_kernel).
    unsafe { kernel_body::<true>(q, c, dim, tile, stride, acc) }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Vectors of 16 floats per tile row.
    const NV: usize = NR / 16;

    /// `MR x NR` tile in `MR * NV` zmm accumulators; per step `NV` candidate loads and
    /// `MR` broadcast query values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel(
        q: *const f32,
        c: *const f32,
        dim: usize,
        tile: *mut f32,
        stride: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        if accumulate {
            for (i, a) in acc.iter_mut().enumerate() {
                for (v, x) in a.iter_mut().enumerate() {
                    // SAFETY: the caller passes MR rows of NR = 16 * NV floats at `stride`.
                    *x = unsafe { _mm512_loadu_ps(tile.add(i * stride + 16 * v)) };
                }
            }
        }
        for p in 0..dim {
            // SAFETY: the caller passes panels of `dim` steps of NR / MR floats.
            unsafe {
                let mut cv = [_mm512_setzero_ps(); NV];
                for (v, x) in cv.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(c.add(p * NR + 16 * v));
                }
                let qp = q.add(p * MR);
                for (i, a) in acc.iter_mut().enumerate() {
                    let qi = _mm512_set1_ps(*qp.add(i));
                    for (x, c) in a.iter_mut().zip(cv.iter()) {
                        *x = _mm512_fmadd_ps(qi, *c, *x);
                    }
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (v, x) in a.iter().enumerate() {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(tile.add(i * stride + 16 * v), *x) };
            }
        }
    }
}

/// Every kernel this CPU can run, by name (for tests and benches).
pub fn available_kernels() -> Vec<(&'static str, MicroKernelFn)> {
    let mut v: Vec<(&'static str, MicroKernelFn)> =
        vec![("portable", MicroKernelFn(kernel_portable))];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            v.push(("avx2+fma", MicroKernelFn(kernel_avx2_fma)));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(("avx512", MicroKernelFn(avx512::kernel)));
        }
    }
    v
}

/// A micro-kernel usable on this CPU (only [`available_kernels`] makes them).
#[derive(Clone, Copy)]
pub struct MicroKernelFn(MicroKernel);

impl MicroKernelFn {
    /// One `MR x NR` tile of packed panels (`dim` steps each).
    pub fn tile(&self, q_panel: &[f32], c_panel: &[f32], dim: usize) -> Tile {
        assert!(q_panel.len() >= dim * MR && c_panel.len() >= dim * NR);
        let mut tile = [[0.0; NR]; MR];
        // SAFETY: lengths checked above; the tile is MR rows of NR floats; the kernel
        // was detected for this CPU.
        unsafe {
            (self.0)(
                q_panel.as_ptr(),
                c_panel.as_ptr(),
                dim,
                tile.as_mut_ptr() as *mut f32,
                NR,
                false,
            )
        };
        tile
    }
}

/// Name of the kernel [`score_block`] uses on this CPU.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
    }
    "portable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive(matrix: &[f32], dim: usize, q: &[usize], c: &[usize]) -> Vec<f64> {
        let mut out = Vec::new();
        for &qi in q {
            for &ci in c {
                let a = &matrix[qi * dim..(qi + 1) * dim];
                let b = &matrix[ci * dim..(ci + 1) * dim];
                out.push(a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum());
            }
        }
        out
    }

    #[test]
    fn blocked_scores_match_naive_products() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(dim, rows, nq, nc) in &[
            (7, 90, 13, 70),
            (64, 300, 25, 257),
            (1, 5, 1, 1),
            (33, 40, 12, 32),
            (600, 60, 14, 40),
            (40, 200, 16, 96),
            (1024, 120, 24, 144),
        ] {
            let matrix: Vec<f32> = (0..rows * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let q: Vec<usize> = (0..nq).map(|_| rng.gen_range(0..rows)).collect();
            let c: Vec<usize> = (0..nc).map(|_| rng.gen_range(0..rows)).collect();
            let packed = PackedCandidates::pack(&matrix, dim, &c);
            let mut qbuf = AlignedBuf::default();
            pack_queries(&matrix, dim, &q, &mut qbuf);
            let mut out = vec![f32::NAN; nq * nc];
            let want = naive(&matrix, dim, &q, &c);
            for blocking in [
                Blocking::default(),
                Blocking {
                    kc: 7,
                    chunk_bytes: 1,
                },
                Blocking {
                    kc: 1000,
                    chunk_bytes: 1 << 30,
                },
            ] {
                out.fill(f32::NAN);
                score_block_with(&qbuf, nq, &packed, &mut out, blocking);
                for (got, want) in out.iter().zip(&want) {
                    assert!(
                        (*got as f64 - want).abs()
                            < 1e-5 * (1.0 + want.abs()) * (dim as f64).sqrt(),
                        "{blocking:?}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn repacking_a_used_buffer_gives_the_same_scores() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let dim = 20;
        let matrix: Vec<f32> = (0..200 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let q: Vec<usize> = (0..9).collect();
        let mut qbuf = AlignedBuf::default();
        pack_queries(&matrix, dim, &q, &mut qbuf);
        // Fill the buffer with 150 candidates, then repack 61 (a ragged last panel).
        let mut packed = PackedCandidates::pack(&matrix, dim, &(0..150).collect::<Vec<_>>());
        let small: Vec<usize> = (100..161).collect();
        packed.repack(&matrix, dim, &small);
        let fresh = PackedCandidates::pack(&matrix, dim, &small);
        let (mut a, mut b) = (vec![0.0; 9 * 61], vec![1.0; 9 * 61]);
        score_block(&qbuf, 9, &packed, &mut a);
        score_block(&qbuf, 9, &fresh, &mut b);
        assert_eq!(a, b);
        assert_eq!(packed.panels.as_slice(), fresh.panels.as_slice());
    }

    #[test]
    fn every_available_kernel_agrees() {
        let dim = 50;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let q: Vec<f32> = (0..dim * MR).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let c: Vec<f32> = (0..dim * NR).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let kernels = available_kernels();
        let reference = kernels[0].1.tile(&q, &c, dim);
        for (name, k) in &kernels {
            let t = k.tile(&q, &c, dim);
            for i in 0..MR {
                for j in 0..NR {
                    assert!((t[i][j] - reference[i][j]).abs() < 1e-4, "{name}");
                }
            }
        }
    }
}
