//! How far bf16 inference moves embeddings from f32 (issue 15): per-embedding cosine of
//! bf16 to f32 (min and mean) on the parity fixtures' images (every fixture model) and on
//! synthetic catalog images, for a tiny model and ResNet-50 ASEN at 224 px; and recall@10
//! of bf16 query vectors searched (exactly) in an index of f32 vectors, against the f32
//! queries' own top 10. Needs a CPU with AVX512-BF16.
//!
//! Settings: TAILOR_ACC_IMAGES (synthetic images per model, default 500),
//! TAILOR_ACC_R50_IMAGES (ResNet-50's share, default TAILOR_ACC_IMAGES),
//! TAILOR_ACC_TINY_MODEL (a trained tiny model file; default an untrained tiny ASEN),
//! TAILOR_ACC_INDEX (index items for recall, default 2000), TAILOR_ACC_QUERIES (default 200).
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench bf16_accuracy

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::DynamicImage;
use tailor::catalog::synth::render_item;
use tailor::model::{self, Arch, BackboneConfig, Model, ModelConfig, Precision};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `[attr][image]` embeddings of `images` (NCHW batches) in both precisions.
fn both(model: &mut Model, batches: &[Tensor]) -> tailor::Result<[Vec<Vec<Vec<f32>>>; 2]> {
    let attrs: Vec<usize> = (0..model.config().num_attributes()).collect();
    let mut out = [Vec::new(), Vec::new()];
    for (slot, p) in [Precision::F32, Precision::Bf16].into_iter().enumerate() {
        model.set_precision(p)?;
        let mut per_attr = vec![Vec::new(); attrs.len()];
        for x in batches {
            for (a, e) in model.embed(x, &attrs)?.into_iter().enumerate() {
                per_attr[a].extend(e.to_vec2::<f32>()?);
            }
        }
        out[slot] = per_attr;
    }
    model.set_precision(Precision::F32)?;
    Ok(out)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// (min, mean, count) cosine over every (attribute, image).
fn cosines(e: &[Vec<Vec<Vec<f32>>>; 2]) -> (f32, f32, usize) {
    let mut v = Vec::new();
    for (fa, ba) in e[0].iter().zip(&e[1]) {
        for (f, b) in fa.iter().zip(ba) {
            v.push(dot(f, b) / (dot(f, f) * dot(b, b)).sqrt());
        }
    }
    let min = v.iter().copied().fold(f32::INFINITY, f32::min);
    (min, v.iter().sum::<f32>() / v.len() as f32, v.len())
}

fn synthetic(cfg: &ModelConfig, seed: u64, from: usize, n: usize) -> tailor::Result<Vec<Tensor>> {
    let s = cfg.input_size as usize;
    let mut batches = Vec::new();
    for start in (from..from + n).step_by(32) {
        let mut px = Vec::new();
        let end = (start + 32).min(from + n);
        for i in start..end {
            let (img, _) = render_item(seed, i, cfg.input_size.max(64));
            px.extend(model::preprocess(&DynamicImage::ImageRgb8(img), cfg)?);
        }
        batches.push(Tensor::from_vec(px, (end - start, 3, s, s), &Device::Cpu)?);
    }
    Ok(batches)
}

fn report(what: &str, e: &[Vec<Vec<Vec<f32>>>; 2]) {
    let (min, mean, n) = cosines(e);
    println!("{what:<44} cosine bf16 vs f32: min {min:.5}  mean {mean:.6}  ({n} embeddings)");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/parity")
        .join(name)
}

fn main() -> tailor::Result<()> {
    let kernel = model::bf16::Kernel::detect();
    println!(
        "bf16 accuracy; bf16 kernel {}; {} threads; load average {}",
        kernel.map_or("none", |k| k.name()),
        candle_core::utils::get_num_threads(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if kernel.is_none() {
        println!("this CPU has no AVX512-BF16: nothing to measure");
        return Ok(());
    }
    let n_images = env_usize("TAILOR_ACC_IMAGES", 500);
    let dev = Device::Cpu;

    // Parity fixtures: every tiny model on every input image set.
    let inputs = candle_core::safetensors::load(fixture("inputs.safetensors"), &dev)?;
    let parity_batches: Vec<Tensor> = inputs.values().cloned().collect();
    for name in ["asen-no-asa", "asen-no-aca", "asen-v2", "ag-man", "triplet"] {
        let mut m = Model::load(&fixture(&format!("{name}.safetensors")), &dev)?;
        report(
            &format!("parity images, tiny {name}"),
            &both(&mut m, &parity_batches)?,
        );
    }

    // Tiny ASEN on synthetic images.
    let mut tiny = match std::env::var("TAILOR_ACC_TINY_MODEL") {
        Ok(p) => Model::load(Path::new(&p), &dev)?,
        Err(_) => {
            let names = ["a", "b", "c"].map(String::from).to_vec();
            let mut cfg = ModelConfig::new(Arch::Asen, BackboneConfig::tiny(), names, vec![]);
            cfg.input_size = 64;
            Model::init(cfg, 0, &dev)?
        }
    };
    let cfg = tiny.config().clone();
    let e = both(&mut tiny, &synthetic(&cfg, 7, 0, n_images)?)?;
    report(&format!("{n_images} synthetic images, tiny asen"), &e);

    // Recall@10 of bf16 queries in an f32 index (exact inner product).
    let (n_index, n_query) = (
        env_usize("TAILOR_ACC_INDEX", 2000),
        env_usize("TAILOR_ACC_QUERIES", 200),
    );
    let index = both(&mut tiny, &synthetic(&cfg, 9, 0, n_index)?)?;
    let queries = both(&mut tiny, &synthetic(&cfg, 9, n_index, n_query)?)?;
    let top = |q: &[f32], rows: &[Vec<f32>]| -> Vec<usize> {
        let mut s: Vec<(f32, usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (dot(q, r), i))
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        s.into_iter().take(10).map(|(_, i)| i).collect()
    };
    let mut hits = 0usize;
    let mut total = 0usize;
    for a in 0..cfg.num_attributes() {
        for (qf, qb) in queries[0][a].iter().zip(&queries[1][a]) {
            let want = top(qf, &index[0][a]);
            let got = top(qb, &index[0][a]);
            hits += got.iter().filter(|i| want.contains(i)).count();
            total += 10;
        }
    }
    println!(
        "recall@10 of bf16 queries in an f32 index (tiny asen, {n_index} items, {n_query} queries x {} attributes): {:.4}",
        cfg.num_attributes(),
        hits as f64 / total as f64
    );

    // ResNet-50 ASEN at 224 px (random weights), parity images and synthetic images.
    let fashionai = [
        "skirt_length",
        "sleeve_length",
        "coat_length",
        "pant_length",
        "collar_design",
        "lapel_design",
        "neckline_design",
        "neck_design",
    ];
    let cfg = ModelConfig::new(
        Arch::Asen,
        BackboneConfig::Resnet50,
        fashionai.iter().map(|s| s.to_string()).collect(),
        vec![],
    );
    let mut r50 = Model::init(cfg.clone(), 0, &dev)?;
    report(
        "parity images, resnet50 asen (random weights)",
        &both(&mut r50, &parity_batches)?,
    );
    let n_r50 = env_usize("TAILOR_ACC_R50_IMAGES", n_images);
    let e = both(&mut r50, &synthetic(&cfg, 7, 0, n_r50)?)?;
    report(
        &format!("{n_r50} synthetic images, resnet50 asen 224 px"),
        &e,
    );
    Ok(())
}
