//! The command line explains itself (issue 13): numeric arguments refused where clap
//! parses them with the accepted range, errors printed once and without Rust debug text,
//! `--json` errors as one JSON object on stdout, and the README's exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn tailor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn refused(args: &[&str], expected: &str) {
    let o = tailor(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(expected), "{args:?}: {err}");
}

#[test]
fn numbers_are_checked_where_they_are_parsed() {
    let embed = ["embed", "--model", "m", "--catalog", "c", "--out", "o"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        embed.iter().copied().chain(extra.iter().copied()).collect()
    };
    refused(
        &with(&["--max-reject-rate", "nan"]),
        "expected a finite number, got nan (a fraction from 0 to 1)",
    );
    refused(
        &with(&["--max-reject-rate", "2"]),
        "expected a fraction from 0 to 1, got 2",
    );
    refused(
        &with(&["--batch", "0"]),
        "expected a whole number from 1 to",
    );
    // A negative number reaches the parser instead of being taken for a flag.
    refused(&with(&["--batch", "-1"]), "got -1");
    refused(
        &with(&["--checkpoint-secs", "-1"]),
        "expected a number from 0, got -1",
    );
    let map = ["eval", "map", "--index", "i", "--catalog", "c"];
    let with_map = |extra: &[&'static str]| -> Vec<&str> {
        map.iter().copied().chain(extra.iter().copied()).collect()
    };
    refused(
        &with_map(&["--k", "0"]),
        "expected a whole number from 1 to",
    );
    refused(&with_map(&["--k", "1,0"]), "got 0");
    refused(
        &with_map(&["--ann-k", "0"]),
        "expected a whole number from 1 to",
    );
    refused(
        &["search", "--index", "i", "--attr", "a", "-k", "-3"],
        "got -3",
    );
    refused(
        &["train", "--catalog", "c", "--out", "o", "--margin", "-0.2"],
        "expected a number above 0, got -0.2",
    );
    refused(
        &["train", "--catalog", "c", "--out", "o", "--decay", "1.5"],
        "expected a number above 0 and at most 1, got 1.5",
    );
}

