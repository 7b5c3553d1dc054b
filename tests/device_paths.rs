//! The inference path a GPU takes, checked on the CPU: with the folded channels-last trunk
//! turned off, a model runs candle's ops (what `--device cuda` runs), and those must give
//! the fast CPU path's embeddings within 1e-3 for all seven architectures (the committed
//! parity fixtures). Reduced precision on that path stays close to f32, and `--device`
//! mistakes are clear errors, never panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use tailor::model::{Arch, Model, ModelConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/parity")
        .join(name)
}

/// The parity model of `arch`: tailor files, and the authors' containers for ASEN and CSN.
fn parity_model(arch: Arch) -> Model {
    let import = |weights: &str, config: &str| {
        let cfg: ModelConfig =
            serde_json::from_str(&std::fs::read_to_string(fixture(config)).unwrap()).unwrap();
        Model::import(&fixture(weights), cfg, &Device::Cpu).unwrap()
    };
    match arch {
        Arch::Asen => import("asen_authors.pth.tar", "asen_authors.config.json"),
        Arch::Csn => import("csn_authors.safetensors", "csn_authors.config.json"),
        _ => Model::load(&fixture(&format!("{arch}.safetensors")), &Device::Cpu).unwrap(),
    }
}

fn inputs() -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = candle_core::safetensors::load(fixture("inputs.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Every image embedded for every attribute: `[attr][image] -> vector`.
fn embed_all(model: &Model, images: &Tensor) -> Vec<Vec<Vec<f32>>> {
    let attrs: Vec<usize> = (0..model.config().num_attributes()).collect();
    model
        .embed(images, &attrs)
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(
                t.dtype(),
                DType::F32,
                "embeddings are f32 whatever the compute dtype"
            );
            rows(t)
        })
        .collect()
}

#[test]
fn candle_ops_path_equals_the_fast_cpu_path_for_all_seven_architectures() {
    const TOL: f32 = 1e-3;
    assert_eq!(Arch::ALL.len(), 7);
    for arch in Arch::ALL {
        let mut model = parity_model(arch);
        assert!(
            model.fast_inference(),
            "{arch}: a CPU f32 model takes the fast path"
        );
        for (key, images) in inputs() {
            model.set_fast_inference(true).unwrap();
            let fast = embed_all(&model, &images);
            let fast_logits = model.backbone_forward(&images, false).unwrap().logits;
            model.set_fast_inference(false).unwrap();
            assert!(!model.fast_inference());
            let ops = embed_all(&model, &images);
            let mut worst = 0f32;
            for (a, (f, o)) in fast.iter().zip(&ops).enumerate() {
                for (i, (x, y)) in f.iter().zip(o).enumerate() {
                    let d = max_abs_diff(x, y);
                    assert!(d <= TOL, "{arch} {key} attr {a} image {i}: |diff| {d}");
                    worst = worst.max(d);
                }
            }
            if let Some(want) = fast_logits {
                let got = model.backbone_forward(&images, false).unwrap().logits;
                for (x, y) in rows(&want).iter().zip(&rows(&got.unwrap())) {
                    assert!(max_abs_diff(x, y) <= TOL, "{arch} {key}: logits differ");
                }
            }
            eprintln!("{arch} {key}: candle ops vs fast path, max |diff| {worst:.2e}");
        }
    }
}

#[test]
fn reduced_precision_runs_candle_ops_and_keeps_the_model_identity() {
    let images = &inputs()[0].1;
    for arch in Arch::ALL {
        let model = parity_model(arch);
        let f32_embs = embed_all(&model, images);
        // f16 is what the CPU's candle ops have; bf16 goes the same way on a GPU.
        let half = model.with_compute_dtype(DType::F16).unwrap();
        assert_eq!(half.compute_dtype(), DType::F16);
        assert!(
            !half.fast_inference(),
            "reduced precision runs candle's ops"
        );
        assert_eq!(half.identity().unwrap(), model.identity().unwrap());
        let half_embs = embed_all(&half, images);
        let mut min_cos = 1f32;
        for (f, h) in f32_embs.iter().zip(&half_embs) {
            for (x, y) in f.iter().zip(h) {
                min_cos = min_cos.min(cosine(x, y));
            }
        }
        eprintln!("{arch}: f16 candle ops vs f32, min cosine {min_cos:.5}");
        assert!(
            min_cos > 0.99,
            "{arch}: f16 embeddings drifted (cosine {min_cos})"
        );
        // Back to f32: the same numbers as the original model's candle-ops path.
        let back = half.with_compute_dtype(DType::F32).unwrap();
        assert!(back.fast_inference());
        assert_eq!(embed_all(&back, images), f32_embs);
    }
    let model = parity_model(Arch::Asen);
    let err = model
        .with_compute_dtype(DType::BF16)
        .err()
        .expect("bf16 on the CPU is refused")
        .to_string();
    assert!(err.contains("bf16") && err.contains("GPU"), "{err}");
    let err = tailor::model::compute_dtype("fp8").unwrap_err().to_string();
    assert!(err.contains("f32, bf16 or f16"), "{err}");
}

#[test]
fn device_specs_are_parsed_with_clear_errors() {
    assert!(tailor::model::device("cpu").unwrap().is_cpu());
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda0", ""] {
        let err = tailor::model::device(bad).unwrap_err().to_string();
        assert!(
            err.contains("expected cpu, cuda or cuda:N"),
            "{bad:?}: {err}"
        );
    }
}

/// Without the `cuda` feature every model command refuses `--device cuda[:N]` with a
/// message saying how to get CUDA, exit status 2 and no panic.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_build_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tailor"))
            .args(args)
            .output()
            .expect("run tailor");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/synth-small")
        .display()
        .to_string();
    let model = fixture("asen-v2.safetensors").display().to_string();
    let weights = fixture("csn_authors.safetensors").display().to_string();
    let commands: Vec<Vec<String>> = vec![
        vec![
            "embed",
            "--model",
            &model,
            "--catalog",
            &catalog,
            "--out",
            &d("ix"),
        ],
        vec![
            "train",
            "--catalog",
            &catalog,
            "--out",
            &d("m.safetensors"),
            "--backbone",
            "tiny",
        ],
        vec![
            "model",
            "import",
            "--arch",
            "csn",
            "--weights",
            &weights,
            "--attributes",
            "a,b,c,d",
            "--out",
            &d("w.safetensors"),
        ],
        vec![
            "model",
            "init",
            "--arch",
            "asen",
            "--backbone",
            "tiny",
            "--catalog",
            &catalog,
            "--out",
            &d("i.safetensors"),
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for cmd in &commands {
        for dev in ["cuda", "cuda:3"] {
            let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            args.extend(["--device", dev]);
            let (code, err) = run(&args);
            assert_eq!(code, Some(2), "{args:?}: {err}");
            assert!(err.contains("built without CUDA"), "{args:?}: {err}");
            assert!(err.contains("--features cuda"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.extend(["--device", "cuda:first"]);
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("expected cpu, cuda or cuda:N"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("ix").exists(),
        "nothing written on a device error"
    );
}
