//! Single-query against batch search on one index: queries/s of one call per query
//! (one thread) and of `Index::search_batch` (threads over queries), same queries, same
//! results (checked).
//!
//! Data: `--items` (20,000) L2-normalised `--dim` (256) vectors from a 100-cluster
//! Gaussian mixture, `--queries` (2,000) held-out points; M=16, efC=200.
//!
//! Run: `cargo run --release --example batch_search -- [--items N] [--dim D]
//!       [--queries Q] [--ef EF] [--compact none|f16|int8|bit1|bit4] [--threads T]`
//! (threads: the batch pool's size, default all cores).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use tailor::index::{
    self, AttributeInput, BuildInput, BuildParams, CompactKind, Index, SearchOptions,
};
use tailor::progress::ProgressMode;

fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

fn main() {
    let (mut items, mut dim, mut nq, mut ef, mut threads) =
        (20_000usize, 256usize, 2_000usize, 64usize, 0usize);
    let mut compact = CompactKind::Int8;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--items" => items = v.parse().expect("--items N"),
            "--dim" => dim = v.parse().expect("--dim D"),
            "--queries" => nq = v.parse().expect("--queries Q"),
            "--ef" => ef = v.parse().expect("--ef EF"),
            "--threads" => threads = v.parse().expect("--threads T"),
            "--compact" => compact = v.parse().expect("--compact none|f16|int8|bit1|bit4"),
            other => panic!("unknown option {other}"),
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let centres: Vec<f32> = (0..100 * dim).map(|_| normal(&mut rng)).collect();
    let point = |rng: &mut rand_chacha::ChaCha8Rng| {
        let c = rng.gen_range(0..100);
        (0..dim)
            .map(|j| centres[c * dim + j] + normal(rng))
            .collect::<Vec<f32>>()
    };
    let base: Vec<f32> = (0..items).flat_map(|_| point(&mut rng)).collect();
    let queries: Vec<f32> = (0..nq).flat_map(|_| point(&mut rng)).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ix");
    let input = BuildInput {
        ids: (0..items).map(|i| format!("item{i}")).collect(),
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
    index::build(&path, &input, &params, ProgressMode::Quiet).expect("build");
    println!(
        "built {items} x {dim} ({compact:?}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ix = Index::open(&path).expect("open");
    let qs: Vec<&[f32]> = queries.chunks_exact(dim).collect();
    let opts = SearchOptions::new(10, ef);
    let t = Instant::now();
    let single: Vec<_> = qs
        .iter()
        .map(|q| ix.search_with("v", q, &opts).expect("search"))
        .collect();
    let single_s = t.elapsed().as_secs_f64();
    let mut pool = rayon::ThreadPoolBuilder::new();
    if threads > 0 {
        pool = pool.num_threads(threads);
    }
    let pool = pool.build().expect("pool");
    let t = Instant::now();
    let batch = pool
        .install(|| ix.search_batch("v", &qs, &opts))
        .expect("batch");
    let batch_s = t.elapsed().as_secs_f64();
    assert_eq!(
        single, batch,
        "batch results differ from single-query results"
    );
    println!(
        "k 10 ef {ef}: single {:.0} q/s (1 thread), batch {:.0} q/s ({} threads), {:.2}x; load average {}",
        nq as f64 / single_s,
        nq as f64 / batch_s,
        pool.current_num_threads(),
        single_s / batch_s,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
