//! The batch job end to end: synth -> model -> embed -> search; resume after a kill;
//! rejects; shards merged into one index.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tailor::catalog::synth;
use tailor::index::{self, BuildParams, Index, IndexSet};
use tailor::progress::ProgressMode;

fn tailor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailor"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A synthetic catalog of `items` at 32 px and a tiny untrained ASEN for it.
fn setup(dir: &Path, items: usize) -> (PathBuf, PathBuf) {
    let catalog = dir.join("catalog");
    let opts = synth::SynthOptions {
        items,
        size: 32,
        seed: 3,
        jpeg: false,
    };
    synth::generate(&catalog, &opts, ProgressMode::Quiet).unwrap();
    let model = dir.join("model.safetensors");
    ok(tailor(
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
            s(&catalog),
            "--out",
            s(&model),
            "--seed",
            "1",
        ],
        &[],
    ));
    (catalog, model)
}

fn embed(model: &Path, catalog: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "embed",
        "--json",
        "-q",
        "--model",
        s(model),
        "--catalog",
        s(catalog),
        "--out",
        s(out),
        "--batch",
        "4",
    ];
    args.extend_from_slice(extra);
    tailor(&args, env)
}

#[test]
fn synth_embed_search_finds_each_item_first() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 40);
    let out = dir.path().join("index");
    let summary: serde_json::Value =
        serde_json::from_str(&ok(embed(&model, &catalog, &out, &[], &[]))).unwrap();
    assert_eq!(summary["embedded"], 40);
    assert_eq!(summary["rejected"], 0);
    assert!(
        !dir.path().join("index.embed-work").exists(),
        "work directory removed after publishing"
    );

    let index = Index::open(&out).unwrap();
    assert_eq!(index.len(), 40);
    assert_eq!(index.attributes().len(), 7);
    for attr in index.attributes() {
        for row in 0..index.len() {
            let v = index.vector(attr, row).unwrap().to_vec();
            let exact = index.search_exact(attr, &v, 1).unwrap();
            assert_eq!(exact[0].row, row, "{attr}: exact search by its own vector");
            let approx = index.search(attr, &v, 1, 64).unwrap();
            assert!(
                (approx[0].score - 1.0).abs() < 1e-3,
                "{attr}: graph search finds a self-match"
            );
        }
    }
    // The same through the command line.
    let hits: serde_json::Value = serde_json::from_str(&ok(tailor(
        &[
            "search",
            "--json",
            "--index",
            s(&out),
            "--attr",
            "collar",
            "--item",
            "sf-000007",
            "-k",
            "3",
            "--include-self",
            "--exact",
        ],
        &[],
    )))
    .unwrap();
    assert_eq!(hits["results"][0]["id"], "sf-000007");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints --test embed"
)]
fn a_killed_job_resumes_and_yields_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 60);
    let full = dir.path().join("full");
    ok(embed(&model, &catalog, &full, &[], &[]));

    let resumed = dir.path().join("resumed");
    let killed = embed(
        &model,
        &catalog,
        &resumed,
        &["--checkpoint-secs", "0"],
        &[("TAILOR_FAILPOINT_EMBED_ABORT_AT", "36")],
    );
    assert!(!killed.status.success(), "the failpoint kills the job");
    assert!(
        !resumed.join("manifest.json").exists(),
        "nothing published by the killed job"
    );
    let cp: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("resumed.embed-work/checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cp["next_item"], 36, "killed at 60%");

    let summary: serde_json::Value =
        serde_json::from_str(&ok(embed(&model, &catalog, &resumed, &[], &[]))).unwrap();
    assert_eq!(summary["resumed_from"], 36);
    assert_eq!(summary["embedded"], 60);

    let (a, b) = (Index::open(&full).unwrap(), Index::open(&resumed).unwrap());
    assert_eq!(a.len(), b.len());
    for row in 0..a.len() {
        assert_eq!(a.id(row), b.id(row));
    }
    for attr in a.attributes() {
        assert_eq!(
            a.vectors(attr).unwrap(),
            b.vectors(attr).unwrap(),
            "{attr}: same vectors, bit for bit"
        );
    }
}

