//! `tailor model init|import|info` end to end through the binary.

use std::path::Path;
use std::process::Command;

fn tailor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .output()
        .expect("run tailor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/parity")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn init_then_info_json() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    let cat_s = cat.to_str().unwrap();
    let (code, _, err) = tailor(&[
        "-q", "synth", "--out", cat_s, "--items", "12", "--size", "48",
    ]);
    assert_eq!(code, 0, "{err}");
    let m = dir.path().join("m.safetensors");
    let m_s = m.to_str().unwrap();
    let (code, out, err) = tailor(&[
        "model",
        "init",
        "--arch",
        "csn",
        "--backbone",
        "tiny",
        "--catalog",
        cat_s,
        "--out",
        m_s,
        "--seed",
        "9",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("architecture  csn"), "{out}");
    let (code, out, err) = tailor(&["--json", "model", "info", m_s]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["arch"], "csn");
    assert_eq!(v["backbone"]["kind"], "tiny");
    assert_eq!(v["input_size"], 64);
    assert!(v["parameters"].as_u64().unwrap() > 1000);
    assert!(!v["attributes"].as_array().unwrap().is_empty());
    assert_eq!(v["identity"].as_str().unwrap().len(), 16);
}

#[test]
fn import_authors_checkpoint_and_report_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.safetensors");
    let m_s = m.to_str().unwrap();
    let weights = fixture("asen_authors.pth.tar");
    let (code, out, err) = tailor(&[
        "model",
        "import",
        "--arch",
        "asen",
        "--backbone",
        "tiny",
        "--weights",
        &weights,
        "--attributes",
        "a,b,c",
        "--input-size",
        "64",
        "--out",
        m_s,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attributes    3"), "{out}");
    // Wrong attribute count: named tensors with both shapes, exit 2.
    let (code, _, err) = tailor(&[
        "model",
        "import",
        "--arch",
        "asen",
        "--backbone",
        "tiny",
        "--weights",
        &weights,
        "--attributes",
        "a,b",
        "--out",
        m_s,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tensor mask_fc1.weight has shape [16, 3], expected [16, 2]"),
        "{err}"
    );
    // A legacy (pre-zip) file cut after its magic number says so.
    let legacy = dir.path().join("legacy.pth.tar");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    let (code, _, err) = tailor(&[
        "model",
        "import",
        "--arch",
        "asen",
        "--weights",
        legacy.to_str().unwrap(),
        "--attributes",
        "a",
        "--out",
        m_s,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("legacy PyTorch checkpoint: protocol version: the file ends early"),
        "{err}"
    );
}
