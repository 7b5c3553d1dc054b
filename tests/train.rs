//! Training on the bundled synthetic catalog (32 px, tiny backbone): one step lowers the
//! loss for every architecture; same seed gives the same model file; a resumed run
//! matches an uninterrupted one; the frozen-backbone cache trains the heads only; the
//! `train` command's output feeds `Model::load`.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use candle_nn::VarMap;
use tailor::catalog::{self, Catalog};
use tailor::model::{Arch, Model};
use tailor::progress::ProgressMode;
use tailor::train::data::ImageStore;
use tailor::train::sampling::TripletSampler;
use tailor::train::{self, model_config, TrainOptions, Trainer};

fn catalog() -> Catalog {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synth-small");
    catalog::open(&path).unwrap()
}

fn options(arch: Arch) -> TrainOptions {
    TrainOptions {
        arch,
        input_size: Some(32),
        epochs: 2,
        batch: 8,
        lr: 1e-3,
        triplets_per_epoch: 32,
        ..Default::default()
    }
}

fn run(cat: &Catalog, opts: &TrainOptions, out: &Path, resume: bool) -> train::TrainSummary {
    train::train(
        cat,
        opts,
        out,
        resume,
        &Device::Cpu,
        ProgressMode::Quiet,
        &mut |_| {},
    )
    .unwrap()
}

/// Two model files hold the same thing byte for byte: the same tensor bytes and the same
/// header. The header is compared as parsed JSON because `model::weights::write_model`
/// passes its two metadata keys to safetensors in a `HashMap`, whose order varies between
/// map instances; everything else must be identical bytes.
fn assert_same_model_file(a: &Path, b: &Path) {
    let split = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        (header, bytes[8 + n..].to_vec())
    };
    let (ha, da) = split(a);
    let (hb, db) = split(b);
    if da != db {
        let load = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
        let (ta, tb) = (load(a), load(b));
        let mut differ: Vec<&String> = ta
            .iter()
            .filter(|(n, t)| {
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                    != tb[*n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .map(|(n, _)| n)
            .collect();
        differ.sort();
        panic!("{} tensors differ: {differ:?}", differ.len());
    }
    assert_eq!(ha, hb);
    // And byte for byte: the header is written in a canonical order.
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "same model, same bytes"
    );
}

#[test]
fn one_step_lowers_the_loss_for_every_architecture() {
    let cat = catalog();
    let train_items = &cat.splits.items["train"];
    let sampler = TripletSampler::from_labels(&cat, train_items, 5).unwrap();
    let batch = sampler.epoch(0, 8);
    let flips: Vec<bool> = (0..24).map(|i| i % 3 == 0).collect();
    let mut items: Vec<usize> = batch
        .iter()
        .flat_map(|t| [t.anchor, t.negative, t.positive])
        .collect();
    items.sort_unstable();
    items.dedup();
    for arch in Arch::ALL {
        let opts = options(arch);
        let cfg = model_config(&cat, &opts).unwrap();
        let base = Model::init(cfg.clone(), 1, &Device::Cpu).unwrap();
        let varmap = VarMap::new();
        let model = base.trainable(&varmap).unwrap();
        let mut trainer = Trainer::new(&model, &varmap, &opts, &Device::Cpu).unwrap();
        trainer.images = Some(ImageStore::load(&cat, &items, &cfg, ProgressMode::Quiet).unwrap());
        let before = trainer.step(&batch, &flips).unwrap().loss;
        let (_, after) = trainer.batch_loss(&batch, &flips).unwrap();
        assert!(
            after.loss < before,
            "{arch}: loss {before} -> {} after one step",
            after.loss
        );
    }
}

#[test]
fn same_seed_gives_the_same_model_file() {
    let cat = catalog();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Arch::AsenV2);
    opts.epochs = 1;
    let a = run(&cat, &opts, &dir.path().join("a.safetensors"), false);
    let b = run(&cat, &opts, &dir.path().join("b.safetensors"), false);
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_same_model_file(&a.last_model, &b.last_model);
    assert_same_model_file(&a.best_model, &b.best_model);
    opts.seed = 1;
    let c = run(&cat, &opts, &dir.path().join("c.safetensors"), false);
    assert_ne!(bytes(&a.last_model), bytes(&c.last_model));
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let cat = catalog();
    let dir = tempfile::tempdir().unwrap();
    // AG-MAN: Adam moments, the learned loss weights and batch-norm statistics all resume.
    let opts = options(Arch::AgMan);
    let whole = run(&cat, &opts, &dir.path().join("whole.safetensors"), false);
    let out = dir.path().join("part.safetensors");
    let mut first = opts.clone();
    first.epochs = 1;
    run(&cat, &first, &out, false);
    let resumed = run(&cat, &opts, &out, true);
    assert_eq!(resumed.resumed_from_epoch, Some(1));
    assert_same_model_file(&whole.last_model, &resumed.last_model);
    assert_eq!(resumed.log.len(), 2);
    for (a, b) in whole.log.iter().zip(&resumed.log) {
        assert_eq!(
            (a.loss, a.valid_map, a.loss_weights),
            (b.loss, b.valid_map, b.loss_weights)
        );
    }
    // Resuming a finished run, or with other options, is refused with a reason.
    let err = train::train(
        &cat,
        &opts,
        &out,
        true,
        &Device::Cpu,
        ProgressMode::Quiet,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("already finished"), "{err}");
    let mut other = opts.clone();
    other.epochs = 3;
    other.lr = 0.5;
    let err = train::train(
        &cat,
        &other,
        &out,
        true,
        &Device::Cpu,
        ProgressMode::Quiet,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("options of the stopped run"),
        "{err}"
    );
}

