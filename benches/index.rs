//! Index bench: tailor against hnswlib, faiss IndexHNSWFlat, usearch (f32 and i8) and the
//! `hnsw_rs` crate, same data, same queries, same ground truth, same run.
//!
//! Data: `--items` (default 100,000) L2-normalised `--dim` (1024) vectors from a
//! 200-cluster Gaussian mixture (centres N(0, 1), points = centre + N(0, 1) noise,
//! fixed seed), generated streaming into `base.npy` (never held in memory: every system
//! reads it memory-mapped), plus `--queries` (1,000) held-out points from the same
//! mixture; exact top-10 by a chunked matrix product (gemm) over the mapped rows. M=16,
//! ef_construction=200, build on `--threads` (2) threads, search one query per call on
//! one thread, sweeping ef after one untimed warm-up pass (the peers load their whole
//! index into memory; tailor's mapped pages are read on first touch). Prints build time, size, open time, first-query time, memory,
//! and queries/s at recall@10 >= 0.95 and >= 0.99, for each system and as ratios; then
//! batch search (all queries, `--threads` threads): faiss's `search` on the query matrix
//! beside tailor's batch path (`Index::search_batch`); then tailor's first pass over
//! freshly evicted files (cold) against a second pass (warm).
//!
//! Run: `cargo bench --bench index -- [--items N] [--dim D] [--queries Q] [--threads T]
//!       [--compact KIND,KIND..] [--peers faiss,hnswlib,usearch,hnsw_rs] [--no-batch]
//!       [--rounds R] [--rebuild] [--python PYTHON] [--dir DIR]`.
//! `--compact` takes any kinds `CompactKind::from_str` accepts (default `int8,f16`), and
//! `WALK+TIER` for a walk with a re-scoring tier (`bit4+int8`), and a `@graph` suffix for an index built in graph row order (`bit4@graph`); each gets its own index, and the first one's f32 walk is measured too. `--peers none` runs
//! tailor alone. Data, ground truth and built indexes are cached under `--dir` (default
//! the ignored `.bench-cache/index/` of the project, one folder per items x dim x queries):
//! a rerun reuses them and reports the recorded build times (marked `cached`); `--rebuild`
//! builds every index again. The peers' python is `--python`, else `$TAILOR_BENCH_PYTHON`,
//! else the project's `.venv-ann/bin/python` made by `bash tools/ann_venv.sh`; it runs
//! with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment and prints
//! the SIMD kernels each library uses. Not built by `cargo test`.
//!
//! Head-to-head: the sweeps above run one system after another, minutes apart, and a
//! shared machine's speed drifts over minutes. So after them, `--rounds` (default 5)
//! rounds alternate the systems pass by pass: in each round every tailor walk and every
//! python peer (kept loaded by `ann_peers.py --serve`) answers the queries once at the ef
//! where its sweep reached R@10 0.95 and 0.99, in an order rotated from round to round.
//! The ratios of a round compare passes seconds apart; the bench prints their median and
//! range. (hnsw_rs runs in this process and is left out of the rounds.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use tailor::index::{
    self, AttributeInput, BuildInput, BuildParams, CompactKind, Index, RowOrder, SearchOptions,
};
use tailor::progress::ProgressMode;

const K: usize = 10;
/// (At 1,000,000 x 1024 recall@10 0.99 needs ef beyond 1024 at M=16, hence the tail; 56
/// and 72 because at 100k the systems cross 0.99 between 48 and 80, where steps of 16
/// would credit whoever lands just above a grid point.)
const EFS: &[usize] = &[
    10, 16, 20, 24, 32, 40, 48, 56, 64, 72, 80, 96, 128, 160, 200, 256, 320, 400, 512, 640, 800,
    1024, 1280, 1600, 2048,
];
/// A sweep stops once recall reaches this.
const STOP: f64 = 0.995;
const ALL_PEERS: &[&str] = &["faiss", "hnswlib", "usearch", "hnsw_rs"];

struct Args {
    items: usize,
    dim: usize,
    queries: usize,
    threads: usize,
    python: PathBuf,
    dir: PathBuf,
    /// (label as given, walk kind, re-scoring tier, row order)
    compact: Vec<(String, CompactKind, CompactKind, RowOrder)>,
    peers: Vec<String>,
    batch: bool,
    rebuild: bool,
    /// Interleaved head-to-head rounds after the sweeps (0: none).
    rounds: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("index bench: {msg}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        items: 100_000,
        dim: 1024,
        queries: 1000,
        threads: 2,
        python: std::env::var_os("TAILOR_BENCH_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ann/bin/python")),
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join(".bench-cache/index"),
        compact: vec![
            (
                "int8".into(),
                CompactKind::Int8,
                CompactKind::None,
                RowOrder::Input,
            ),
            (
                "f16".into(),
                CompactKind::F16,
                CompactKind::None,
                RowOrder::Input,
            ),
        ],
        peers: ALL_PEERS.iter().map(|s| s.to_string()).collect(),
        batch: true,
        rebuild: false,
        rounds: 5,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |v: Option<&String>, flag: &str| -> usize {
        v.and_then(|x| x.parse().ok())
            .filter(|&x: &usize| x > 0)
            .unwrap_or_else(|| usage(&format!("{flag} takes a positive integer")))
    };
    while i < argv.len() {
        let v = argv.get(i + 1);
        match argv[i].as_str() {
            "--items" => a.items = num(v, "--items"),
            "--dim" => a.dim = num(v, "--dim"),
            "--queries" => a.queries = num(v, "--queries"),
            "--threads" => a.threads = num(v, "--threads"),
            "--python" => a.python = PathBuf::from(v.unwrap_or_else(|| usage("--python PATH"))),
            "--dir" => a.dir = PathBuf::from(v.unwrap_or_else(|| usage("--dir DIR"))),
            "--compact" => {
                let list = v.unwrap_or_else(|| usage("--compact KIND[,KIND..]"));
                a.compact = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        let (kinds, order) = s.split_once('@').unwrap_or((s, "input"));
                        let (walk, tier) = kinds.split_once('+').unwrap_or((kinds, "none"));
                        let order = order
                            .parse::<RowOrder>()
                            .unwrap_or_else(|e| usage(&format!("--compact {s}: {e}")));
                        match (walk.parse::<CompactKind>(), tier.parse::<CompactKind>()) {
                            (Ok(w), Ok(t)) => (s.to_string(), w, t, order),
                            (Err(e), _) | (_, Err(e)) => usage(&format!("--compact {s}: {e}")),
                        }
                    })
                    .collect();
                if a.compact.is_empty() {
                    usage("--compact needs at least one kind");
                }
            }
            "--peers" => {
                let list = v.unwrap_or_else(|| usage("--peers faiss,hnswlib,usearch,hnsw_rs|none"));
                a.peers = list
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(|s| {
                        if !ALL_PEERS.contains(&s) {
                            usage(&format!(
                                "--peers: unknown peer {s:?} ({})",
                                ALL_PEERS.join(", ")
                            ))
                        }
                        s.to_string()
                    })
                    .collect();
            }
            "--rounds" => {
                a.rounds = v
                    .and_then(|x| x.parse().ok())
                    .unwrap_or_else(|| usage("--rounds takes a count (0: no head-to-head)"))
            }
            "--no-batch" => {
                a.batch = false;
                i += 1;
                continue;
            }
            "--rebuild" => {
                a.rebuild = true;
                i += 1;
                continue;
            }
            // cargo bench passes --bench to the harness.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Standard normal by Box-Muller.
fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Rows `[chunk * 1024, ..)` of the mixture: each block of 1,024 rows has its own seeded
/// stream, so the data do not depend on how many blocks are generated at once.
fn mixture_block(chunk: usize, rows: usize, dim: usize, centres: &[f32], seed: u64) -> Vec<f32> {
    let clusters = centres.len() / dim;
    let mut out = vec![0f32; rows * dim];
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (chunk as u64).wrapping_mul(0x9e37_79b9));
    for row in out.chunks_exact_mut(dim) {
        let k = rng.gen_range(0..clusters);
        for (j, x) in row.iter_mut().enumerate() {
            *x = centres[k * dim + j] + normal(&mut rng);
        }
        tailor::index::distance::normalize(row);
    }
    out
}