#[test]
fn bad_images_are_rejected_with_a_report_and_odd_modes_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 20);
    // A manifest over the synthetic images plus the odd and broken fixtures.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    let mut csv = String::from("id,image,colour\n");
    for i in 0..20 {
        csv += &format!(
            "good-{i},{}/SynthFashion/images/{i:06}.png,red\n",
            s(&catalog)
        );
    }
    let odd = [
        "grey.png",
        "grey16.png",
        "rgba.png",
        "palette.png",
        "cmyk.jpg",
        "exif-rotate90.jpg",
    ];
    let broken = [
        "empty.jpg",
        "not-an-image.png",
        "truncated.png",
        "missing.png",
    ];
    for name in odd.iter().chain(&broken) {
        csv += &format!("{name},{},blue\n", s(&fixtures.join(name)));
    }
    let manifest = dir.path().join("mixed.csv");
    std::fs::write(&manifest, csv).unwrap();

    let out = dir.path().join("index");
    let refused = embed(&model, &manifest, &out, &[], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("4 of 30 items rejected") && err.contains("--max-reject-rate"),
        "{err}"
    );

    let summary: serde_json::Value = serde_json::from_str(&ok(embed(
        &model,
        &manifest,
        &out,
        &["--max-reject-rate", "0.2"],
        &[],
    )))
    .unwrap();
    assert_eq!(
        (summary["embedded"].as_u64(), summary["rejected"].as_u64()),
        (Some(26), Some(4))
    );
    let report = std::fs::read_to_string(summary["rejects_report"].as_str().unwrap()).unwrap();
    let rejects: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reason = |item: &str| {
        rejects.iter().find(|r| r["item"] == item).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rejects.len(), 4);
    assert!(reason("empty.jpg").contains("empty file"));
    assert!(reason("not-an-image.png").contains("not an image"));
    assert!(reason("truncated.png").contains("truncated PNG file"));
    assert!(reason("missing.png").contains("file not found"));
    let index = Index::open(&out).unwrap();
    for name in odd {
        assert!(index.row(name).is_some(), "{name} embedded");
    }
}

