//! Helpers shared by the index writer tests (`tests/index_writers.rs`) and the failpoint
//! tests (`tests/failpoints.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use tailor::catalog::{Attribute, Labels, Schema};
use tailor::index::{self, AttributeInput, BuildInput, BuildParams, CompactKind, ItemLabels};
use tailor::progress::ProgressMode;

pub const DA: usize = 16;
pub const DB: usize = 8;

/// `n` points of a Gaussian mixture (uniform approximations are enough here).
pub fn mixture(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..8 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    (0..n)
        .flat_map(|_| {
            let c = rng.gen_range(0..8);
            (0..dim)
                .map(|j| centres[c * dim + j] + rng.gen_range(-0.5..0.5))
                .collect::<Vec<f32>>()
        })
        .collect()
}

pub fn ids(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

pub fn schema() -> Schema {
    Schema {
        attributes: vec![Attribute {
            name: "category".into(),
            values: vec!["dress".into(), "shirt".into(), "skirt".into()],
        }],
    }
}

pub fn params(compact: CompactKind) -> BuildParams {
    tiered_params(compact, CompactKind::None)
}

/// [`params`] with a re-scoring tier.
pub fn tiered_params(compact: CompactKind, rescore: CompactKind) -> BuildParams {
    BuildParams {
        m: 8,
        ef_construction: 64,
        compact,
        rescore,
        seed: 0,
    }
}

/// Builds a two-attribute labelled index of `n` items (ids `{prefix}{i}`) at `path`.
pub fn build(path: &Path, n: usize, prefix: &str, seed: u64) {
    build_with(path, n, prefix, seed, CompactKind::Int8)
}

/// [`build`] with a chosen compact kind.
#[allow(dead_code)]
pub fn build_with(path: &Path, n: usize, prefix: &str, seed: u64, compact: CompactKind) {
    build_with_params(path, n, prefix, seed, &params(compact))
}

/// [`build`] with chosen parameters.
pub fn build_with_params(path: &Path, n: usize, prefix: &str, seed: u64, params: &BuildParams) {
    let a = mixture(n, DA, seed);
    let b = mixture(n, DB, seed + 1);
    let mut labels = Labels::new(n, 1);
    for i in 0..n {
        labels.set(i, 0, Some((i % 3) as u16));
    }
    let input = BuildInput {
        ids: ids(n, prefix),
        attributes: vec![
            AttributeInput {
                name: "shape".into(),
                dim: DA,
                rows: &a,
            },
            AttributeInput {
                name: "texture".into(),
                dim: DB,
                rows: &b,
            },
        ],
        labels: Some(ItemLabels {
            schema: schema(),
            labels,
        }),
        model: Some(serde_json::json!({"identity": "test"})),
    };
    index::build(path, &input, params, ProgressMode::Quiet).unwrap();
}

/// New items for `add`: `n` items with ids `{prefix}{i}` and no labels.
pub fn add(path: &Path, n: usize, prefix: &str, seed: u64) -> tailor::Result<index::BuildSummary> {
    let a = mixture(n, DA, seed);
    let b = mixture(n, DB, seed + 1);
    let input = BuildInput {
        ids: ids(n, prefix),
        attributes: vec![
            AttributeInput {
                name: "shape".into(),
                dim: DA,
                rows: &a,
            },
            AttributeInput {
                name: "texture".into(),
                dim: DB,
                rows: &b,
            },
        ],
        labels: None,
        model: None,
    };
    index::add(path, &input, ProgressMode::Quiet)
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

pub fn write_manifest(dir: &Path, m: &serde_json::Value) {
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(m).unwrap()).unwrap();
}

/// Path of the file the manifest names under `key` (`"ids"`, `"tombstones"`), or of
/// attribute 0's `"vectors"`, `"compact"`, `"graph"`.
pub fn named(dir: &Path, key: &str) -> PathBuf {
    let m = manifest(dir);
    let name = match key {
        "ids" | "labels" | "tombstones" => m[key].as_str().unwrap().to_string(),
        _ => m["attributes"][0][key].as_str().unwrap().to_string(),
    };
    dir.join(name)
}

/// Rewrites the manifest entry of `file` to its current length and crc32.
pub fn fix_checksum(dir: &Path, file: &Path) {
    let mut m = manifest(dir);
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let bytes = std::fs::read(file).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["name"] == name.as_str() {
            f["len"] = bytes.len().into();
            f["crc32"] = crc32fast::hash(&bytes).into();
        }
    }
    write_manifest(dir, &m);
}

/// XORs one byte of a file (length unchanged).
pub fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

/// Every file of a directory with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Names of the files in a directory, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

/// The path of a `Corrupted` error, or a panic describing the error.
pub fn corrupted_path(r: tailor::Result<impl std::fmt::Debug>) -> PathBuf {
    match r {
        Err(tailor::Error::Corrupted { path, .. }) => path,
        other => panic!("expected a Corrupted error, got {other:?}"),
    }
}