const BLOCK: usize = 1024;

fn mixture(n: usize, dim: usize, centres: &[f32], seed: u64) -> Vec<f32> {
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .flat_map_iter(|c| mixture_block(c, BLOCK.min(n - c * BLOCK), dim, centres, seed))
        .collect()
}

/// Writes `n` mixture rows to `path` as .npy, 64 blocks (256 MB at 1024-d) at a time.
fn write_mixture(path: &Path, n: usize, dim: usize, centres: &[f32], seed: u64) {
    let tmp = path.with_extension("npy.tmp");
    let f = std::fs::File::create(&tmp).expect("create base.npy.tmp");
    let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
    let blocks = n.div_ceil(BLOCK);
    let group = 64;
    let values = (0..blocks.div_ceil(group)).flat_map(|g| {
        let part: Vec<f32> = (g * group..((g + 1) * group).min(blocks))
            .into_par_iter()
            .flat_map_iter(|c| mixture_block(c, BLOCK.min(n - c * BLOCK), dim, centres, seed))
            .collect();
        part.into_iter()
    });
    tailor::npy::write_f32_matrix_to(&mut w, n, dim, values).expect("write base.npy");
    w.flush().expect("flush base.npy");
    w.get_ref().sync_all().expect("sync base.npy");
    std::fs::rename(&tmp, path).expect("publish base.npy");
}

/// A read-only mapping of an `n x dim` f32 .npy file.
struct MappedMatrix {
    map: memmap2::Mmap,
    offset: usize,
}

impl MappedMatrix {
    fn open(path: &Path, n: usize, dim: usize) -> Option<MappedMatrix> {
        let f = std::fs::File::open(path).ok()?;
        // SAFETY: the bench's own cache file, written once by rename and never modified.
        let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        if map.len() < 10 || &map[..6] != b"\x93NUMPY" {
            return None;
        }
        let offset = 10 + u16::from_le_bytes([map[8], map[9]]) as usize;
        let header = std::str::from_utf8(&map[10..offset]).ok()?;
        let want = format!("'shape': ({n}, {dim})");
        (header.contains(&want) && map.len() == offset + n * dim * 4 && offset.is_multiple_of(4))
            .then_some(MappedMatrix { map, offset })
    }

    fn rows(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.offset..])
    }
}

/// Exact top-k of every query: the base is read once, in chunks of 4,096 rows, each
/// scored against all queries by one matrix product.
fn ground_truth(base: &[f32], queries: &[f32], dim: usize, threads: usize) -> Vec<Vec<usize>> {
    let nq = queries.len() / dim;
    let chunk = 4096;
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(K + 1); nq];
    let mut scores = vec![0f32; nq * chunk];
    for (c, rows) in base.chunks(chunk * dim).enumerate() {
        let m = rows.len() / dim;
        let scores = &mut scores[..nq * m];
        // SAFETY: dst is nq x m row-major (col stride 1, row stride m); lhs the queries,
        // nq x dim row-major; rhs the chunk transposed: element (d, j) at j * dim + d.
        unsafe {
            gemm::gemm(
                nq,
                m,
                dim,
                scores.as_mut_ptr(),
                1,
                m as isize,
                false,
                queries.as_ptr(),
                1,
                dim as isize,
                rows.as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        };
        best.par_iter_mut()
            .zip(scores.par_chunks(m))
            .for_each(|(b, s)| {
                for (j, &v) in s.iter().enumerate() {
                    if b.len() < K || v > b[K - 1].0 {
                        b.push((v, c * chunk + j));
                        b.sort_by(|x, y| y.0.total_cmp(&x.0));
                        b.truncate(K);
                    }
                }
            });
    }
    best.into_iter()
        .map(|b| b.into_iter().map(|x| x.1).collect())
        .collect()
}

fn recall(found: &[Vec<usize>], gt: &[Vec<usize>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(gt)
        .map(|(f, g)| f.iter().take(K).filter(|x| g.contains(x)).count())
        .sum();
    hits as f64 / (gt.len() * K) as f64
}

/// The least any exact re-scoring can leave resident of the f32 file after the queries:
/// the pages holding the rows of their true top-K (every exact search reads at least
/// those rows to return their exact scores). The f32 rows start on a page boundary
/// (index-format.md), so row `r` covers bytes `4*D*r .. 4*D*(r+1)` of the pages.
fn rescore_floor(gt: &[Vec<usize>], dim: usize) -> String {
    const PAGE: usize = 4096;
    let row_bytes = 4 * dim;
    let rows: std::collections::BTreeSet<usize> = gt.iter().flatten().copied().collect();
    let pages: std::collections::BTreeSet<usize> = rows
        .iter()
        .flat_map(|&r| (r * row_bytes / PAGE)..(((r + 1) * row_bytes).div_ceil(PAGE)))
        .collect();
    format!(
        "re-scoring floor: the true top-{K} of the {} queries are {} distinct rows on {} pages of the f32 file = {:.1} MB resident at the least for any walk that returns exact scores",
        gt.len(),
        rows.len(),
        pages.len(),
        (pages.len() * PAGE) as f64 / 1e6
    )
}

#[derive(Clone, Debug)]
struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
    /// Queries per CPU-second of the searching thread(s): steadier than `qps` on a
    /// machine shared with other jobs.
    cpu_qps: f64,
}

