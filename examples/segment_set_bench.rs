//! Scale bench for segment sets (not a test): one index of N vectors against a set of
//! the same vectors in S segments.
//!
//! Data: the index bench's mixture (200 clusters, centres N(0,1), points = centre +
//! N(0,1), fixed seed), `--items` x `--dim`, one attribute; items go to segments by the
//! hash of their id, as `embed --shard K/S` assigns them. Measured, side by side in one run:
//! - build time of the single index and of the S segments (one after another);
//! - in-process: open time, mean graph-search latency (k=10, ef 64) and recall@10
//!   against exact, exact-search latency, for the set and for the single index;
//! - `tailor search` (one query, a fresh process: open + search) and `tailor eval map`
//!   (exact, `--queries` queries against every other item): wall time and peak RSS from
//!   GNU time.
//!
//! Run: `cargo build --release && cargo run --release --example segment_set_bench --
//!       [--items 200000] [--dim 128] [--segments 8] [--queries 200] [--map-queries 1000]
//!       [--dir /tmp/tailor-set-bench]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use tailor::index::set::prepare_segment;
use tailor::index::{self, AttributeInput, BuildInput, BuildParams, Index, IndexSet};
use tailor::progress::ProgressMode;

struct Args {
    items: usize,
    dim: usize,
    segments: usize,
    queries: usize,
    map_queries: usize,
    dir: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        items: 200_000,
        dim: 128,
        segments: 8,
        queries: 200,
        map_queries: 1000,
        dir: std::env::temp_dir().join("tailor-set-bench"),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--items" => a.items = v.parse().expect("--items N"),
            "--dim" => a.dim = v.parse().expect("--dim D"),
            "--segments" => a.segments = v.parse().expect("--segments S"),
            "--queries" => a.queries = v.parse().expect("--queries Q"),
            "--map-queries" => a.map_queries = v.parse().expect("--map-queries Q"),
            "--dir" => a.dir = PathBuf::from(v),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The mixture's 200 centres.
fn centres(dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..200 * dim).map(|_| normal(&mut rng)).collect()
}

/// Mixture points around `centres` and their cluster. Base rows and queries share the
/// centres (different seeds for the points): queries from other centres would land
/// between clusters and measure nothing a catalog query does.
fn mixture(n: usize, dim: usize, centres: &[f32], seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let clusters = centres.len() / dim;
    let mut out = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.gen_range(0..clusters);
        labels.push(c);
        for j in 0..dim {
            out.push(centres[c * dim + j] + normal(&mut rng));
        }
    }
    (out, labels)
}

fn build(dir: &Path, ids: Vec<String>, rows: &[f32], dim: usize) -> f64 {
    let t = Instant::now();
    let input = BuildInput {
        ids,
        attributes: vec![AttributeInput {
            name: "a".into(),
            dim,
            rows,
        }],
        labels: None,
        model: Some(serde_json::json!({"identity": "bench"})),
    };
    index::build(dir, &input, &BuildParams::default(), ProgressMode::Quiet).expect("build");
    t.elapsed().as_secs_f64()
}

/// Runs the tailor binary under GNU time: (wall seconds, peak RSS in MB).
fn timed(tailor: &Path, args: &[&str]) -> (f64, f64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M"])
        .arg(tailor)
        .args(args)
        .output()
        .expect("/usr/bin/time");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tailor {args:?}: {err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("TIME "))
        .expect("time line");
    let f: Vec<f64> = line[5..].split(' ').map(|x| x.parse().unwrap()).collect();
    (f[0], f[1] / 1024.0)
}

