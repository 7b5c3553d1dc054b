//! Device tests: every model path on a CUDA GPU against the CPU. Built only with
//! `--features cuda` and `#[ignore]`d (they need a GPU); `tools/device-check.sh` runs them
//! on a device machine from a binary built elsewhere:
//!
//!     cargo test --release --features cuda --test device -- --ignored --test-threads=1
//!
//! Settings: TAILOR_DEVICE (default `cuda`), TAILOR_ROOT (the repository holding
//! `fixtures/`; default: where it was built), TAILOR_BIN (the `tailor` binary; default:
//! the one built beside this test). The last test is a measurement, not a check:
//! `gpu_throughput` prints JSON lines (TAILOR_DEVICE_BATCHES, default "64,256";
//! TAILOR_DEVICE_ITERS, default 10; TAILOR_TRAIN_STEPS, default 10). TAILOR_DEVICE=cpu
//! runs the checks on the CPU (slow), which checks the tests themselves.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use tailor::catalog;
use tailor::index::Index;
use tailor::model::{Arch, BackboneConfig, Model, ModelConfig};
use tailor::progress::ProgressMode;
use tailor::train::data::ImageStore;
use tailor::train::sampling::TripletSampler;
use tailor::train::{self, model_config, TrainOptions, Trainer};

const TOL: f32 = 1e-3;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn root() -> PathBuf {
    PathBuf::from(env_or("TAILOR_ROOT", env!("CARGO_MANIFEST_DIR")))
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/parity").join(name)
}

fn gpu() -> Device {
    let spec = env_or("TAILOR_DEVICE", "cuda");
    let dev = tailor::model::device(&spec).unwrap_or_else(|e| panic!("{e}"));
    // `cpu` runs the same checks on the CPU, to check the tests themselves.
    assert!(
        dev.is_cuda() || spec == "cpu",
        "{spec} is not a CUDA device"
    );
    dev
}

fn tailor_bin() -> PathBuf {
    PathBuf::from(env_or("TAILOR_BIN", env!("CARGO_BIN_EXE_tailor")))
}