#[test]
fn each_cause_is_printed_once_and_json_errors_are_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let o = tailor(&["index", "info", missing.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(!err.contains("Some(") && !err.contains("String("), "{err}");

    let o = tailor(&["index", "info", missing.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let e = &v["error"];
    assert_eq!(e["kind"], "io", "{v}");
    assert!(e["message"].as_str().unwrap().contains("nope"), "{v}");
    assert!(e["path"].as_str().unwrap().contains("nope"), "{v}");

    // A usage error clap reports is JSON too, with clap's exit code 2.
    let o = tailor(&["embed", "--json", "--max-reject-rate", "2"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
    assert!(v["error"]["path"].is_null());

    // A parse error names file and line.
    let m = dir.path().join("m.csv");
    std::fs::write(&m, "id,image\n\"a\tb\",x.png\n").unwrap();
    let o = tailor(&["catalog", "check", m.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "parse");
    assert_eq!(v["error"]["line"], 2);
}

#[test]
fn help_explains_every_argument_and_index_add_shows_an_example() {
    let o = tailor(&["index", "add", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    assert!(
        help.contains("Example:") && help.contains("tailor index add idx/"),
        "{help}"
    );
    assert!(
        help.contains("must cover every attribute of the index"),
        "{help}"
    );
    assert!(help.contains("Index directory to add to"), "{help}");
}

#[test]
fn search_that_finds_nothing_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let vecs = dir.path().join("colour.npy");
    tailor::npy::write_f32_matrix(&vecs, 3, 2, &[1.0, 0.0, 0.0, 1.0, 0.7, 0.7]).unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "a\nb\nc\n").unwrap();
    let idx = dir.path().join("idx");
    let spec = format!("colour={}", vecs.display());
    let o = tailor(&[
        "index",
        "build",
        "-q",
        "--vectors",
        &spec,
        "--ids",
        ids.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Re-ranking an empty list: nothing to find.
    let rerank = dir.path().join("none.txt");
    std::fs::write(&rerank, "").unwrap();
    let o = tailor(&[
        "search",
        "--json",
        "--index",
        idx.to_str().unwrap(),
        "--attr",
        "colour",
        "--item",
        "a",
        "--rerank",
        rerank.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["results"].as_array().map(Vec::len), Some(0), "{v}");
    refused(
        &[
            "search",
            "--index",
            idx.to_str().unwrap(),
            "--attr",
            "colour=1e39",
            "--item",
            "a",
        ],
        "the weight is too large",
    );
}

#[cfg(unix)]
#[test]
fn search_image_refuses_a_fifo_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    let opts = tailor::catalog::synth::SynthOptions {
        items: 10,
        size: 32,
        seed: 3,
        jpeg: false,
    };
    tailor::catalog::synth::generate(&catalog, &opts, tailor::progress::ProgressMode::Quiet)
        .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let model = dir.path().join("model.safetensors");
    let idx = dir.path().join("idx");
    for args in [
        vec![
            "model",
            "init",
            "--arch",
            "asen",
            "--backbone",
            "tiny",
            "--input-size",
            "32",
            "--catalog",
            &s(&catalog),
            "--out",
            &s(&model),
        ],
        vec![
            "embed",
            "-q",
            "--model",
            &s(&model),
            "--catalog",
            &s(&catalog),
            "--out",
            &s(&idx),
        ],
    ] {
        let o = tailor(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let fifo = dir.path().join("query.jpg");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // No writer ever opens the FIFO: a blocking open would hang this test.
    let o = tailor(&[
        "search",
        "--json",
        "--index",
        &s(&idx),
        "--attr",
        "colour",
        "--image",
        &s(&fifo),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "image", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a regular file (a FIFO)"),
        "{v}"
    );
}

/// `embed` over a catalog holding a FIFO, `/dev/zero`, a 3 GB (sparse) file with a PNG
/// header and a truncated JPEG: each is rejected with its reason, nothing hangs, and the
/// WebP/GIF/TIFF images are embedded.
#[cfg(unix)]
#[test]
fn embed_rejects_unusable_files_without_hanging_or_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    let opts = tailor::catalog::synth::SynthOptions {
        items: 10,
        size: 32,
        seed: 3,
        jpeg: false,
    };
    tailor::catalog::synth::generate(&catalog, &opts, tailor::progress::ProgressMode::Quiet)
        .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    let fifo = dir.path().join("fifo.jpg");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, std::fs::read(fixtures.join("grey.png")).unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let mut csv = String::from("id,image,colour\n");
    for i in 0..10 {
        csv += &format!(
            "good-{i},{}/SynthFashion/images/{i:06}.png,red\n",
            s(&catalog)
        );
    }
    for (id, p) in [
        ("webp", fixtures.join("webp-alpha.webp")),
        ("gif", fixtures.join("gif-animated.gif")),
        ("tiff", fixtures.join("tiff-cmyk.tif")),
        ("fifo", fifo.clone()),
        ("zero", "/dev/zero".into()),
        ("huge", huge.clone()),
        ("cut", fixtures.join("truncated.jpg")),
    ] {
        csv += &format!("{id},{},blue\n", s(&p));
    }
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, csv).unwrap();
    let model = dir.path().join("model.safetensors");
    let idx = dir.path().join("idx");
    let init = tailor(&[
        "model",
        "init",
        "--arch",
        "asen",
        "--backbone",
        "tiny",
        "--input-size",
        "32",
        "--catalog",
        &s(&manifest),
        "--out",
        &s(&model),
    ]);
    assert!(init.status.success(), "{}", stderr(&init));
    let o = tailor(&[
        "embed",
        "-q",
        "--json",
        "--model",
        &s(&model),
        "--catalog",
        &s(&manifest),
        "--out",
        &s(&idx),
        "--max-reject-rate",
        "0.3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["embedded"], 13, "{summary}");
    let report = std::fs::read_to_string(summary["rejects_report"].as_str().unwrap()).unwrap();
    let reasons: std::collections::BTreeMap<String, String> = report
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["item"].as_str().unwrap().to_string(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(
        reasons["fifo"],
        "not a regular file (a FIFO); images must be plain files"
    );
    assert_eq!(
        reasons["zero"],
        "not a regular file (a character device); images must be plain files"
    );
    assert_eq!(
        reasons["huge"],
        "file is 3221225472 bytes, over the limit of 67108864 bytes per image (the maximum image size setting)"
    );
    assert!(
        reasons["cut"].starts_with("truncated JPEG file"),
        "{reasons:?}"
    );
}

/// `--max-image-bytes` sets the cap for every loader; `catalog check` reports a file over
/// it as `embed` would, and exits 1 (a check that found problems).
#[test]
fn max_image_bytes_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    let m = dir.path().join("m.csv");
    std::fs::write(
        &m,
        format!(
            "id,image\nsmall,{}\nbig,{}\n",
            fixtures.join("grey.png").display(),
            fixtures.join("palette.png").display()
        ),
    )
    .unwrap();
    let o = tailor(&[
        "catalog",
        "check",
        m.to_str().unwrap(),
        "--json",
        "--max-image-bytes",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad = v["unreadable_images"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["item"], "big");
    assert!(
        bad[0]["reason"]
            .as_str()
            .unwrap()
            .contains("over the limit of 200 bytes per image"),
        "{v}"
    );
    let o = tailor(&[
        "catalog",
        "check",
        m.to_str().unwrap(),
        "--max-image-bytes",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
