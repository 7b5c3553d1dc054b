//! Forward throughput of ResNet-50 ASEN at 224 px on the CPU, fp32, eval mode, random
//! weights: the trunk alone, the trunk once + all 8 FashionAI heads on the shared map, and
//! the authors' per-attribute way (the whole network once per attribute). With
//! `TAILOR_BENCH_PYTHON=/path/to/python` (a Python with torch) the PyTorch implementation
//! in `tools/asen_ref.py` runs the same measurements in the same run and ratios are printed.
//!
//! Settings: TAILOR_BENCH_BATCHES (default "16"), TAILOR_BENCH_ITERS (default 3; the
//! per-attribute way runs once), RAYON_NUM_THREADS (default: physical cores).
//!
//!     RAYON_NUM_THREADS=2 TAILOR_BENCH_PYTHON=/work/venv-torch/bin/python \
//!         cargo bench --bench forward

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tailor::model::{Arch, BackboneConfig, Model, ModelConfig};

const FASHIONAI: [&str; 8] = [
    "skirt_length",
    "sleeve_length",
    "coat_length",
    "pant_length",
    "collar_design",
    "lapel_design",
    "neckline_design",
    "neck_design",
];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn rate(batch: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    (batch * iters) as f64 / t0.elapsed().as_secs_f64()
}

fn main() -> tailor::Result<()> {
    let batches: Vec<usize> = env_or("TAILOR_BENCH_BATCHES", "16")
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .expect("TAILOR_BENCH_BATCHES: comma-separated integers")
        })
        .collect();
    let iters: usize = env_or("TAILOR_BENCH_ITERS", "3")
        .parse()
        .expect("TAILOR_BENCH_ITERS");
    let threads = candle_core::utils::get_num_threads();
    let dev = Device::Cpu;
    let cfg = ModelConfig::new(
        Arch::Asen,
        BackboneConfig::Resnet50,
        FASHIONAI.iter().map(|s| s.to_string()).collect(),
        vec![],
    );
    let model = Model::init(cfg, 0, &dev)?;
    let attrs: Vec<usize> = (0..FASHIONAI.len()).collect();
    println!(
        "forward throughput: ResNet-50 ASEN, 224 px, fp32, eval, {} attributes; {} threads; \
         {}; candle 0.11.1",
        attrs.len(),
        threads,
        cpu_name()
    );
    let mut results: BTreeMap<(usize, &str, String), f64> = BTreeMap::new();
    for &b in &batches {
        let x = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &dev)?;
        let backbone = rate(b, iters, || {
            model.backbone_forward(&x, false).expect("forward");
        });
        let shared = rate(b, iters, || {
            model.embed(&x, &attrs).expect("forward");
        });
        let per_attr = rate(b, 1, || {
            for &a in &attrs {
                let ids = Tensor::full(a as u32, b, &dev).expect("ids");
                model.forward_t(&x, &ids, false).expect("forward");
            }
        });
        for (what, r) in [
            ("backbone", backbone),
            ("shared", shared),
            ("per_attribute", per_attr),
        ] {
            println!("tailor          batch {b:>3}  {what:<14} {r:>7.2} images/s");
            results.insert((b, what, "tailor".into()), r);
        }
        println!(
            "tailor          batch {b:>3}  shared / per-attribute = {:.2}x",
            shared / per_attr
        );
    }
    if let Ok(py) = std::env::var("TAILOR_BENCH_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/forward_torch.py");
        let out = Command::new(&py)
            .arg(script)
            .env("TAILOR_BENCH_THREADS", threads.to_string())
            .env("TAILOR_BENCH_BATCHES", env_or("TAILOR_BENCH_BATCHES", "16"))
            .env("TAILOR_BENCH_ITERS", iters.to_string())
            .output()
            .map_err(|e| tailor::Error::io(&py, e))?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (imp, what, b, r) = (
                v["impl"].as_str().unwrap_or("?").to_string(),
                v["what"].as_str().unwrap_or("?").to_string(),
                v["batch"].as_u64().unwrap_or(0) as usize,
                v["images_per_s"].as_f64().unwrap_or(0.0),
            );
            let ours = results
                .iter()
                .find(|((bb, w, i), _)| *bb == b && *w == what && i == "tailor")
                .map(|(_, r)| *r)
                .unwrap_or(f64::NAN);
            println!(
                "{imp:<24} batch {b:>3}  {what:<14} {r:>7.2} images/s   tailor/this = {:.2}x  (torch {})",
                ours / r,
                v["torch"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