#[derive(Clone, Debug, Default)]
struct SystemResult {
    name: String,
    build_s: f64,
    /// CPU seconds of the build (all its threads); NaN when not recorded.
    build_cpu_s: f64,
    build_cached: bool,
    bytes: u64,
    open_s: f64,
    open_cold_s: f64,
    first_query_s: f64,
    /// Memory the system holds for its index after the sweep (see the legend).
    mem_bytes: u64,
    batch: bool,
    sweep: Vec<Point>,
}

impl SystemResult {
    fn at(&self, target: f64) -> Option<&Point> {
        self.sweep.iter().find(|p| p.recall >= target)
    }
}

/// Sweeps ef; `search(ef)` answers all queries and returns the rows found and seconds.
fn sweep_with(
    gt: &[Vec<usize>],
    nq: usize,
    mut search: impl FnMut(usize) -> (Vec<Vec<usize>>, Timing),
) -> Vec<Point> {
    let mut out = Vec::new();
    for &ef in EFS {
        let (found, t) = search(ef);
        let r = recall(&found, gt);
        out.push(Point {
            ef,
            recall: r,
            qps: nq as f64 / t.wall,
            cpu_qps: nq as f64 / t.cpu,
        });
        if r >= STOP {
            break;
        }
    }
    out
}

/// One timed pass of all queries through `ix`, one per call on this thread: the items
/// found for each query, and the time.
fn tailor_pass(
    ix: &Index,
    item_of_row: &[usize],
    queries: &[f32],
    dim: usize,
    opts: &SearchOptions,
) -> (Vec<Vec<usize>>, Timing) {
    timed(THREAD, || {
        queries
            .chunks_exact(dim)
            .map(|q| {
                ix.search_with("v", q, opts)
                    .expect("search")
                    .iter()
                    .map(|h| item_of_row[h.row])
                    .collect()
            })
            .collect()
    })
}

/// Wall and CPU seconds of one timed step.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Times `f` by the wall clock and by `clock` (CLOCK_THREAD_CPUTIME_ID for work on this
/// thread, CLOCK_PROCESS_CPUTIME_ID for work on a pool).
fn timed<T>(clock: libc::clockid_t, f: impl FnOnce() -> T) -> (T, Timing) {
    let (w, c) = (Instant::now(), cpu_seconds(clock));
    let out = f();
    let t = Timing {
        wall: w.elapsed().as_secs_f64(),
        cpu: cpu_seconds(clock) - c,
    };
    (out, t)
}

fn cpu_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain syscall writing into a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

const THREAD: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
const PROCESS: libc::clockid_t = libc::CLOCK_PROCESS_CPUTIME_ID;

/// Resident bytes per mapped file under `dir` (from /proc/self/smaps `Rss`).
fn resident_by_file(dir: &Path) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let dir = dir.to_string_lossy().to_string();
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = line
                .split_whitespace()
                .last()
                .filter(|p| p.contains(&dir))
                .and_then(|p| Path::new(p).file_name())
                .map(|f| f.to_string_lossy().to_string());
        } else if let (Some(file), true) = (&current, line.starts_with("Rss:")) {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            match out.iter_mut().find(|x| &x.0 == file) {
                Some(x) => x.1 += kb * 1024,
                None => out.push((file.clone(), kb * 1024)),
            }
        }
    }
    out.sort();
    out
}

/// The kB figure of line `key` ("VmRSS:", "MemTotal:") in a /proc file.
fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's resident memory (VmRSS), bytes.
fn rss() -> u64 {
    proc_kb("/proc/self/status", "VmRSS:").map_or(0, |kb| kb * 1024)
}

/// Reads every file of `dir` once, sequentially (the pages stay in the page cache).
/// Returns the bytes read.
fn read_into_page_cache(dir: &Path) -> u64 {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("index dir").flatten() {
        if let Ok(mut f) = std::fs::File::open(e.path()) {
            while let Ok(n @ 1..) = f.read(&mut buf) {
                total += n as u64;
            }
        }
    }
    total
}

/// Drops the (clean, fsynced) files of `dir` from the page cache.
fn evict(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("index dir").flatten() {
        evict_file(&e.path());
    }
}

fn evict_file(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: plain syscall on a valid open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn write_ids_npy(path: &Path, gt: &[Vec<usize>]) {
    let flat: Vec<f32> = gt
        .iter()
        .flat_map(|g| g.iter().map(|&x| x as f32))
        .collect();
    tailor::npy::write_f32_matrix(path, gt.len(), K, &flat).expect("write gt");
}

fn read_ids_npy(path: &Path, nq: usize) -> Option<Vec<Vec<usize>>> {
    let m = tailor::npy::read_f32_matrix(path).ok()?;
    (m.rows == nq && m.cols == K).then(|| {
        m.data
            .chunks_exact(K)
            .map(|r| r.iter().map(|&x| x as usize).collect())
            .collect()
    })
}

/// Inner product on unit rows as a distance for hnsw_rs, clamped at 0: f32 rounding
/// makes a row's product with itself 1.0000005, and anndists' DistDot asserts
/// `1 - dot >= 0` inside a rayon worker (pitfalls.md section 5). Uses tailor's dot
/// kernel so that the two graphs differ only in their graph code.
#[derive(Default, Clone, Copy)]
struct ClampedDot;

impl hnsw_rs::prelude::Distance<f32> for ClampedDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - tailor::index::distance::dot_f32(a, b)).max(0.0)
    }
}

