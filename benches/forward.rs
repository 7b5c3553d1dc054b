//! Forward throughput of ResNet-50 ASEN at 224 px on the CPU, fp32, eval mode, random
//! weights: the trunk alone, the trunk once + all 8 FashionAI heads on the shared map, and
//! the authors' per-attribute way (the whole network once per attribute). With
//! `TAILOR_BENCH_PYTHON=/path/to/python` (a Python with torch) the PyTorch implementation
//! in `tools/asen_ref.py` runs the same measurements in the same run and ratios are printed.
//!
//! Precisions: `-- --precision f32,bf16` (comma-separated f32, bf16, auto; default f32
//! and, where the CPU has AVX512-BF16, bf16): the trunk and shared rates per precision.
//! The PyTorch side adds bf16 autocast channels-last and prints the oneDNN convolution
//! implementations (ISA) it ran.
//!
//! Settings: TAILOR_BENCH_BATCHES (default "16"), TAILOR_BENCH_ITERS (default 3; the
//! per-attribute way runs once), TAILOR_BENCH_QUICK=1 (skip candle's ops and the
//! per-attribute way, both sides), RAYON_NUM_THREADS (default: physical cores).
//!
//!     RAYON_NUM_THREADS=2 TAILOR_BENCH_PYTHON=$(bash tools/torch_venv.sh) \
//!         cargo bench --bench forward -- --precision f32,bf16

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tailor::model::{Arch, BackboneConfig, Model, ModelConfig, Precision};

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

/// CPU seconds (user + system) this process has used, from /proc/self/stat (Linux; 0
/// elsewhere). On a shared machine, images per CPU-second is steadier than wall-clock rates.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// (images per wall-clock second, images per CPU-second).
fn rate(batch: usize, iters: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..iters {
        f();
    }
    let n = (batch * iters) as f64;
    (
        n / t0.elapsed().as_secs_f64(),
        n / (cpu_seconds() - c0).max(1e-9),
    )
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
    let quick = env_or("TAILOR_BENCH_QUICK", "0") != "0";
    let args: Vec<String> = std::env::args().collect();
    let precisions: Vec<Precision> = match args.iter().position(|a| a == "--precision") {
        Some(i) => args
            .get(i + 1)
            .expect("--precision LIST")
            .split(',')
            .map(|p| p.trim().parse().expect("--precision: f32, bf16 or auto"))
            .collect(),
        None if tailor::model::bf16::Kernel::detect().is_some() => {
            vec![Precision::F32, Precision::Bf16]
        }
        None => vec![Precision::F32],
    };
    let threads = candle_core::utils::get_num_threads();
    let dev = Device::Cpu;
    let cfg = ModelConfig::new(
        Arch::Asen,
        BackboneConfig::Resnet50,
        FASHIONAI.iter().map(|s| s.to_string()).collect(),
        vec![],
    );
    let mut model = Model::init(cfg, 0, &dev)?;
    let attrs: Vec<usize> = (0..FASHIONAI.len()).collect();
    println!(
        "forward throughput: ResNet-50 ASEN, 224 px, eval, {} attributes; {} threads; \
         {}; bf16 kernel: {}; candle 0.11.1; load average {}",
        attrs.len(),
        threads,
        cpu_name(),
        tailor::model::bf16::Kernel::detect().map_or("none", |k| k.name()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut results: BTreeMap<(usize, &str, String), (f64, f64)> = BTreeMap::new();
    for &b in &batches {
        let x = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &dev)?;
        for &p in &precisions {
            let eff = model.set_precision(p)?;
            let tag = format!("tailor-{eff}");
            let backbone = rate(b, iters, || {
                model.backbone_forward(&x, false).expect("forward");
            });
            let shared = rate(b, iters, || {
                model.embed(&x, &attrs).expect("forward");
            });
            for (what, r) in [("backbone", backbone), ("shared", shared)] {
                println!(
                    "{tag:<24} batch {b:>3}  {what:<14} {:>7.2} images/s  {:>6.2} images/CPU-s",
                    r.0, r.1
                );
                results.insert((b, what, tag.clone()), r);
            }
        }
        model.set_precision(Precision::F32)?;
        if quick {
            continue;
        }
        let per_attr = rate(b, 1, || {
            for &a in &attrs {
                let ids = Tensor::full(a as u32, b, &dev).expect("ids");
                model.forward_t(&x, &ids, false).expect("forward");
            }
        });
        // The same trunk through candle's own conv2d/batch-norm ops (no folding).
        model.set_fast_inference(false)?;
        let candle_backbone = rate(b, iters, || {
            model.backbone_forward(&x, false).expect("forward");
        });
        model.set_fast_inference(true)?;
        println!(
            "candle ops               batch {b:>3}  backbone       {:>7.2} images/s  {:>6.2} images/CPU-s",
            candle_backbone.0, candle_backbone.1
        );
        println!(
            "tailor-f32               batch {b:>3}  per_attribute  {:>7.2} images/s  {:>6.2} images/CPU-s",
            per_attr.0, per_attr.1
        );
        results.insert((b, "per_attribute", "tailor-f32".into()), per_attr);
        let shared = results[&(b, "shared", "tailor-f32".to_string())];
        println!(
            "tailor-f32               batch {b:>3}  shared / per-attribute = {:.2}x",
            shared.0 / per_attr.0
        );
    }
    if let Ok(py) = std::env::var("TAILOR_BENCH_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/forward_torch.py");
        // The peer's command only: OpenBLAS tuning variables set for this shell must not
        // pick PyTorch's kernels.
        let out = Command::new(&py)
            .arg(script)
            .env_remove("OPENBLAS_CORETYPE")
            .env_remove("OPENBLAS_L2_SIZE")
            .env("TAILOR_BENCH_QUICK", if quick { "1" } else { "0" })
            .env("TAILOR_BENCH_THREADS", threads.to_string())
            .env("TAILOR_BENCH_BATCHES", env_or("TAILOR_BENCH_BATCHES", "16"))
            .env("TAILOR_BENCH_ITERS", iters.to_string())
            .output()
            .map_err(|e| tailor::Error::io(&py, e))?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines() {
            let v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            // One forward per PyTorch mode traced with oneDNN's verbose mode: the ISA and
            // the convolution implementations it ran.
            if let Some(t) = v.get("trace") {
                println!(
                    "pytorch {:<16} ISA: {}; convolution kernels: {}",
                    v["mode"].as_str().unwrap_or("?"),
                    t["isa"].as_str().unwrap_or("?"),
                    t["kernels"]
                );
                continue;
            }
            if v.get("impl").is_none() {
                continue;
            }
            let (imp, what, b, r) = (
                v["impl"].as_str().unwrap_or("?").to_string(),
                v["what"].as_str().unwrap_or("?").to_string(),
                v["batch"].as_u64().unwrap_or(0) as usize,
                v["images_per_s"].as_f64().unwrap_or(0.0),
            );
            let r_cpu = v["images_per_cpu_s"].as_f64().unwrap_or(f64::NAN);
            let ratios: Vec<String> = results
                .iter()
                .filter(|((bb, w, _), _)| *bb == b && *w == what)
                .map(|((_, _, i), o)| {
                    format!("{i}/this = {:.2}x wall, {:.2}x CPU", o.0 / r, o.1 / r_cpu)
                })
                .collect();
            println!(
                "{imp:<24} batch {b:>3}  {what:<14} {r:>7.2} images/s  {r_cpu:>6.2} images/CPU-s   \
                 {}  (torch {}, {})",
                ratios.join("; "),
                v["torch"].as_str().unwrap_or("?"),
                v["isa"].as_str().unwrap_or("?")
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