fn parity_model(arch: Arch, dev: &Device) -> Model {
    let import = |weights: &str, config: &str| {
        let cfg: ModelConfig =
            serde_json::from_str(&std::fs::read_to_string(fixture(config)).unwrap()).unwrap();
        Model::import(&fixture(weights), cfg, dev).unwrap()
    };
    match arch {
        Arch::Asen => import("asen_authors.pth.tar", "asen_authors.config.json"),
        Arch::Csn => import("csn_authors.safetensors", "csn_authors.config.json"),
        _ => Model::load(&fixture(&format!("{arch}.safetensors")), dev).unwrap(),
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// All seven architectures on the GPU: f32 embeddings within 1e-3 of PyTorch's (the
/// fixtures) and of the CPU's per embedding; bf16 and f16 reported as cosine to f32.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_parity_all_seven_architectures() {
    let dev = gpu();
    let inputs = candle_core::safetensors::load(fixture("inputs.safetensors"), &Device::Cpu)
        .expect("parity inputs");
    for arch in Arch::ALL {
        let cpu = parity_model(arch, &Device::Cpu);
        let model = parity_model(arch, &dev);
        assert_eq!(
            model.fast_inference(),
            dev.is_cpu(),
            "the GPU runs candle's ops"
        );
        assert_eq!(model.identity().unwrap(), cpu.identity().unwrap());
        let expected_file = match arch {
            Arch::Asen => "asen.expected.safetensors".to_string(),
            Arch::Csn => "csn.expected.safetensors".to_string(),
            _ => format!("{arch}.expected.safetensors"),
        };
        let expected = candle_core::safetensors::load(fixture(&expected_file), &Device::Cpu)
            .expect("expected outputs");
        let n = model.config().num_attributes();
        let attrs: Vec<usize> = (0..n).collect();
        let (mut worst_torch, mut worst_cpu) = (0f32, 0f32);
        let mut min_cos = [1f32; 2];
        for (key, images) in &inputs {
            let on_gpu = images.to_device(&dev).unwrap();
            let got = model.embed(&on_gpu, &attrs).unwrap();
            let want_cpu = cpu.embed(images, &attrs).unwrap();
            for a in 0..n {
                let g = rows(&got[a]);
                let t = rows(&expected[&format!("{key}.emb.{a}")]);
                let c = rows(&want_cpu[a]);
                for i in 0..g.len() {
                    let d = max_abs_diff(&g[i], &t[i]);
                    assert!(d <= TOL, "{arch} {key} attr {a} image {i}: vs PyTorch {d}");
                    worst_torch = worst_torch.max(d);
                    let d = max_abs_diff(&g[i], &c[i]);
                    assert!(d <= TOL, "{arch} {key} attr {a} image {i}: vs CPU {d}");
                    worst_cpu = worst_cpu.max(d);
                }
            }
            for (k, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
                if dev.is_cpu() && dtype == DType::BF16 {
                    continue; // no bf16 matrix products in candle's CPU backend
                }
                let reduced = model.with_compute_dtype(dtype).unwrap();
                let r = reduced.embed(&on_gpu, &attrs).unwrap();
                for a in 0..n {
                    for (x, y) in rows(&r[a]).iter().zip(rows(&want_cpu[a]).iter()) {
                        min_cos[k] = min_cos[k].min(cosine(x, y));
                    }
                }
            }
        }
        println!(
            "{{\"test\":\"parity\",\"arch\":\"{arch}\",\"f32_vs_pytorch\":{worst_torch:e},\
             \"f32_vs_cpu\":{worst_cpu:e},\"bf16_min_cosine\":{},\"f16_min_cosine\":{}}}",
            min_cos[0], min_cos[1]
        );
        assert!(min_cos.iter().all(|&c| c > 0.98), "{arch}: {min_cos:?}");
    }
}

fn synth_catalog() -> catalog::Catalog {
    catalog::open(&root().join("fixtures/synth-small")).unwrap()
}

/// A tiny ASEN trained on the GPU end to end: the loss on a fixed batch falls over a few
/// Adam steps; then a whole `train` run from the frozen-backbone cache on the GPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_training_loss_falls() {
    let dev = gpu();
    let cat = synth_catalog();
    let opts = TrainOptions {
        arch: Arch::Asen,
        input_size: Some(32),
        epochs: 1,
        batch: 8,
        lr: 1e-3,
        triplets_per_epoch: 32,
        ..Default::default()
    };
    let cfg = model_config(&cat, &opts).unwrap();
    let sampler = TripletSampler::from_labels(&cat, &cat.splits.items["train"], 5).unwrap();
    let batch = sampler.epoch(0, 8);
    let flips = vec![false; 24];
    let mut items: Vec<usize> = batch
        .iter()
        .flat_map(|t| [t.anchor, t.negative, t.positive])
        .collect();
    items.sort_unstable();
    items.dedup();
    let base = Model::init(cfg.clone(), 1, &dev).unwrap();
    let varmap = VarMap::new();
    let model = base.trainable(&varmap).unwrap();
    let mut trainer = Trainer::new(&model, &varmap, &opts, &dev).unwrap();
    trainer.images = Some(ImageStore::load(&cat, &items, &cfg, ProgressMode::Quiet).unwrap());
    let first = trainer.step(&batch, &flips).unwrap().loss;
    for _ in 0..4 {
        trainer.step(&batch, &flips).unwrap();
    }
    let (_, last) = trainer.batch_loss(&batch, &flips).unwrap();
    println!(
        "{{\"test\":\"train\",\"loss_first\":{first},\"loss_after_5_steps\":{}}}",
        last.loss
    );
    assert!(last.loss < first, "loss {first} -> {}", last.loss);

    let dir = tempfile::tempdir().unwrap();
    let frozen = TrainOptions {
        freeze_backbone: true,
        ..opts
    };
    let out = dir.path().join("frozen.safetensors");
    let summary = train::train(
        &cat,
        &frozen,
        &out,
        false,
        &dev,
        ProgressMode::Quiet,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        summary.cache_seconds.is_some(),
        "trained from the feature cache"
    );
    Model::load(&summary.last_model, &dev).unwrap();
}