#[test]
fn frozen_backbone_trains_the_heads_from_the_cache() {
    let cat = catalog();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Arch::Asen);
    opts.epochs = 1;
    opts.freeze_backbone = true;
    let out = dir.path().join("f.safetensors");
    let summary = run(&cat, &opts, &out, false);
    assert!(summary.cache_seconds.is_some());
    assert!(summary.bn_recalibrated);
    assert!(dir.path().join("f.features.cache").is_file());
    let init = Model::init(model_config(&cat, &opts).unwrap(), opts.seed, &Device::Cpu).unwrap();
    let trained = Model::load(&summary.last_model, &Device::Cpu).unwrap();
    let tensors = |m: &Model| -> Vec<(String, Vec<f32>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        m.save(&p).unwrap();
        let mut t: Vec<_> = candle_core::safetensors::load(&p, &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (a, b) = (tensors(&init), tensors(&trained));
    assert_eq!(a.len(), b.len());
    let mut heads_changed = 0;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if name.contains("running_") {
            // A fresh frozen trunk gets its batch-norm statistics from training images.
            continue;
        } else if name.starts_with("backbonenet.") {
            assert_eq!(x, y, "frozen backbone tensor {name} changed");
        } else if x != y {
            heads_changed += 1;
        }
    }
    assert!(heads_changed > 0);
}

#[test]
fn train_command_writes_a_model_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cli.safetensors");
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synth-small");
    let output = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(["--json", "--quiet", "train", "--catalog"])
        .arg(&catalog)
        .args([
            "--arch",
            "asen",
            "--no-aca",
            "--input-size",
            "32",
            "--epochs",
            "1",
        ])
        .args([
            "--triplets-per-epoch",
            "16",
            "--batch",
            "8",
            "--test",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["arch"], "asen-no-aca");
    assert!(report["test"]["map"].as_f64().unwrap() > 0.0);
    assert!(report["test"]["random_map"].as_f64().unwrap() > 0.0);
    let model = Model::load(&out, &Device::Cpu).unwrap();
    assert_eq!(model.config().arch, Arch::AsenNoAca);
    let csv = std::fs::read_to_string(dir.path().join("cli.log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2);

    // Bad input: a clear error, exit code 2.
    let output = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(["train", "--catalog"])
        .arg(&catalog)
        .args(["--arch", "csn", "--no-asa", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ablations of asen"));
}

#[test]
fn backbone_init_loads_torchvision_names() {
    let cat = catalog();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Arch::Asen);
    opts.epochs = 1;
    opts.triplets_per_epoch = 16;
    opts.freeze_backbone = true;
    // A backbone from another seed, saved under torchvision names (no prefix).
    let donor = Model::init(model_config(&cat, &opts).unwrap(), 99, &Device::Cpu).unwrap();
    let donor_file = dir.path().join("donor.safetensors");
    donor.save(&donor_file).unwrap();
    let trunk: std::collections::HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(&donor_file, &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix("backbonenet.").map(|s| (s.to_string(), t)))
            .collect();
    let init = dir.path().join("resnet.safetensors");
    candle_core::safetensors::save(&trunk, &init).unwrap();
    opts.backbone_init = Some(init.clone());
    let s = run(&cat, &opts, &dir.path().join("m.safetensors"), false);
    let trained = candle_core::safetensors::load(&s.last_model, &Device::Cpu).unwrap();
    for (name, t) in trunk.iter().filter(|(n, _)| !n.contains("running_")) {
        let got = &trained[&format!("backbonenet.{name}")];
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
    }
    // A file that lacks backbone tensors: refused, naming them.
    let mut partial = trunk.clone();
    partial.retain(|n, _| !n.starts_with("layer3."));
    candle_core::safetensors::save(&partial, &init).unwrap();
    let err = train::train(
        &cat,
        &opts,
        &dir.path().join("m2.safetensors"),
        false,
        &Device::Cpu,
        ProgressMode::Quiet,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("layer3."), "{err}");
}

/// The committed pretrained trunk (`tools/pretrain_trunk.py`) loads through
/// `--backbone-init`, keeps its own batch-norm statistics (no recalibration), and tailor's
/// forward of it matches PyTorch's on the same inputs, folded and plain.
#[test]
fn pretrained_trunk_fixture_matches_pytorch() {
    let cat = catalog();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/trunks");
    let mut opts = options(Arch::Asen);
    opts.input_size = Some(64);
    opts.epochs = 1;
    opts.triplets_per_epoch = 8;
    opts.validate = false;
    opts.freeze_backbone = true;
    opts.backbone_init = Some(fixtures.join("tiny-64-pretrained.safetensors"));
    let s = run(&cat, &opts, &dir.path().join("m.safetensors"), false);
    assert!(!s.bn_recalibrated);
    let expected = candle_core::safetensors::load(
        fixtures.join("tiny-64-pretrained.expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let want = expected["layer3"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut model = Model::load(&s.last_model, &Device::Cpu).unwrap();
    for fast in [true, false] {
        model.set_fast_inference(fast).unwrap();
        let got = model
            .backbone_forward(&expected["inputs"], false)
            .unwrap()
            .map
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // f32 in both; summation order differs (folded batch norm, gemm blocking).
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "fast {fast}: max |diff| {diff} (values up to {scale})"
        );
        eprintln!("pretrained trunk, fast {fast}: max |diff| {diff:.2e}, values up to {scale:.2}");
    }
}
