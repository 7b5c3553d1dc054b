//! Index bench: tailor against hnswlib and faiss IndexHNSWFlat, same data, same run.
//!
//! Data: `--items` (default 100,000) L2-normalised `--dim` (1024) vectors from a
//! 200-cluster Gaussian mixture (centres N(0, 1), points = centre + N(0, 1) noise,
//! fixed seed), plus `--queries` (1,000) held-out points from the same mixture; exact
//! top-10 by brute force. M=16, ef_construction=200, build on `--threads` (2) threads,
//! search one query per call on one thread, sweeping ef. Prints build time, size, open
//! time, first-query time, resident memory of the mapped files after the queries, and
//! queries/s at recall@10 >= 0.95 and >= 0.99, for each system and as ratios.
//!
//! Run: `cargo bench --bench index -- [--items N] [--dim D] [--queries Q]
//!       [--python PYTHON] [--dir DIR]`. The peers' python is `--python`, else
//! `$TAILOR_BENCH_PYTHON`, else the project's `.venv-ann/bin/python` made by
//! `bash tools/ann_venv.sh`; they are skipped when it has no hnswlib/faiss. Not built by
//! `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use tailor::index::{
    self, AttributeInput, BuildInput, BuildParams, CompactKind, Index, SearchOptions,
};
use tailor::progress::ProgressMode;

const K: usize = 10;
const EFS: &[usize] = &[
    10, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256, 320, 400, 512,
];

struct Args {
    items: usize,
    dim: usize,
    queries: usize,
    threads: usize,
    python: PathBuf,
    dir: PathBuf,
    compact: Vec<CompactKind>,
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
        dir: std::env::temp_dir().join("tailor-index-bench"),
        compact: vec![CompactKind::Int8, CompactKind::F16],
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--items" => a.items = val().parse().expect("--items N"),
            "--dim" => a.dim = val().parse().expect("--dim D"),
            "--queries" => a.queries = val().parse().expect("--queries Q"),
            "--threads" => a.threads = val().parse().expect("--threads T"),
            "--python" => a.python = PathBuf::from(val()),
            "--dir" => a.dir = PathBuf::from(val()),
            "--compact" => {
                a.compact = val()
                    .split(',')
                    .map(|s| s.parse().expect("--compact int8,f16"))
                    .collect()
            }
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

fn mixture(n: usize, dim: usize, centres: &[f32], seed: u64) -> Vec<f32> {
    let clusters = centres.len() / dim;
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim * 1024)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
            for row in chunk.chunks_exact_mut(dim) {
                let k = rng.gen_range(0..clusters);
                for (j, x) in row.iter_mut().enumerate() {
                    *x = centres[k * dim + j] + normal(&mut rng);
                }
                tailor::index::distance::normalize(row);
            }
        });
    out
}

/// Exact top-k, queries blocked so the base is streamed once per block.
fn ground_truth(base: &[f32], queries: &[f32], dim: usize) -> Vec<Vec<usize>> {
    queries
        .par_chunks(dim * 8)
        .flat_map_iter(|block| {
            let qs: Vec<&[f32]> = block.chunks_exact(dim).collect();
            let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::new(); qs.len()];
            for (r, row) in base.chunks_exact(dim).enumerate() {
                for (qi, q) in qs.iter().enumerate() {
                    let s = tailor::index::distance::dot_f32(q, row);
                    let b = &mut best[qi];
                    if b.len() < K || s > b[K - 1].0 {
                        b.push((s, r));
                        b.sort_by(|x, y| y.0.total_cmp(&x.0));
                        b.truncate(K);
                    }
                }
            }
            best.into_iter()
                .map(|b| b.into_iter().map(|x| x.1).collect::<Vec<_>>())
        })
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

#[derive(Clone, Debug)]
struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

#[derive(Clone, Debug)]
struct SystemResult {
    name: String,
    build_s: f64,
    bytes: u64,
    open_s: f64,
    first_query_s: f64,
    sweep: Vec<Point>,
}

impl SystemResult {
    fn at(&self, target: f64) -> Option<&Point> {
        self.sweep.iter().find(|p| p.recall >= target)
    }
}

/// Resident bytes of this process's mappings of files under `dir` (from smaps).
fn resident_of(dir: &Path) -> u64 {
    resident_by_file(dir).iter().map(|x| x.1).sum()
}

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