fn run_tailor(args: &[&str]) -> String {
    let out = Command::new(tailor_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tailor_bin().display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tailor {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tailor embed --device cuda` of the synthetic catalog gives the CPU index's exact
/// top-10 for every item and attribute (an order swap only between scores within 1e-3).
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_embed_index_has_the_cpu_exact_top10() {
    let spec = env_or("TAILOR_DEVICE", "cuda");
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let catalog = root().join("fixtures/synth-small").display().to_string();
    run_tailor(&[
        "-q",
        "model",
        "init",
        "--arch",
        "asen",
        "--backbone",
        "tiny",
        "--catalog",
        &catalog,
        "--out",
        &p("m.safetensors"),
        "--seed",
        "3",
    ]);
    for (dev, out) in [("cpu", "cpu-ix"), (spec.as_str(), "gpu-ix")] {
        run_tailor(&[
            "-q",
            "embed",
            "--model",
            &p("m.safetensors"),
            "--catalog",
            &catalog,
            "--out",
            &p(out),
            "--device",
            dev,
            "--batch",
            "16",
        ]);
    }
    let cpu = Index::open(Path::new(&p("cpu-ix"))).unwrap();
    let gpu = Index::open(Path::new(&p("gpu-ix"))).unwrap();
    assert_eq!(cpu.len(), gpu.len());
    let mut checked = 0;
    for attr in cpu.attributes().to_vec() {
        for row in 0..cpu.len() {
            let id = cpu.id(row).to_string();
            let grow = gpu.row(&id).expect("same items");
            let a = cpu.vector(&attr, row).unwrap().to_vec();
            let b = gpu.vector(&attr, grow).unwrap().to_vec();
            assert!(max_abs_diff(&a, &b) <= TOL, "{attr} {id}: vectors differ");
            let ca = cpu.search_exact(&attr, &a, 10).unwrap();
            let ga = gpu.search_exact(&attr, &b, 10).unwrap();
            assert_eq!(ca.len(), ga.len());
            for (x, y) in ca.iter().zip(&ga) {
                if x.id != y.id {
                    assert!(
                        (x.score - y.score).abs() <= TOL,
                        "{attr} {id}: top-10 differs ({} {} vs {} {})",
                        x.id,
                        x.score,
                        y.id,
                        y.score
                    );
                }
            }
            checked += 1;
        }
    }
    println!("{{\"test\":\"embed_top10\",\"queries\":{checked}}}");
}

const FASHIONAI: usize = 8;

/// The measurement (run last): ResNet-50 ASEN at 224 px, backbone once + 8 heads, images/s
/// per batch and dtype; then end-to-end ASEN training triplets/s at batch 32. Random
/// weights and inputs (throughput does not depend on them).
#[test]
#[ignore = "needs a CUDA GPU; a measurement"]
fn gpu_throughput() {
    let dev = gpu();
    let batches: Vec<usize> = env_or("TAILOR_DEVICE_BATCHES", "64,256")
        .split(',')
        .map(|b| b.trim().parse().expect("TAILOR_DEVICE_BATCHES"))
        .collect();
    let iters: usize = env_or("TAILOR_DEVICE_ITERS", "10").parse().unwrap();
    let attributes: Vec<String> = (0..FASHIONAI).map(|i| format!("attr{i}")).collect();
    let cfg = ModelConfig::new(Arch::Asen, BackboneConfig::Resnet50, attributes, vec![]);
    let model = Model::init(cfg.clone(), 0, &dev).unwrap();
    let attrs: Vec<usize> = (0..FASHIONAI).collect();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let m = model.with_compute_dtype(dtype).unwrap();
        for &b in &batches {
            let x = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &dev).unwrap();
            let run = || {
                let embs = m.embed(&x, &attrs).unwrap();
                // The embeddings reach the host, as `embed` needs them.
                Tensor::stack(&embs, 0).unwrap().to_vec3::<f32>().unwrap();
            };
            run();
            dev.synchronize().unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                run();
            }
            dev.synchronize().unwrap();
            let rate = (b * iters) as f64 / t.elapsed().as_secs_f64();
            println!(
                "{{\"impl\":\"tailor\",\"what\":\"embed\",\"mode\":\"{dtype:?}\",\"batch\":{b},\"images_per_s\":{rate:.1}}}"
            );
        }
    }
    drop(model);

    // Training: ASEN end to end (trunk and heads), batch 32 triplets = 96 images.
    let steps: usize = env_or("TAILOR_TRAIN_STEPS", "10").parse().unwrap();
    let cat = synth_catalog();
    let opts = TrainOptions {
        arch: Arch::Asen,
        backbone: BackboneConfig::Resnet50,
        input_size: Some(224),
        batch: 32,
        lr: 1e-4,
        ..Default::default()
    };
    let tcfg = model_config(&cat, &opts).unwrap();
    let sampler = TripletSampler::from_labels(&cat, &cat.splits.items["train"], 5).unwrap();
    let triplets = sampler.epoch(0, 32 * (steps + 1));
    let items = sampler.items();
    let base = Model::init(tcfg.clone(), 0, &dev).unwrap();
    let varmap = VarMap::new();
    let tm = base.trainable(&varmap).unwrap();
    let mut trainer = Trainer::new(&tm, &varmap, &opts, &dev).unwrap();
    trainer.images = Some(ImageStore::load(&cat, &items, &tcfg, ProgressMode::Quiet).unwrap());
    let flips = vec![false; 96];
    let mut chunks = triplets.chunks(32);
    trainer.step(chunks.next().unwrap(), &flips).unwrap(); // warm-up
    dev.synchronize().unwrap();
    let t = Instant::now();
    let mut done = 0;
    for chunk in chunks.take(steps) {
        trainer.step(chunk, &flips).unwrap();
        done += chunk.len();
    }
    dev.synchronize().unwrap();
    let rate = done as f64 / t.elapsed().as_secs_f64();
    println!(
        "{{\"impl\":\"tailor\",\"what\":\"train\",\"mode\":\"F32\",\"batch\":32,\"triplets_per_s\":{rate:.1}}}"
    );
}
