//! Fuzzes the index file readers: one file of a small valid index (or its manifest) is
//! replaced by the input, the manifest's recorded length is updated so the per-file
//! validation is reached, then the index is opened, searched, read and verified.
//! Any panic, abort or out-of-bounds access is a bug; errors are expected.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tailor::catalog::{Attribute, Labels, Schema};
use tailor::index::{self, AttributeInput, BuildInput, BuildParams, CompactKind, Index, ItemLabels};
use tailor::progress::ProgressMode;

struct Template {
    dir: PathBuf,
    files: Vec<String>,
    manifest: serde_json::Value,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tailor-fuzz-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = 40;
        let a: Vec<f32> = (0..n * 8).map(|i| ((i * 37 % 23) as f32) - 11.0 + 0.5).collect();
        let b: Vec<f32> = (0..n * 4).map(|i| ((i * 13 % 17) as f32) - 8.0 + 0.25).collect();
        let schema = Schema {
            attributes: vec![Attribute { name: "category".into(), values: vec!["a".into(), "b".into()] }],
        };
        let mut labels = Labels::new(n, 1);
        for i in 0..n {
            labels.set(i, 0, Some((i % 2) as u16));
        }
        let input = BuildInput {
            ids: (0..n).map(|i| format!("id{i}")).collect(),
            attributes: vec![
                AttributeInput { name: "x".into(), dim: 8, rows: &a },
                AttributeInput { name: "y".into(), dim: 4, rows: &b },
            ],
            labels: Some(ItemLabels { schema, labels }),
            model: None,
        };
        let params = BuildParams { m: 4, ef_construction: 16, compact: CompactKind::Int8, seed: 0 };
        index::build(&dir, &input, &params, ProgressMode::Quiet).expect("template build");
        index::remove(&dir, &["id3".to_string()]).expect("template remove");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let files = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        // `TAILOR_FUZZ_SEEDS=DIR`: write one seed per file (selector byte + the valid
        // file) so the fuzzer starts from well-formed inputs.
        if let Ok(seeds) = std::env::var("TAILOR_FUZZ_SEEDS") {
            let seeds = PathBuf::from(seeds);
            std::fs::create_dir_all(&seeds).unwrap();
            let names: Vec<String> = manifest["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .chain(std::iter::once("manifest.json".to_string()))
                .collect();
            for (i, name) in names.iter().enumerate() {
                let mut seed = vec![i as u8];
                seed.extend(std::fs::read(dir.join(name)).unwrap());
                std::fs::write(seeds.join(format!("seed-{i}")), seed).unwrap();
            }
        }
        Template { dir, files, manifest }
    })
}

fn work_dir() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let t = template();
        let w = std::env::temp_dir().join(format!("tailor-fuzz-work-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&w);
        std::fs::create_dir_all(&w).unwrap();
        for f in &t.files {
            std::fs::copy(t.dir.join(f), w.join(f)).unwrap();
        }
        w
    })
}

fn exercise(dir: &Path) {
    let Ok(ix) = Index::open(dir) else { return };
    for attr in ix.attributes().to_vec() {
        let Ok(dim) = ix.dim(&attr) else { continue };
        let q: Vec<f32> = (0..dim).map(|i| (i as f32 + 1.0).sin()).collect();
        let _ = ix.search(&attr, &q, 5, 20);
        let _ = ix.search_exact(&attr, &q, 5);
        let _ = ix.vectors(&attr);
    }
    for r in 0..ix.len().min(64) {
        let id = ix.id(r).to_string();
        let _ = ix.row(&id);
        let _ = ix.label(r, 0);
        let _ = ix.is_removed(r);
    }
    let _ = ix.verify();
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let w = work_dir();
    let Some((&sel, body)) = data.split_first() else { return };
    let choice = sel as usize % (t.files.len() + 1);
    // Restore the template, then replace one file.
    for f in &t.files {
        let _ = std::fs::copy(t.dir.join(f), w.join(f));
    }
    if choice == t.files.len() {
        let _ = std::fs::write(w.join("manifest.json"), body);
    } else {
        let name = &t.files[choice];
        let _ = std::fs::write(w.join(name), body);
        let mut m = t.manifest.clone();
        for f in m["files"].as_array_mut().unwrap() {
            if f["name"] == name.as_str() {
                f["len"] = (body.len() as u64).into();
            }
        }
        let _ = std::fs::write(w.join("manifest.json"), serde_json::to_vec(&m).unwrap());
    }
    exercise(w);
    let _ = index::verify_dir(w);
});