fn main() {
    let args = parse_args();
    let (n, dim, s) = (args.items, args.dim, args.segments);
    let tailor = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("tailor");
    assert!(
        tailor.exists(),
        "build the binary first: cargo build --release"
    );
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "segment-set bench: {n} x {dim}-d, {s} segments; load average {}",
        load.trim()
    );

    let centres = centres(dim, 7);
    let (base, labels) = mixture(n, dim, &centres, 8);
    let ids: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
    let single_dir = args.dir.join("single");
    let t_single = build(&single_dir, ids.clone(), &base, dim);
    let set_dir = args.dir.join("set");
    let mut t_set = 0.0;
    for k in 0..s {
        let shard = tailor::embed::Shard { index: k, count: s };
        let rows: Vec<usize> = (0..n).filter(|&r| shard.contains(&ids[r])).collect();
        let part: Vec<f32> = rows
            .iter()
            .flat_map(|&r| base[r * dim..(r + 1) * dim].iter().copied())
            .collect();
        let seg = prepare_segment(&set_dir, k, s).unwrap();
        t_set += build(
            &seg,
            rows.iter().map(|&r| ids[r].clone()).collect(),
            &part,
            dim,
        );
    }
    println!("build: single {t_single:.1} s, {s} segments {t_set:.1} s (sequential)");

    // In-process latency and recall.
    let (queries, _) = mixture(args.queries, dim, &centres, 99);
    let t = Instant::now();
    let single = Index::open(&single_dir).unwrap();
    let open_single = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let set = IndexSet::open(&set_dir).unwrap();
    let open_set = t.elapsed().as_secs_f64();
    println!(
        "open: single {:.1} ms, set {:.1} ms (includes the duplicate-id check over {n} ids)",
        open_single * 1e3,
        open_set * 1e3
    );
    let qs: Vec<&[f32]> = queries.chunks(dim).collect();
    let exact: Vec<Vec<String>> = qs
        .iter()
        .map(|q| {
            single
                .search_exact("a", q, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect()
        })
        .collect();
    for ef in [16, 32, 64, 128] {
        let mut line = format!("ef {ef:>3}:");
        for (name, search) in [
            (
                "single",
                &(|q: &[f32]| single.search("a", q, 10, ef).unwrap())
                    as &dyn Fn(&[f32]) -> Vec<index::Hit>,
            ),
            ("set", &|q: &[f32]| set.search("a", q, 10, ef).unwrap()),
        ] {
            let t = Instant::now();
            let mut found = 0;
            for (q, want) in qs.iter().zip(&exact) {
                found += search(q).iter().filter(|h| want.contains(&h.id)).count();
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / qs.len() as f64;
            line += &format!(
                "  {name} {ms:.3} ms/query recall@10 {:.4}",
                found as f64 / (10 * qs.len()) as f64
            );
        }
        println!("{line}");
    }
    let t = Instant::now();
    for q in &qs {
        single.search_exact("a", q, 10).unwrap();
    }
    let ex_single = t.elapsed().as_secs_f64() * 1e3 / qs.len() as f64;
    let t = Instant::now();
    for (q, want) in qs.iter().zip(&exact) {
        let got: Vec<String> = set
            .search_exact("a", q, 10)
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(
            &got, want,
            "exact top-10 of the set equals the single index's"
        );
    }
    let ex_set = t.elapsed().as_secs_f64() * 1e3 / qs.len() as f64;
    println!(
        "exact search: single {ex_single:.2} ms/query, set {ex_set:.2} ms/query (identical top-10)"
    );
    drop((single, set));

    // Fresh processes: search (open + one query) and exact eval map.
    let qfile = args.dir.join("q.npy");
    tailor::npy::write_f32_matrix(&qfile, 1, dim, qs[0]).unwrap();
    let mut qlist = String::new();
    let mut clist = String::new();
    for (i, label) in labels.iter().enumerate() {
        let line = format!("i{i} a c{label}\n");
        if i < args.map_queries {
            qlist += &line;
        } else {
            clist += &line;
        }
    }
    let (ql, cl) = (
        args.dir.join("queries.txt"),
        args.dir.join("candidates.txt"),
    );
    std::fs::write(&ql, qlist).unwrap();
    std::fs::write(&cl, clist).unwrap();
    for (name, dir) in [("single", &single_dir), ("set", &set_dir)] {
        let d = dir.to_str().unwrap();
        let search = timed(
            &tailor,
            &[
                "search",
                "--index",
                d,
                "--attr",
                "a",
                "--vector",
                qfile.to_str().unwrap(),
            ],
        );
        let map = timed(
            &tailor,
            &[
                "eval",
                "map",
                "-q",
                "--index",
                d,
                "--queries",
                ql.to_str().unwrap(),
                "--candidates",
                cl.to_str().unwrap(),
            ],
        );
        println!(
            "{name:>6}: `tailor search` {:.2} s, peak RSS {:.0} MB | `tailor eval map` ({} queries x {} candidates) {:.1} s, peak RSS {:.0} MB",
            search.0,
            search.1,
            args.map_queries,
            n - args.map_queries,
            map.0,
            map.1
        );
    }
    let vec_mb = (n * dim * 4) as f64 / 1e6;
    println!("(the f32 vectors are {vec_mb:.0} MB)");
}