/// Drops the (clean, fsynced) files of `dir` from the page cache.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).expect("index dir").flatten() {
        if let Ok(f) = std::fs::File::open(e.path()) {
            // SAFETY: plain syscall on a valid open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

fn write_ids_npy(path: &Path, gt: &[Vec<usize>]) {
    let flat: Vec<f32> = gt
        .iter()
        .flat_map(|g| g.iter().map(|&x| x as f32))
        .collect();
    tailor::npy::write_f32_matrix(path, gt.len(), K, &flat).expect("write gt");
}

fn main() {
    let args = parse_args();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .expect("pool");
    std::fs::create_dir_all(&args.dir).expect("bench dir");
    let (n, dim, nq) = (args.items, args.dim, args.queries);
    println!(
        "index bench: {n} x {dim}-d L2-normalised, 200-cluster Gaussian mixture (seed 42), {nq} held-out queries, \
         recall@{K}; M=16 efC=200, build on {} threads, search 1 thread, 1 query per call",
        args.threads
    );
    println!(
        "machine: {} cores ({}), {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        std::env::consts::ARCH
    );
    let t = Instant::now();
    let (base, queries, gt) = pool.install(|| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let centres: Vec<f32> = (0..200 * dim).map(|_| normal(&mut rng)).collect();
        let base = mixture(n, dim, &centres, 1);
        let queries = mixture(nq, dim, &centres, 2);
        let gt = ground_truth(&base, &queries, dim);
        (base, queries, gt)
    });
    println!("data + ground truth: {:.1} s", t.elapsed().as_secs_f64());
    tailor::npy::write_f32_matrix(&args.dir.join("base.npy"), n, dim, &base).expect("base");
    tailor::npy::write_f32_matrix(&args.dir.join("queries.npy"), nq, dim, &queries)
        .expect("queries");
    write_ids_npy(&args.dir.join("gt.npy"), &gt);

    let mut results: Vec<SystemResult> = Vec::new();
    let ids: Vec<String> = (0..n).map(|i| format!("item{i}")).collect();
    for (bi, &compact) in args.compact.iter().enumerate() {
        let out = args.dir.join(format!("tailor-{compact:?}").to_lowercase());
        let _ = std::fs::remove_dir_all(&out);
        let input = BuildInput {
            ids: ids.clone(),
            attributes: vec![AttributeInput {
                name: "v".into(),
                dim,
                rows: &base,
            }],
            labels: None,
            model: None,
        };
        let params = BuildParams {
            compact,
            ..BuildParams::default()
        };
        let t = Instant::now();
        pool.install(|| index::build(&out, &input, &params, ProgressMode::Quiet))
            .expect("build");
        let build_s = t.elapsed().as_secs_f64();
        // Open: warm page cache (files just written); averaged over repeated opens.
        let t = Instant::now();
        let reps = 20;
        for _ in 0..reps {
            drop(Index::open(&out).expect("open"));
        }
        let open_s = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        let ix = Index::open(&out).expect("open");
        ix.search("v", &queries[..dim], K, 64).expect("first query");
        let first_query_s = t.elapsed().as_secs_f64();
        let bytes = ix.manifest().files.iter().map(|f| f.len).sum();
        let walks: Vec<(String, bool)> = if bi == 0 {
            vec![
                ("tailor f32".into(), false),
                (format!("tailor {compact:?}").to_lowercase(), true),
            ]
        } else {
            vec![(format!("tailor {compact:?}").to_lowercase(), true)]
        };
        for (name, use_compact) in walks {
            let mut sweep = Vec::new();
            for &ef in EFS {
                let opts = SearchOptions {
                    k: K,
                    ef,
                    use_compact,
                    accept: None,
                    rescore: None,
                };
                let t = Instant::now();
                let found: Vec<Vec<usize>> = queries
                    .chunks_exact(dim)
                    .map(|q| {
                        ix.search_with("v", q, &opts)
                            .expect("search")
                            .iter()
                            .map(|h| h.row)
                            .collect()
                    })
                    .collect();
                let dt = t.elapsed().as_secs_f64();
                let r = recall(&found, &gt);
                sweep.push(Point {
                    ef,
                    recall: r,
                    qps: nq as f64 / dt,
                });
                if r >= 0.995 {
                    break;
                }
            }
            let res = SystemResult {
                name: name.clone(),
                build_s,
                bytes,
                open_s,
                first_query_s,
                sweep,
            };
            print_sweep(&res);
            results.push(res);
        }
        let (bv, bc, bg, bo) = ix.sizes();
        println!(
            "{}: files vectors {:.1} MB, compact {:.1} MB, graph {:.1} MB, other {:.1} MB; resident (mapped, after the sweep) {:.1} MB",
            out.display(),
            bv as f64 / 1e6,
            bc as f64 / 1e6,
            bg as f64 / 1e6,
            bo as f64 / 1e6,
            resident_of(&out) as f64 / 1e6
        );
        // Resident memory after open + 1,000 queries at a fixed ef in a fresh mapping:
        // warm (files still in the page cache from the build: each fault also maps up to
        // 16 cached neighbour pages, whatever the advice) and cold (files evicted first:
        // only what the queries read, and what read-ahead adds, becomes resident).
        drop(ix);
        for cold in [false, true] {
            if cold {
                evict(&out);
            }
            let ix = Index::open(&out).expect("open");
            let opts = SearchOptions {
                k: K,
                ef: 64,
                use_compact: true,
                accept: None,
                rescore: None,
            };
            for q in queries.chunks_exact(dim).take(1000) {
                ix.search_with("v", q, &opts).expect("search");
            }
            let by_file = resident_by_file(&out);
            let total: u64 = by_file.iter().map(|x| x.1).sum();
            let parts: Vec<String> = by_file
                .iter()
                .map(|(f, b)| format!("{f} {:.1}", *b as f64 / 1e6))
                .collect();
            println!(
                "  {} open + {} queries (ef 64): resident of mapped index files {:.1} MB of {:.1} MB ({}; vector files {:.1} MB)",
                if cold { "cold" } else { "warm" },
                nq.min(1000),
                total as f64 / 1e6,
                bytes as f64 / 1e6,
                parts.join(", "),
                (bv + bc) as f64 / 1e6
            );
        }
    }

    let py = Command::new(&args.python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ann_peers.py"))
        .args([
            "--dir",
            &args.dir.to_string_lossy(),
            "--threads",
            &args.threads.to_string(),
        ])
        .output();
    match py {
        Ok(o) if o.status.success() => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let v: serde_json::Value = match serde_json::from_str(line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
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
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let res = SystemResult {
                    name: v["system"].as_str().unwrap_or("?").to_string(),
                    build_s: v["build_s"].as_f64().unwrap_or(f64::NAN),
                    bytes: v["bytes"].as_u64().unwrap_or(0),
                    open_s: v["open_s"].as_f64().unwrap_or(f64::NAN),
                    first_query_s: v["first_query_s"].as_f64().unwrap_or(f64::NAN),
                    sweep,
                };
                print_sweep(&res);
                results.push(res);
            }
        }
        Ok(o) => println!("peers failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("peers skipped: cannot run {}: {e}", args.python.display()),
    }
    print_table(&results);
}

fn print_sweep(r: &SystemResult) {
    let pts: Vec<String> = r
        .sweep
        .iter()
        .map(|p| format!("ef {}: R {:.4} {:.0} q/s", p.ef, p.recall, p.qps))
        .collect();
    println!("{} sweep: {}", r.name, pts.join(" | "));
}

fn print_table(results: &[SystemResult]) {
    println!();
    println!(
        "{:<30} {:>9} {:>10} {:>10} {:>11} {:>16} {:>16}",
        "system", "build s", "size MB", "open ms", "1st q ms", "q/s @R>=0.95", "q/s @R>=0.99"
    );
    let cell =
        |p: Option<&Point>| p.map_or("-".to_string(), |p| format!("{:.0} (ef {})", p.qps, p.ef));
    for r in results {
        println!(
            "{:<30} {:>9.1} {:>10.1} {:>10.3} {:>11.3} {:>16} {:>16}",
            r.name,
            r.build_s,
            r.bytes as f64 / 1e6,
            r.open_s * 1e3,
            r.first_query_s * 1e3,
            cell(r.at(0.95)),
            cell(r.at(0.99))
        );
    }
    let peers: Vec<&SystemResult> = results
        .iter()
        .filter(|r| !r.name.starts_with("tailor"))
        .collect();
    for peer in peers {
        println!(
            "ratios to {} (>1: tailor faster/smaller is <1 for time and size):",
            peer.name
        );
        for r in results.iter().filter(|r| r.name.starts_with("tailor")) {
            let ratio = |t: f64| match (r.at(t), peer.at(t)) {
                (Some(a), Some(b)) => format!("{:.2}x", a.qps / b.qps),
                _ => "-".into(),
            };
            println!(
                "  {:<26} build {:.2}x  size {:.2}x  open {:.3}x  q/s@0.95 {}  q/s@0.99 {}",
                r.name,
                r.build_s / peer.build_s,
                r.bytes as f64 / peer.bytes as f64,
                r.open_s / peer.open_s,
                ratio(0.95),
                ratio(0.99)
            );
        }
    }
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