#[test]
fn shards_publish_a_set_that_merges_into_the_single_index() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 48);
    let single = dir.path().join("single");
    ok(embed(&model, &catalog, &single, &[], &[]));
    let set = dir.path().join("set");
    let mut total = 0;
    // Shards land in any order.
    for k in [2, 0, 1] {
        let spec = format!("{k}/3");
        let summary: serde_json::Value =
            serde_json::from_str(&ok(embed(&model, &catalog, &set, &["--shard", &spec], &[])))
                .unwrap();
        let n = summary["embedded"].as_u64().unwrap();
        assert!(n > 0 && n < 48, "shard {k} holds a part: {n}");
        assert!(summary["segment"]
            .as_str()
            .unwrap()
            .ends_with(&format!("segment-0000{k}")));
        total += n;
    }
    assert_eq!(total, 48, "the shards partition the catalog");
    let merged = dir.path().join("merged");
    ok(tailor(
        &["index", "merge", "-q", s(&set), "--out", s(&merged)],
        &[],
    ));

    let (a, b) = (Index::open(&single).unwrap(), Index::open(&merged).unwrap());
    assert_eq!(a.len(), b.len());
    for attr in a.attributes() {
        for row in 0..a.len() {
            // Equal up to rounding: the merge's build normalises the (already
            // normalised) rows once more.
            let other = b.row(a.id(row)).unwrap();
            let (x, y) = (a.vector(attr, row).unwrap(), b.vector(attr, other).unwrap());
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "{attr} row {row}: max |diff| {worst}");
        }
        for row in (0..a.len()).step_by(5) {
            let q = a.vector(attr, row).unwrap().to_vec();
            let ids = |ix: &Index| {
                ix.search_exact(attr, &q, 5)
                    .unwrap()
                    .into_iter()
                    .map(|h| h.id)
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "{attr}: same top-5");
        }
    }
    // Merging a segment with itself is refused: its ids would be duplicated.
    let seg = set.join("segment-00000");
    let err = index::merge(
        &dir.path().join("dup"),
        &[seg.clone(), seg],
        &BuildParams::default(),
        ProgressMode::Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is also in segment"), "{err}");
    // A set is not a plain index to embed into, nor a plain index a set.
    let out = embed(&model, &catalog, &set, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a segment set"));
    let out = embed(&model, &catalog, &single, &["--shard", "0/2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds a single index"));
    let out = embed(&model, &catalog, &set, &["--shard", "0/4"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the set has 3 segments"));
}

/// Rows of every attribute of `ix` by item id, as bits.
fn rows_by_id(ix: &Index) -> std::collections::BTreeMap<(String, String), Vec<u32>> {
    let mut out = std::collections::BTreeMap::new();
    for attr in ix.attributes() {
        for row in 0..ix.len() {
            out.insert(
                (attr.clone(), ix.id(row).to_string()),
                ix.vector(attr, row)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            );
        }
    }
    out
}

fn spawn_embed(
    model: &Path,
    catalog: &Path,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailor"));
    cmd.args([
        "embed",
        "--json",
        "-q",
        "--model",
        s(model),
        "--catalog",
        s(catalog),
        "--out",
        s(out),
        "--batch",
        "4",
    ])
    .args(extra)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits until `lock` records a holder (the job has taken its lock).
fn wait_for_holder(lock: &Path, child: &mut std::process::Child) -> u32 {
    for _ in 0..6000 {
        if let Ok(text) = std::fs::read_to_string(lock) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                return v["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first job ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no job took {}", lock.display());
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints --test embed"
)]
fn a_second_job_on_the_same_output_is_refused_or_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 40);
    let reference = dir.path().join("reference");
    ok(embed(&model, &catalog, &reference, &[], &[]));
    let want = rows_by_id(&Index::open(&reference).unwrap());

    let out = dir.path().join("index");
    let lock = dir.path().join("index.embed-work/lock");
    // The first job holds after its first batch until the test releases it.
    let release = dir.path().join("release");
    let hold = [("TAILOR_FAILPOINT_EMBED_HOLD_UNTIL", s(&release))];
    let mut first = spawn_embed(&model, &catalog, &out, &[], &hold);
    let pid = wait_for_holder(&lock, &mut first);
    assert_eq!(pid, first.id());
    // The scheduler's retry while the first attempt runs: refused at once, naming it.
    let second = embed(&model, &catalog, &out, &[], &[]);
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another embed job on this output is running")
            && err.contains(&format!("pid {pid} on host "))
            && err.contains("started 20")
            && err.contains("--wait"),
        "{err}"
    );
    std::fs::write(&release, "").unwrap();
    let first = first.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&ok(first)).unwrap();
    assert_eq!(summary["embedded"], 40);
    assert_eq!(
        rows_by_id(&Index::open(&out).unwrap()),
        want,
        "the first job's index is whole"
    );

    // With --wait the second job waits for the first, then runs on its own.
    std::fs::remove_file(&release).unwrap();
    let mut first = spawn_embed(&model, &catalog, &out, &[], &hold);
    wait_for_holder(&lock, &mut first);
    let log = dir.path().join("second.err");
    let mut second = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args([
            "embed",
            "--json",
            "-q",
            "--model",
            s(&model),
            "--catalog",
            s(&catalog),
            "--out",
            s(&out),
            "--batch",
            "4",
            "--wait",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("waiting for the embed job running on this output")
    {
        assert!(
            second.try_wait().unwrap().is_none(),
            "the second job did not wait"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(&release, "").unwrap();
    ok(first.wait_with_output().unwrap());
    ok(second.wait_with_output().unwrap());
    assert_eq!(rows_by_id(&Index::open(&out).unwrap()), want);
    assert!(!dir.path().join("index.embed-work").exists());
}

/// A CSV catalog over the synthetic images, rows in the given order.
fn csv_catalog(path: &Path, catalog: &Path, order: &[usize]) {
    let mut csv = String::from("id,image,colour\n");
    for &i in order {
        csv += &format!(
            "item-{i},{}/SynthFashion/images/{i:06}.png,red\n",
            s(catalog)
        );
    }
    std::fs::write(path, csv).unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints --test embed"
)]
fn a_job_killed_then_restarted_on_an_edited_catalog_starts_over_and_is_correct() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 40);
    let manifest = dir.path().join("items.csv");
    let out = dir.path().join("index");
    let kill = [("TAILOR_FAILPOINT_EMBED_ABORT_AT", "20")];
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        ok(embed(&model, &manifest, &p, &[], &[]));
        rows_by_id(&Index::open(&p).unwrap())
    };

    // 1. Killed half-way; the catalog's rows are then reordered.
    csv_catalog(&manifest, &catalog, &(0..40).collect::<Vec<_>>());
    let killed = embed(&model, &manifest, &out, &["--checkpoint-secs", "0"], &kill);
    assert!(!killed.status.success());
    let mut order: Vec<usize> = (0..40).collect();
    order.reverse();
    csv_catalog(&manifest, &catalog, &order);
    let restarted = embed(&model, &manifest, &out, &[], &[]);
    let err = String::from_utf8_lossy(&restarted.stderr).to_string();
    let summary: serde_json::Value = serde_json::from_str(&ok(restarted)).unwrap();
    assert!(
        err.contains("stale lock") && err.contains("no longer running"),
        "the dead job's lock is taken over, saying so: {err}"
    );
    assert!(
        err.contains("starting over") && err.contains("manifest or item list changed"),
        "{err}"
    );
    assert_eq!(summary["resumed_from"], 0);
    assert_eq!(summary["embedded"], 40);
    assert_eq!(summary["notices"].as_array().unwrap().len(), 2);
    assert_eq!(rows_by_id(&Index::open(&out).unwrap()), fresh("fresh1"));

    // 2. Killed half-way; an already staged image is then replaced in place.
    let killed = embed(&model, &manifest, &out, &["--checkpoint-secs", "0"], &kill);
    assert!(!killed.status.success());
    let images = catalog.join("SynthFashion/images");
    // Item 39 is staged first (reversed order); give it item 0's picture.
    std::fs::copy(images.join("000000.png"), images.join("000039.png")).unwrap();
    let restarted = embed(&model, &manifest, &out, &[], &[]);
    let err = String::from_utf8_lossy(&restarted.stderr).to_string();
    let summary: serde_json::Value = serde_json::from_str(&ok(restarted)).unwrap();
    assert!(
        err.contains("starting over") && err.contains("an image of the 20 items"),
        "{err}"
    );
    assert_eq!(summary["resumed_from"], 0);
    let got = rows_by_id(&Index::open(&out).unwrap());
    assert_eq!(got, fresh("fresh2"));
    assert_eq!(
        got[&("colour".to_string(), "item-39".to_string())],
        got[&("colour".to_string(), "item-0".to_string())],
        "the replaced image's new vector, not the stale one"
    );

    // 3. Killed, nothing edited: it resumes.
    let killed = embed(&model, &manifest, &out, &["--checkpoint-secs", "0"], &kill);
    assert!(!killed.status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&ok(embed(&model, &manifest, &out, &[], &[]))).unwrap();
    assert_eq!(summary["resumed_from"], 20);
    assert_eq!(rows_by_id(&Index::open(&out).unwrap()), fresh("fresh3"));
}