fn run_hnsw_rs(
    base: &[f32],
    queries: &[f32],
    gt: &[Vec<usize>],
    dim: usize,
    pool: &rayon::ThreadPool,
) -> SystemResult {
    use hnsw_rs::prelude::Hnsw;
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let rss0 = rss();
    let (t, c) = (Instant::now(), cpu_seconds(PROCESS));
    let hnsw: Hnsw<f32, ClampedDot> = Hnsw::new(16, n, 16, 200, ClampedDot);
    for (c, part) in base.chunks(100_000 * dim).enumerate() {
        let data: Vec<(&[f32], usize)> = part
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, r)| (r, c * 100_000 + i))
            .collect();
        // parallel_insert_slice runs on the current (here: the bench's) rayon pool.
        pool.install(|| hnsw.parallel_insert_slice(&data));
    }
    let build_s = t.elapsed().as_secs_f64();
    let build_cpu_s = cpu_seconds(PROCESS) - c;
    let t = Instant::now();
    hnsw.search(&queries[..dim], K, 64);
    let first_query_s = t.elapsed().as_secs_f64();
    let sweep = sweep_with(gt, nq, |ef| {
        timed(THREAD, || {
            queries
                .chunks_exact(dim)
                .map(|q| hnsw.search(q, K, ef).iter().map(|nb| nb.d_id).collect())
                .collect()
        })
    });
    let mem_bytes = rss().saturating_sub(rss0);
    SystemResult {
        name: "hnsw_rs 0.3.5 (in-process, clamped dot)".into(),
        build_s,
        build_cpu_s,
        bytes: 0,
        open_s: f64::NAN,
        open_cold_s: f64::NAN,
        first_query_s,
        mem_bytes,
        sweep,
        ..Default::default()
    }
}

