//! The README's scale-out recipe on a real scheduler: a single-node Slurm cluster from
//! Debian's packages (tools/slurm-local.sh), the array job of tools/embed-array.sh, one
//! task killed mid-way and requeued. Ignored by default (needs root, apt-get and about
//! three minutes, most of it Slurm's fixed delay before a requeued job may start):
//!
//!     cargo test --features failpoints --test slurm -- --ignored --nocapture
//!
//! CI runs the same recipe with local processes (tests/embed.rs,
//! `the_array_recipe_with_local_processes_gives_the_single_machine_index`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tailor::catalog::synth;
use tailor::index::{Hit, Index, IndexSet};
use tailor::progress::ProgressMode;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("[{:>5.1} s] {what}", start.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs root and Debian's slurm-wlm + munge: cargo test --features failpoints --test slurm -- --ignored"]
fn the_readme_array_recipe_on_slurm_survives_a_killed_and_requeued_task() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tailor = env!("CARGO_BIN_EXE_tailor");
    eprint!(
        "{}",
        ok(
            "bash",
            &[repo.join("tools/slurm-local.sh").to_str().unwrap(), "up"]
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = d.join("catalog");
    let opts = synth::SynthOptions {
        items: 200,
        size: 32,
        seed: 3,
        jpeg: false,
    };
    synth::generate(&catalog, &opts, ProgressMode::Quiet).unwrap();
    let model = d.join("model.safetensors");
    let (c, m) = (catalog.to_str().unwrap(), model.to_str().unwrap());
    ok(
        tailor,
        &[
            "model",
            "init",
            "--arch",
            "asen",
            "--backbone",
            "tiny",
            "--input-size",
            "32",
            "--catalog",
            c,
            "--out",
            m,
            "--seed",
            "1",
        ],
    );
    let single = d.join("single");
    ok(
        tailor,
        &[
            "embed",
            "-q",
            "--model",
            m,
            "--catalog",
            c,
            "--out",
            single.to_str().unwrap(),
            "--batch",
            "4",
        ],
    );

    // The README's submission, with the settings in the environment sbatch exports.
    let set = d.join("set");
    let submitted = Command::new("sbatch")
        .args(["--parsable", "--array=0-3", "--chdir"])
        .arg(d)
        .arg(repo.join("tools/embed-array.sh"))
        .env("TAILOR", tailor)
        .env("MODEL", &model)
        .env("CATALOG", &catalog)
        .env("OUT", &set)
        .env("BATCH", "4")
        .env("EXTRA", "-q --checkpoint-secs 0")
        // Slow enough batches that task 2 is surely killed mid-way.
        .env("TAILOR_FAILPOINT_EMBED_BATCH_SLEEP_MS", "150")
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    let job = String::from_utf8(submitted.stdout)
        .unwrap()
        .trim()
        .to_string();
    eprintln!("submitted array job {job}");
    let task2 = format!("{job}_2");

    let checkpoint = set.join("segment-00002.embed-work/checkpoint.json");
    wait_for(
        "task 2 half-way (checkpoint at 8+ items)",
        Duration::from_secs(300),
        || {
            std::fs::read(&checkpoint)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["next_item"].as_u64())
                .is_some_and(|n| n >= 8)
        },
    );
    assert!(!set.join("segment-00002/manifest.json").exists());
    eprint!("{}", ok("squeue", &["-j", &job]));
    ok("scancel", &["--batch", "--signal=KILL", &task2]);
    let state = || ok("squeue", &["-h", "-t", "all", "-j", &task2, "-o", "%T"]);
    wait_for("task 2 killed (FAILED)", Duration::from_secs(120), || {
        state().trim() == "FAILED"
    });
    eprint!("{}", ok("squeue", &["-t", "all", "-j", &job]));
    ok("scontrol", &["requeue", &task2]);
    eprintln!("requeued {task2}");
    eprint!("{}", ok("squeue", &["-t", "all", "-j", &job]));
    wait_for("every task done", Duration::from_secs(600), || {
        ok("squeue", &["-h", "-j", &job]).trim().is_empty()
    });

    let log = std::fs::read_to_string(d.join(format!("tailor-embed-{job}_2.out"))).unwrap();
    eprintln!("--- tailor-embed-{job}_2.out ---\n{log}---");
    assert!(
        log.contains("stale lock"),
        "the requeued task took over the lock"
    );
    assert!(log.contains("resumed after"), "the requeued task resumed");
    eprint!("{}", ok(tailor, &["index", "info", set.to_str().unwrap()]));

    let (a, b) = (Index::open(&single).unwrap(), IndexSet::open(&set).unwrap());
    assert!(b.missing().is_empty());
    assert_eq!(a.len(), b.len());
    let top = |h: Vec<Hit>| {
        h.into_iter()
            .map(|h| (h.id, h.score.to_bits()))
            .collect::<Vec<_>>()
    };
    for attr in a.attributes() {
        for row in 0..a.len() {
            let other = b.row(a.id(row)).unwrap();
            assert_eq!(
                a.vector(attr, row).unwrap(),
                b.vector(attr, other).unwrap(),
                "{attr} {}: bit-identical",
                a.id(row)
            );
        }
        for row in (0..a.len()).step_by(10) {
            let q = a.vector(attr, row).unwrap().to_vec();
            assert_eq!(
                top(b.search_exact(attr, &q, 10).unwrap()),
                top(a.search_exact(attr, &q, 10).unwrap()),
                "{attr}: the same exact top-10"
            );
        }
    }
    eprintln!(
        "set of {} items in 4 segments: vectors bit-identical, exact top-10 identical",
        b.len()
    );
}