#[test]
fn the_rejects_report_is_replaced_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 20);
    let manifest = dir.path().join("items.csv");
    csv_catalog(&manifest, &catalog, &(0..20).collect::<Vec<_>>());
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text += "broken,/nonexistent/broken.png,red\n";
    std::fs::write(&manifest, &text).unwrap();
    let out = dir.path().join("index");
    let report = dir.path().join("index.rejects.jsonl");
    ok(embed(
        &model,
        &manifest,
        &out,
        &["--max-reject-rate", "0.5"],
        &[],
    ));
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("\"broken\""));

    // Another broken item instead: the report names only this run's rejects.
    std::fs::write(&manifest, text.replace("broken,", "gone,")).unwrap();
    ok(embed(
        &model,
        &manifest,
        &out,
        &["--max-reject-rate", "0.5"],
        &[],
    ));
    let t = std::fs::read_to_string(&report).unwrap();
    assert!(t.contains("\"gone\"") && !t.contains("\"broken\""), "{t}");

    // A clean run leaves no report beside the index.
    csv_catalog(&manifest, &catalog, &(0..20).collect::<Vec<_>>());
    let summary: serde_json::Value =
        serde_json::from_str(&ok(embed(&model, &manifest, &out, &[], &[]))).unwrap();
    assert!(summary["rejects_report"].is_null());
    assert!(!report.exists(), "the previous run's report is removed");
}