fn main() {
    let args = parse_args();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .expect("pool");
    let (n, dim, nq) = (args.items, args.dim, args.queries);
    let data_dir = args.dir.join(format!("n{n}-d{dim}-q{nq}"));
    std::fs::create_dir_all(&data_dir).expect("bench dir");
    println!(
        "index bench: {n} x {dim}-d L2-normalised, 200-cluster Gaussian mixture (seed 42), {nq} held-out queries, \
         recall@{K}; M=16 efC=200, build on {} threads, search 1 thread, 1 query per call; batch on {} threads",
        args.threads, args.threads
    );
    println!(
        "machine: {} cores ({}), {}, {:.1} GiB RAM; load average at start {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        std::env::consts::ARCH,
        mem_total_gib(),
        load_average()
    );
    println!(
        "settings: compact {:?}, peers {:?}, batch {}, cache {}{}",
        args.compact
            .iter()
            .map(|c| c.0.as_str())
            .collect::<Vec<_>>(),
        args.peers,
        args.batch,
        data_dir.display(),
        if args.rebuild { " (rebuild)" } else { "" }
    );

    // Data: base streamed to disk and mapped, queries in memory, ground truth cached.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let centres: Vec<f32> = (0..200 * dim).map(|_| normal(&mut rng)).collect();
    let base_path = data_dir.join("base.npy");
    let t = Instant::now();
    let base_map = match MappedMatrix::open(&base_path, n, dim) {
        Some(m) => {
            println!("data: cached {}", base_path.display());
            m
        }
        None => {
            pool.install(|| write_mixture(&base_path, n, dim, &centres, 1));
            println!(
                "data: generated {} ({:.1} GB) in {:.1} s",
                base_path.display(),
                (n * dim * 4) as f64 / 1e9,
                t.elapsed().as_secs_f64()
            );
            MappedMatrix::open(&base_path, n, dim).expect("map base.npy")
        }
    };
    let base = base_map.rows();
    let queries = pool.install(|| mixture(nq, dim, &centres, 2));
    tailor::npy::write_f32_matrix(&data_dir.join("queries.npy"), nq, dim, &queries)
        .expect("queries");
    let gt_path = data_dir.join("gt.npy");
    let gt = match read_ids_npy(&gt_path, nq) {
        Some(gt) if !args.rebuild => {
            println!("ground truth: cached {}", gt_path.display());
            gt
        }
        _ => {
            let t = Instant::now();
            let gt = pool.install(|| ground_truth(base, &queries, dim, args.threads));
            write_ids_npy(&gt_path, &gt);
            println!(
                "ground truth: exact top-{K} of {nq} queries over {n} rows (chunked gemm, {} threads) in {:.1} s",
                args.threads,
                t.elapsed().as_secs_f64()
            );
            gt
        }
    };
    println!("{}", rescore_floor(&gt, dim));

    let mut results: Vec<SystemResult> = Vec::new();
    let mut batch_results: Vec<SystemResult> = Vec::new();
    let mut cold_lines: Vec<String> = Vec::new();
    // (walk name, index folder, walks the compact copy) for the head-to-head rounds.
    let mut contenders: Vec<(String, PathBuf, bool)> = Vec::new();
    let ids: Vec<String> = (0..n).map(|i| format!("item{i}")).collect();
    for (bi, (label, compact, tier, order)) in args.compact.iter().enumerate() {
        let out = data_dir.join(format!("tailor-{label}"));
        let build_json = out.join("bench-build.json");
        let cached = !args.rebuild
            && Index::open(&out).is_ok_and(|ix| {
                let p = &ix.manifest().params;
                (p.compact, p.rescore) == (*compact, *tier)
            });
        let recorded = std::fs::read_to_string(&build_json)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
        let cached_s = recorded.as_ref().and_then(|v| v["build_s"].as_f64());
        let cached_cpu = recorded
            .as_ref()
            .and_then(|v| v["build_cpu_s"].as_f64())
            .unwrap_or(f64::NAN);
        let (build_s, build_cpu_s, build_cached) = match (cached, cached_s) {
            (true, Some(s)) => (s, cached_cpu, true),
            _ => {
                let _ = std::fs::remove_dir_all(&out);
                let input = BuildInput {
                    ids: ids.clone(),
                    attributes: vec![AttributeInput {
                        name: "v".into(),
                        dim,
                        rows: base,
                    }],
                    labels: None,
                    model: None,
                };
                let params = BuildParams {
                    compact: *compact,
                    rescore: *tier,
                    ..BuildParams::default()
                };
                let (built, t) = timed(PROCESS, || {
                    pool.install(|| {
                        index::build_in_order(&out, &input, &params, *order, ProgressMode::Quiet)
                    })
                });
                built.expect("build");
                // Written beside the index; tailor ignores files its manifest does not name.
                std::fs::write(
                    &build_json,
                    format!("{{\"build_s\": {}, \"build_cpu_s\": {}}}", t.wall, t.cpu),
                )
                .expect("build json");
                (t.wall, t.cpu, false)
            }
        };
        // Open: warm page cache; averaged over repeated opens. Cold: after eviction.
        let t = Instant::now();
        let reps = 20;
        for _ in 0..reps {
            drop(Index::open(&out).expect("open"));
        }
        let open_s = t.elapsed().as_secs_f64() / reps as f64;
        evict(&out);
        let t = Instant::now();
        drop(Index::open(&out).expect("open"));
        let open_cold_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ix = Index::open(&out).expect("open");
        ix.search("v", &queries[..dim], K, 64).expect("first query");
        let first_query_s = t.elapsed().as_secs_f64();
        // Rows are items in the input's order unless the index was built in graph order.
        let item_of_row: Vec<usize> = (0..n)
            .map(|r| ix.id(r)[4..].parse().expect("bench ids are item{i}"))
            .collect();
        let bytes = ix.manifest().files.iter().map(|f| f.len).sum();
        let mut walks: Vec<(String, bool)> = Vec::new();
        if bi == 0 || *compact == CompactKind::None {
            walks.push(("tailor f32".into(), false));
        }
        if *compact != CompactKind::None {
            walks.push((format!("tailor {label} walk"), true));
        }
        if bi > 0 && *compact == CompactKind::None {
            walks.clear();
        }
        let (bv, bc, bg, bo) = ix.sizes();
        // The ef at which the compact walk reached recall 0.95 (for the pass with the f32
        // rows on disk below).
        let mut ef_95 = 64;
        for (name, use_compact) in walks {
            let opts = |ef| SearchOptions {
                k: K,
                ef,
                use_compact,
                accept: None,
                rescore: None,
            };
            // Warm-up. The peers read their whole index into memory when they load it;
            // tailor maps its files and reads a page when it is first touched, so without
            // this the sweep would time disk reads and page faults (the cold pass below
            // measures those apart): its files are read once into the page cache, as the
            // peers load theirs, then one untimed pass at ef 512 maps the pages walks use.
            let t = Instant::now();
            let loaded = read_into_page_cache(&out);
            println!(
                "{name}: index files read into the page cache before the sweep: {:.1} MB in {:.1} s",
                loaded as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            let warm_ef = 512;
            let (_, warm) = timed(THREAD, || {
                for q in queries.chunks_exact(dim) {
                    ix.search_with("v", q, &opts(warm_ef)).expect("search");
                }
            });
            println!(
                "{name}: warm-up pass at ef {warm_ef} before the sweep: {:.0} q/s wall, {:.0} q/CPU-s",
                nq as f64 / warm.wall,
                nq as f64 / warm.cpu
            );
            let sweep = sweep_with(&gt, nq, |ef| {
                tailor_pass(&ix, &item_of_row, &queries, dim, &opts(ef))
            });
            // Memory: the mapped files this walk reads (f32 rows always, for the final
            // scores; the compact copy and graph when used), resident after the sweep.
            let attr = &ix.manifest().attributes[0];
            let compact_files = [attr.compact.clone(), attr.rescore.clone()];
            let mem_bytes = resident_by_file(&out)
                .iter()
                .filter(|(f, _)| use_compact || !compact_files.contains(&Some(f.clone())))
                .map(|x| x.1)
                .sum();
            let res = SystemResult {
                name: name.clone(),
                build_s,
                build_cpu_s,
                build_cached,
                bytes: if use_compact { bytes } else { bytes - bc },
                open_s,
                open_cold_s,
                first_query_s,
                mem_bytes,
                sweep,
                ..Default::default()
            };
            print_sweep(&res);
            contenders.push((name.clone(), out.clone(), use_compact));
            if use_compact {
                ef_95 = res.at(0.95).map_or(ef_95, |p| p.ef);
                // What the bound leaves to re-score: each re-scored row is an f32 row read
                // (4 KiB at 1024-d), the walk's cost beyond its compact copy.
                let counts: Vec<String> = [0.95, 0.99]
                    .iter()
                    .filter_map(|&t| res.at(t))
                    .map(|p| {
                        let total: usize = queries
                            .chunks_exact(dim)
                            .map(|q| {
                                ix.search_rows_counted("v", q, &opts(p.ef))
                                    .expect("search")
                                    .1
                            })
                            .sum();
                        format!(
                            "ef {}: {:.1} of {} candidates",
                            p.ef,
                            total as f64 / nq as f64,
                            p.ef.max(K)
                        )
                    })
                    .collect();
                println!(
                    "{name}: f32 rows re-scored per query (strict bound) at R@10 0.95 / 0.99: {}",
                    counts.join(" / ")
                );
            }
            results.push(res);
            if args.batch {
                let query_rows: Vec<&[f32]> = queries.chunks_exact(dim).collect();
                let sweep = sweep_with(&gt, nq, |ef| {
                    let o = opts(ef);
                    let (hits, t) = timed(PROCESS, || {
                        pool.install(|| ix.search_batch("v", &query_rows, &o))
                    });
                    let found = hits
                        .expect("batch search")
                        .into_iter()
                        .map(|h| h.into_iter().map(|h| item_of_row[h.row]).collect())
                        .collect();
                    (found, t)
                });
                let how = "Index::search_batch";
                let res = SystemResult {
                    name: format!("{name} batch ({} thr, {how})", args.threads),
                    build_s,
                    build_cached,
                    bytes: 0,
                    batch: true,
                    sweep,
                    ..Default::default()
                };
                print_sweep(&res);
                batch_results.push(res);
            }
        }
        println!(
            "{}: files vectors {:.1} MB, compact {:.1} MB, graph {:.1} MB, other {:.1} MB",
            out.display(),
            bv as f64 / 1e6,
            bc as f64 / 1e6,
            bg as f64 / 1e6,
            bo as f64 / 1e6,
        );
        // Cold against warm: evict the files, open, one pass of the queries at ef 64
        // (every page it touches is read from disk), then a second pass on what the first
        // left in the page cache. Resident bytes per mapped file after each pass.
        drop(ix);
        let use_compact = *compact != CompactKind::None;
        evict(&out);
        let ix = Index::open(&out).expect("open");
        let opts = SearchOptions {
            k: K,
            ef: 64,
            use_compact,
            accept: None,
            rescore: None,
        };
        for pass in ["cold (first pass after eviction)", "warm (second pass)"] {
            let ((), t) = timed(THREAD, || {
                for q in queries.chunks_exact(dim) {
                    ix.search_with("v", q, &opts).expect("search");
                }
            });
            let by_file = resident_by_file(&out);
            let total: u64 = by_file.iter().map(|x| x.1).sum();
            let parts: Vec<String> = by_file
                .iter()
                .map(|(f, b)| format!("{f} {:.1}", *b as f64 / 1e6))
                .collect();
            let line = format!(
                "tailor {label}{} ef 64, {pass}: {:.0} q/s wall, {:.0} q/CPU-s (wall beyond CPU: waiting for the disk or for a core); resident of mapped index files {:.1} MB of {:.1} MB ({})",
                if use_compact { " walk" } else { "" },
                nq as f64 / t.wall,
                nq as f64 / t.cpu,
                total as f64 / 1e6,
                bytes as f64 / 1e6,
                parts.join(", "),
            );
            println!("{line}");
            cold_lines.push(line);
        }
        // The f32 rows on disk, everything else in memory: what an index whose f32 file
        // does not fit in RAM sees (every re-scored row a page read). The f32 file alone is
        // evicted; the walk's files are read into the page cache first.
        if use_compact {
            drop(ix);
            read_into_page_cache(&out);
            let m = Index::open(&out).expect("open").manifest().clone();
            evict_file(&out.join(&m.attributes[0].vectors));
            let ix = Index::open(&out).expect("open");
            let opts = SearchOptions { ef: ef_95, ..opts };
            let (rescored, t) = timed(THREAD, || {
                queries
                    .chunks_exact(dim)
                    .map(|q| ix.search_rows_counted("v", q, &opts).expect("search").1)
                    .sum::<usize>()
            });
            let f32_resident = resident_by_file(&out)
                .into_iter()
                .find(|(f, _)| *f == m.attributes[0].vectors)
                .map_or(0, |x| x.1);
            let line = format!(
                "tailor {label} walk ef {ef_95} (its R@10 0.95), f32 rows on disk (only the f32 file evicted, the rest in the page cache): {:.0} q/s wall, {:.0} q/CPU-s; {:.1} f32 rows re-scored per query; f32 file resident after the pass {:.1} MB",
                nq as f64 / t.wall,
                nq as f64 / t.cpu,
                rescored as f64 / nq as f64,
                f32_resident as f64 / 1e6,
            );
            println!("{line}");
            cold_lines.push(line);
        }
    }

    if args.peers.iter().any(|p| p == "hnsw_rs") {
        let res = run_hnsw_rs(base, &queries, &gt, dim, &pool);
        print_sweep(&res);
        results.push(res);
    }

    let py_peers: Vec<&str> = args
        .peers
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "hnsw_rs")
        .collect();
    let server = if py_peers.is_empty() {
        None
    } else {
        run_python_peers(
            &args,
            &data_dir,
            &py_peers,
            &mut results,
            &mut batch_results,
        )
    };
    print_table(&results, &batch_results);
    if args.rounds > 0 {
        head_to_head(&args, &queries, &gt, &results, &contenders, server);
    }
    println!();
    for l in &cold_lines {
        println!("{l}");
    }
    println!(
        "peers' cold start: open cold s column (whole index file read after posix_fadvise DONTNEED)"
    );
    println!("load average at end: {}", load_average());
}

