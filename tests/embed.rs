//! The batch job end to end: synth -> model -> embed -> search; resume after a kill;
//! rejects; shards merged into one index.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tailor::catalog::synth;
use tailor::index::{self, BuildParams, Index};
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
    assert!(reason("truncated.png").contains("cannot decode"));
    assert!(reason("missing.png").contains("cannot read"));
    let index = Index::open(&out).unwrap();
    for name in odd {
        assert!(index.row(name).is_some(), "{name} embedded");
    }
}

#[test]
fn shards_merge_into_the_single_index() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, model) = setup(dir.path(), 48);
    let single = dir.path().join("single");
    ok(embed(&model, &catalog, &single, &[], &[]));
    let shards: Vec<PathBuf> = (0..3)
        .map(|k| dir.path().join(format!("shard{k}")))
        .collect();
    let mut total = 0;
    for (k, shard) in shards.iter().enumerate() {
        let spec = format!("{k}/3");
        let summary: serde_json::Value = serde_json::from_str(&ok(embed(
            &model,
            &catalog,
            shard,
            &["--shard", &spec],
            &[],
        )))
        .unwrap();
        let n = summary["embedded"].as_u64().unwrap();
        assert!(n > 0 && n < 48, "shard {k} holds a part: {n}");
        total += n;
    }
    assert_eq!(total, 48, "the shards partition the catalog");
    let merged = dir.path().join("merged");
    index::merge(
        &merged,
        &shards,
        &BuildParams::default(),
        ProgressMode::Quiet,
    )
    .unwrap();

    let (a, b) = (Index::open(&single).unwrap(), Index::open(&merged).unwrap());
    assert_eq!(a.len(), b.len());
    for attr in a.attributes() {
        for row in 0..a.len() {
            // Equal up to rounding: batches hold other images, and the merge's build
            // normalises the (already normalised) rows once more.
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
    let err = index::merge(
        &dir.path().join("dup"),
        &[shards[0].clone(), shards[0].clone()],
        &BuildParams::default(),
        ProgressMode::Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is also in segment"), "{err}");
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