/// The README's array recipe (tools/embed-array.sh) as N local processes, the way CI runs
/// it: four tasks at once, one killed mid-way and run again while a duplicate of another
/// is retried; the set equals the single-machine index bit for bit.
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints --test embed"
)]
fn the_array_recipe_with_local_processes_gives_the_single_machine_index() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 64);
    let single = dir.path().join("single");
    ok(embed(&model, &catalog, &single, &[], &[]));
    let set = dir.path().join("set");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/embed-array.sh");
    let task = |k: usize, env: &[(&str, &str)]| {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .env("SHARD", k.to_string())
            .env("SHARDS", "4")
            .env("TAILOR", env!("CARGO_BIN_EXE_tailor"))
            .env("MODEL", &model)
            .env("CATALOG", &catalog)
            .env("OUT", &set)
            .env("BATCH", "4")
            .env("EXTRA", "-q --checkpoint-secs 0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let slow = ("TAILOR_FAILPOINT_EMBED_BATCH_SLEEP_MS", "50");
    let mut tasks: Vec<_> = (0..4)
        .map(|k| {
            if k == 2 {
                task(k, &[slow, ("TAILOR_FAILPOINT_EMBED_ABORT_AT", "8")])
            } else {
                task(k, &[slow])
            }
        })
        .collect();
    // Task 1 retried while its first attempt still runs: the retry waits for it.
    let retry = task(1, &[]);
    let killed = tasks.remove(2).wait_with_output().unwrap();
    assert!(!killed.status.success(), "task 2 was killed mid-way");
    assert!(!set.join("segment-00002/manifest.json").exists());
    // The set is searchable meanwhile, with segment 2 missing.
    for t in tasks.into_iter().chain([retry]) {
        ok(t.wait_with_output().unwrap());
    }
    let info: serde_json::Value =
        serde_json::from_str(&ok(tailor(&["index", "info", "--json", s(&set)], &[]))).unwrap();
    assert_eq!(info["missing"], serde_json::json!([2]));
    // Task 2 requeued: resumes from its checkpoint.
    let again = ok(task(2, &[]).wait_with_output().unwrap());
    assert!(again.contains("task 2 of 4"), "{again}");

    let (a, b) = (Index::open(&single).unwrap(), IndexSet::open(&set).unwrap());
    assert!(b.missing().is_empty());
    assert_eq!(b.len(), a.len());
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
        for row in (0..a.len()).step_by(7) {
            let q = a.vector(attr, row).unwrap().to_vec();
            let top = |h: Vec<index::Hit>| {
                h.into_iter()
                    .map(|h| (h.id, h.score.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                top(b.search_exact(attr, &q, 10).unwrap()),
                top(a.search_exact(attr, &q, 10).unwrap()),
                "{attr}: the same exact top-10"
            );
        }
    }
}

/// `--precision`: bf16 vectors close to f32 ones where the CPU has AVX512-BF16; a clear
/// refusal (exit 2, no index) where it has none, forced by hiding the feature; `auto`
/// falls back to f32 there; `search --image --precision` the same.
#[test]
fn precision_bf16_embeds_close_to_f32_or_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 12);
    let f32_dir = dir.path().join("f32");
    let summary: serde_json::Value = serde_json::from_str(&ok(embed(
        &model,
        &catalog,
        &f32_dir,
        &["--precision", "f32"],
        &[],
    )))
    .unwrap();
    assert_eq!(summary["precision"], "f32");

    // No AVX512-BF16 (forced): bf16 refused by name, auto falls back to f32.
    let hidden = [(tailor::model::bf16::DISABLE_ENV, "1")];
    let refused_dir = dir.path().join("refused");
    let out = embed(
        &model,
        &catalog,
        &refused_dir,
        &["--precision", "bf16"],
        &hidden,
    );
    assert_eq!(out.status.code(), Some(2));
    let err =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AVX512-BF16"), "{err}");
    assert!(!refused_dir.exists());
    let auto: serde_json::Value = serde_json::from_str(&ok(embed(
        &model,
        &catalog,
        &dir.path().join("auto"),
        &["--precision", "auto"],
        &hidden,
    )))
    .unwrap();
    assert_eq!(auto["precision"], "f32");
    let out = embed(
        &model,
        &catalog,
        &refused_dir,
        &["--precision", "half"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));

    if tailor::model::bf16::Kernel::detect().is_none() {
        return;
    }
    let bf_dir = dir.path().join("bf16");
    let summary: serde_json::Value = serde_json::from_str(&ok(embed(
        &model,
        &catalog,
        &bf_dir,
        &["--precision", "bf16"],
        &[],
    )))
    .unwrap();
    assert_eq!(summary["precision"], "bf16");
    let (a, b) = (
        Index::open(&f32_dir).unwrap(),
        Index::open(&bf_dir).unwrap(),
    );
    let mut worst = 1f32;
    for attr in a.attributes() {
        for row in 0..a.len() {
            let (x, y) = (a.vector(attr, row).unwrap(), b.vector(attr, row).unwrap());
            let cos: f32 = x.iter().zip(y.iter()).map(|(p, q)| p * q).sum();
            worst = worst.min(cos);
        }
    }
    assert!(worst > 0.99, "bf16 vs f32 cosine {worst}");
    assert!(worst < 1.0, "bf16 changed nothing: cosine {worst}");
    let image = catalog.join("SynthFashion/images/000002.png");
    let hits: serde_json::Value = serde_json::from_str(&ok(tailor(
        &[
            "search",
            "--json",
            "--index",
            s(&f32_dir),
            "--attr",
            "collar",
            "--image",
            s(&image),
            "--precision",
            "bf16",
            "-k",
            "1",
            "--exact",
        ],
        &[],
    )))
    .unwrap();
    assert_eq!(hits["results"][0]["id"], "sf-000002");
}