/// The python peers kept loaded (`ann_peers.py --serve`) for the head-to-head rounds.
struct PeerServer {
    child: std::process::Child,
    requests: std::process::ChildStdin,
    replies: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// The systems it serves, by the names of their sweeps.
    systems: Vec<String>,
}

impl PeerServer {
    /// One timed pass of all queries by `system` at `ef`.
    fn pass(&mut self, system: &str, ef: usize) -> Result<Point, String> {
        writeln!(
            self.requests,
            "{}",
            serde_json::json!({"system": system, "ef": ef})
        )
        .map_err(|e| format!("writing to the peers: {e}"))?;
        let line = self
            .replies
            .next()
            .ok_or("the peers exited")?
            .map_err(|e| format!("reading the peers: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("peers said {line:?}: {e}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!("peers: {e}"));
        }
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        Ok(Point {
            ef,
            recall: f("recall"),
            qps: f("qps"),
            cpu_qps: f("cpu_qps"),
        })
    }

    fn finish(self) {
        let PeerServer {
            mut child,
            requests,
            ..
        } = self;
        // Closing stdin ends its request loop.
        drop(requests);
        if let Err(e) = child.wait() {
            println!("peers: waiting for the server: {e}");
        }
    }
}

/// Runs the python peers' builds and sweeps, adding their results; with `--rounds` keeps
/// them loaded and returns the server for the head-to-head.
fn run_python_peers(
    args: &Args,
    data_dir: &Path,
    peers: &[&str],
    results: &mut Vec<SystemResult>,
    batch_results: &mut Vec<SystemResult>,
) -> Option<PeerServer> {
    let mut cmd = Command::new(&args.python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ann_peers.py"))
        .args([
            "--data",
            &data_dir.to_string_lossy(),
            "--work",
            &data_dir.join("peers").to_string_lossy(),
            "--threads",
            &args.threads.to_string(),
            "--systems",
            &peers.join(","),
            "--efs",
            &EFS.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ])
        // The peers pick their own kernels for this CPU: no OpenBLAS override.
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .stderr(std::process::Stdio::inherit());
    if args.rebuild {
        cmd.arg("--rebuild");
    }
    if args.batch {
        cmd.arg("--batch");
    }
    let serve = args.rounds > 0;
    if serve {
        cmd.arg("--serve").stdin(std::process::Stdio::piped());
    }
    // Read the peers' lines as they come, so a long run shows each sweep when it ends.
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            println!("peers skipped: cannot run {}: {e}", args.python.display());
            return None;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    while let Some(Ok(line)) = lines.next() {
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(names) = v.get("serving").and_then(|n| n.as_array()) {
            let systems = names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            return Some(PeerServer {
                requests: child.stdin.take().expect("piped stdin"),
                child,
                replies: lines,
                systems,
            });
        }
        if let Some(info) = v.get("info").and_then(|i| i.as_str()) {
            println!("peer kernels: {info}");
            continue;
        }
        if let Some(e) = v.get("error") {
            println!("peer {}: skipped ({e})", v["system"]);
            continue;
        }
        let sweep = v["sweep"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| Point {
                        ef: p["ef"].as_u64().unwrap_or(0) as usize,
                        recall: p["recall"].as_f64().unwrap_or(0.0),
                        qps: p["qps"].as_f64().unwrap_or(0.0),
                        cpu_qps: p["cpu_qps"].as_f64().unwrap_or(f64::NAN),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let res = SystemResult {
            name: v["system"].as_str().unwrap_or("?").to_string(),
            build_s: v["build_s"].as_f64().unwrap_or(f64::NAN),
            build_cpu_s: v["build_cpu_s"].as_f64().unwrap_or(f64::NAN),
            build_cached: v["build_cached"].as_bool().unwrap_or(false),
            bytes: v["bytes"].as_u64().unwrap_or(0),
            open_s: v["open_s"].as_f64().unwrap_or(f64::NAN),
            open_cold_s: v["open_cold_s"].as_f64().unwrap_or(f64::NAN),
            first_query_s: v["first_query_s"].as_f64().unwrap_or(f64::NAN),
            mem_bytes: v["mem_bytes"].as_i64().unwrap_or(0).max(0) as u64,
            batch: v["batch"].as_bool().unwrap_or(false),
            sweep,
        };
        print_sweep(&res);
        if res.batch {
            batch_results.push(res);
        } else {
            results.push(res);
        }
    }
    match child.wait() {
        Ok(st) if st.success() => {}
        Ok(st) => println!("peers: {} exited with {st}", args.python.display()),
        Err(e) => println!("peers: waiting for {}: {e}", args.python.display()),
    }
    None
}

/// One system in the head-to-head rounds.
enum Contender {
    Tailor(Box<TailorWalk>),
    Peer,
}

/// A tailor index opened for the rounds, and which walk of it is measured.
struct TailorWalk {
    ix: Index,
    item_of_row: Vec<usize>,
    use_compact: bool,
}

/// Alternates the systems pass by pass for `args.rounds` rounds (see the module doc) and
/// prints each system's median q/s and the per-round ratios of tailor to the best peer.
fn head_to_head(
    args: &Args,
    queries: &[f32],
    gt: &[Vec<usize>],
    results: &[SystemResult],
    walks: &[(String, PathBuf, bool)],
    mut server: Option<PeerServer>,
) {
    let dim = args.dim;
    let nq = queries.len() / dim;
    let mut systems: Vec<(String, Contender)> = Vec::new();
    for (name, dir, use_compact) in walks {
        let ix = match Index::open(dir) {
            Ok(ix) => ix,
            Err(e) => {
                println!("head-to-head: {name} left out: {e}");
                continue;
            }
        };
        let item_of_row = (0..ix.len())
            .map(|r| ix.id(r)[4..].parse().expect("bench ids are item{i}"))
            .collect();
        systems.push((
            name.clone(),
            Contender::Tailor(Box::new(TailorWalk {
                ix,
                item_of_row,
                use_compact: *use_compact,
            })),
        ));
    }
    if let Some(s) = &server {
        systems.extend(s.systems.iter().map(|n| (n.clone(), Contender::Peer)));
    }
    let targets = [0.95, 0.99];
    // (system index, target index, ef) for every system that reached the target.
    let mut slots: Vec<(usize, usize, usize)> = Vec::new();
    for (si, (name, _)) in systems.iter().enumerate() {
        let Some(r) = results.iter().find(|r| &r.name == name) else {
            continue;
        };
        for (ti, &t) in targets.iter().enumerate() {
            if let Some(p) = r.at(t) {
                slots.push((si, ti, p.ef));
            }
        }
    }
    if slots.is_empty() {
        println!("head-to-head: no system reached R@10 0.95 in its sweep");
        return;
    }
    // Warm tailor's mapped files as before its sweep (the peers hold theirs in memory).
    for (_, c) in &systems {
        if let Contender::Tailor(w) = c {
            let TailorWalk {
                ix, use_compact, ..
            } = w.as_ref();
            read_into_page_cache(ix.dir());
            let o = SearchOptions {
                k: K,
                ef: 512,
                use_compact: *use_compact,
                accept: None,
                rescore: None,
            };
            for q in queries.chunks_exact(dim) {
                ix.search_with("v", q, &o).expect("search");
            }
        }
    }
    println!();
    println!(
        "head-to-head: {} rounds; in each round every system answers the {nq} queries once (one query per call, \
         1 thread) at the ef where its sweep reached the target, in an order rotated each round",
        args.rounds
    );
    // passes[slot][round]
    let mut passes: Vec<Vec<Point>> = vec![Vec::new(); slots.len()];
    // Passes at one target run back to back, so each ratio compares neighbours in time.
    let groups: Vec<Vec<usize>> = (0..targets.len())
        .map(|ti| (0..slots.len()).filter(|&s| slots[s].1 == ti).collect())
        .collect();
    for round in 0..args.rounds {
        for g in &groups {
            for k in 0..g.len() {
                let slot = g[(k + round) % g.len()];
                let (si, _, ef) = slots[slot];
                let (name, contender) = &systems[si];
                let point = match contender {
                    Contender::Tailor(w) => {
                        let TailorWalk {
                            ix,
                            item_of_row,
                            use_compact,
                        } = w.as_ref();
                        let o = SearchOptions {
                            k: K,
                            ef,
                            use_compact: *use_compact,
                            accept: None,
                            rescore: None,
                        };
                        let (found, t) = tailor_pass(ix, item_of_row, queries, dim, &o);
                        Point {
                            ef,
                            recall: recall(&found, gt),
                            qps: nq as f64 / t.wall,
                            cpu_qps: nq as f64 / t.cpu,
                        }
                    }
                    Contender::Peer => match server.as_mut().expect("peer server").pass(name, ef) {
                        Ok(p) => p,
                        Err(e) => {
                            println!("head-to-head stopped: {e}");
                            return;
                        }
                    },
                };
                passes[slot].push(point);
            }
        }
    }
    if let Some(s) = server.take() {
        s.finish();
    }
    let median = |mut v: Vec<f64>| -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        let m = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        (m, v[0], v[v.len() - 1])
    };
    println!(
        "{:<34} {:>6} {:>7} {:>26} {:>10}",
        "system", "target", "ef", "q/s median (min-max)", "q/CPU-s"
    );
    for (slot, &(si, ti, ef)) in slots.iter().enumerate() {
        let p = &passes[slot];
        let (m, lo, hi) = median(p.iter().map(|p| p.qps).collect());
        let (mc, _, _) = median(p.iter().map(|p| p.cpu_qps).collect());
        println!(
            "{:<34} {:>6} {:>7} {:>26} {:>10.0}   R@10 {:.4}",
            systems[si].0,
            targets[ti],
            ef,
            format!("{m:.0} ({lo:.0}-{hi:.0})"),
            mc,
            p[0].recall
        );
    }
    // Per round: each tailor walk against the fastest peer of that round.
    for (ti, t) in targets.iter().enumerate() {
        let peer_slots: Vec<usize> = (0..slots.len())
            .filter(|&s| slots[s].1 == ti && matches!(systems[slots[s].0].1, Contender::Peer))
            .collect();
        if peer_slots.is_empty() {
            continue;
        }
        for s in (0..slots.len())
            .filter(|&s| slots[s].1 == ti && matches!(systems[slots[s].0].1, Contender::Tailor(_)))
        {
            let per_round = |key: fn(&Point) -> f64| -> Vec<f64> {
                (0..args.rounds)
                    .map(|r| {
                        let best = peer_slots
                            .iter()
                            .map(|&p| key(&passes[p][r]))
                            .fold(f64::NAN, f64::max);
                        key(&passes[s][r]) / best
                    })
                    .collect()
            };
            let (m, lo, hi) = median(per_round(|p| p.qps));
            let (mc, loc, hic) = median(per_round(|p| p.cpu_qps));
            println!(
                "head-to-head at R@10>={t}: {} / fastest peer of each round: median {m:.2}x (rounds {lo:.2}-{hi:.2}x); per CPU-s {mc:.2}x ({loc:.2}-{hic:.2}x)",
                systems[slots[s].0].0
            );
        }
    }
}

fn print_sweep(r: &SystemResult) {
    let pts: Vec<String> = r
        .sweep
        .iter()
        .map(|p| {
            format!(
                "ef {}: R {:.4} {:.0} q/s {:.0} q/CPU-s",
                p.ef, p.recall, p.qps, p.cpu_qps
            )
        })
        .collect();
    println!("{} sweep: {}", r.name, pts.join(" | "));
}

fn print_table(results: &[SystemResult], batch: &[SystemResult]) {
    println!();
    println!(
        "one query per call, 1 thread; build on the bench's threads (* = recorded when the cached index was built); \
         q/s cells: wall q/s / q per CPU-second of the searching thread (ef)"
    );
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>24} {:>24}",
        "system",
        "build s",
        "build CPU s",
        "size MB",
        "open ms",
        "open cold ms",
        "1st q ms",
        "mem MB",
        "R@10>=0.95",
        "R@10>=0.99"
    );
    for r in results {
        println!(
            "{:<42} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8.1} {:>24} {:>24}",
            r.name,
            format!(
                "{}{}",
                num(r.build_s, 1.0, 1),
                if r.build_cached { "*" } else { "" }
            ),
            num(r.build_cpu_s, 1.0, 1),
            if r.bytes > 0 {
                format!("{:.1}", r.bytes as f64 / 1e6)
            } else {
                "-".into()
            },
            num(r.open_s, 1e3, 3),
            num(r.open_cold_s, 1e3, 1),
            num(r.first_query_s, 1e3, 3),
            r.mem_bytes as f64 / 1e6,
            cell(r.at(0.95)),
            cell(r.at(0.99))
        );
    }
    println!(
        "mem: tailor = resident bytes of the mapped files the walk reads, after its sweep (all \
         of each file: the bench reads them into the page cache first, as the peers load their \
         index; the cold/warm lines below show what a cold open and 1,000 queries touch); \
         hnsw_rs and the python peers = growth of the process's resident memory from before \
         build/load to after the sweep."
    );
    let is_tailor = |r: &&SystemResult| r.name.starts_with("tailor");
    for peer in results.iter().filter(|r| !is_tailor(r)) {
        println!(
            "ratios to {} (q/s wall and per CPU-s: >1 tailor faster; build wall and CPU, size: <1 tailor smaller):",
            peer.name
        );
        for r in results.iter().filter(is_tailor) {
            println!(
                "  {:<28} build {} (CPU {})  size {}  @0.95 {}  @0.99 {}",
                r.name,
                ratio(r.build_s, peer.build_s),
                ratio(r.build_cpu_s, peer.build_cpu_s),
                ratio(r.bytes as f64, peer.bytes as f64),
                qps_ratio(r.at(0.95), peer.at(0.95)),
                qps_ratio(r.at(0.99), peer.at(0.99))
            );
        }
    }
    for t in [0.95, 0.99] {
        for (what, key) in [
            ("wall q/s", (|p: &Point| p.qps) as fn(&Point) -> f64),
            ("q/CPU-s", |p: &Point| p.cpu_qps),
        ] {
            let best = |tailor: bool| {
                results
                    .iter()
                    .filter(|r| is_tailor(r) == tailor)
                    .filter_map(|r| r.at(t).map(|p| (r.name.as_str(), key(p))))
                    .filter(|x| x.1.is_finite())
                    .max_by(|a, b| a.1.total_cmp(&b.1))
            };
            if let (Some((tn, tq)), Some((pn, pq))) = (best(true), best(false)) {
                println!(
                    "best at R@10>={t} by {what}: {tn} {tq:.0} vs best peer {pn} {pq:.0} = {:.2}x",
                    tq / pq
                );
            }
        }
    }
    if !batch.is_empty() {
        println!();
        println!("batch search: all queries per call on the bench's threads; cells: wall q/s / q per CPU-second of the process (ef)");
        println!("{:<72} {:>24} {:>24}", "system", "R@10>=0.95", "R@10>=0.99");
        for r in batch {
            println!(
                "{:<72} {:>24} {:>24}",
                r.name,
                cell(r.at(0.95)),
                cell(r.at(0.99))
            );
        }
        for r in batch.iter().filter(is_tailor) {
            for p in batch.iter().filter(|p| !is_tailor(p)) {
                println!(
                    "  {} / {}: @0.95 {}  @0.99 {}",
                    r.name,
                    p.name,
                    qps_ratio(r.at(0.95), p.at(0.95)),
                    qps_ratio(r.at(0.99), p.at(0.99))
                );
            }
        }
    }
}

fn cell(p: Option<&Point>) -> String {
    p.map_or("-".to_string(), |p| {
        format!("{:.0} / {} (ef {})", p.qps, num(p.cpu_qps, 1.0, 0), p.ef)
    })
}

fn num(x: f64, scale: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{:.*}", prec, x * scale)
    } else {
        "-".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// "wall W (CPU C)" ratio of two sweep points.
fn qps_ratio(a: Option<&Point>, b: Option<&Point>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!(
            "{} (CPU {})",
            ratio(a.qps, b.qps),
            ratio(a.cpu_qps, b.cpu_qps)
        ),
        _ => "-".into(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mem_total_gib() -> f64 {
    proc_kb("/proc/meminfo", "MemTotal:").map_or(0.0, |kb| kb as f64 / (1024.0 * 1024.0))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
