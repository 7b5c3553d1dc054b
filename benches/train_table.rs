//! The papers' Table 1 on our own data: every architecture trained with the same budget
//! and seed on the synthetic catalog, test MAP per attribute and overall beside the exact
//! random baseline; plus training throughput (triplets/s) end to end and from the
//! frozen-backbone feature cache.
//!
//! Run: `cargo bench --bench train_table` (settings from the environment):
//! - `TABLE_DIR` work directory (default `target/train-table`); the catalog is generated
//!   there once (`synth/`), runs go to `runs-<mode>/`.
//! - `TABLE_ITEMS` (10000), `TABLE_SIZE` px (64), `TABLE_SEED` (0, the catalog's)
//! - `TABLE_MODEL_SEED` (0): every row's model initialisation, triplets and flips
//! - `TABLE_MODE`: `frozen` (heads trained on cached maps of the tiny backbone, the default)
//!   or `e2e` (the whole tiny network trained end to end)
//! - `TABLE_EPOCHS` (10), `TABLE_TRIPLETS` per epoch (20000), `TABLE_LR` (1e-3)
//! - `TABLE_ARCHS` comma list (default: all seven)
//! - `TABLE_E2E_PROBE` triplets for the end-to-end throughput probe (480; 0 skips it)
//! - `TABLE_TRUNK`: a backbone file in the `--backbone-init` format, by default
//!   `fixtures/trunks/tiny-64-pretrained.safetensors` (made by `tools/pretrain_trunk.py`
//!   on a disjoint synthetic catalog: the stand-in for the papers' ImageNet trunk), or
//!   `random` (a tiny trunk drawn once, its batch-norm statistics then set from training
//!   images; its local-attribute features are near chance, see the results file). Runs
//!   go to `runs-<mode>[-<trunk file stem>]/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use tailor::catalog::{self, synth};
use tailor::model::{Arch, Model};
use tailor::progress::ProgressMode;
use tailor::train::{self, TrainOptions};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    arch: Arch,
    per_attribute: BTreeMap<usize, f64>,
    overall: f64,
    best_epoch: Option<usize>,
    train_seconds: f64,
    triplets_per_second: f64,
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::var("TABLE_DIR").unwrap_or("target/train-table".into()));
    let items: usize = env("TABLE_ITEMS", 10_000);
    let size: u32 = env("TABLE_SIZE", 64);
    let seed: u64 = env("TABLE_SEED", 0);
    let model_seed: u64 = env("TABLE_MODEL_SEED", 0);
    let mode = std::env::var("TABLE_MODE").unwrap_or("frozen".into());
    let epochs: usize = env("TABLE_EPOCHS", 10);
    let triplets: usize = env("TABLE_TRIPLETS", 20_000);
    let lr: f64 = env("TABLE_LR", 1e-3);
    let probe: usize = env("TABLE_E2E_PROBE", 480);
    let trunk_arg = std::env::var("TABLE_TRUNK").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/trunks/tiny-64-pretrained.safetensors"
        )
        .into()
    });
    let given_trunk = match trunk_arg.as_str() {
        "random" => None,
        path => {
            let p = PathBuf::from(path);
            anyhow::ensure!(p.is_file(), "TABLE_TRUNK: no such file {}", p.display());
            Some(p)
        }
    };
    let archs: Vec<Arch> = match std::env::var("TABLE_ARCHS") {
        Ok(list) => list
            .split(',')
            .map(|a| a.trim().parse())
            .collect::<Result<_, _>>()?,
        Err(_) => vec![
            Arch::Triplet,
            Arch::Csn,
            Arch::AsenNoAsa,
            Arch::AsenNoAca,
            Arch::Asen,
            Arch::AsenV2,
            Arch::AgMan,
        ],
    };
    let frozen = match mode.as_str() {
        "frozen" => true,
        "e2e" => false,
        m => anyhow::bail!("TABLE_MODE must be frozen or e2e, not {m:?}"),
    };

    let synth_dir = dir.join("synth");
    if !synth_dir.join("manifest.csv").is_file() {
        let t = Instant::now();
        let opts = synth::SynthOptions {
            items,
            size,
            seed,
            jpeg: false,
        };
        synth::generate(&synth_dir, &opts, ProgressMode::Quiet)?;
        eprintln!(
            "generated {items} items at {size} px in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let cat = catalog::open(&synth_dir)?;
    let names = cat.schema.names();
    let runs = match &given_trunk {
        None => dir.join(format!("runs-{mode}")),
        Some(p) => dir.join(format!(
            "runs-{mode}-{}",
            p.file_stem().unwrap_or_default().to_string_lossy()
        )),
    };
    std::fs::create_dir_all(&runs)?;
    let device = Device::Cpu;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# Table 1 on the synthetic catalog: {} items at {size} px (seed {seed}), tiny backbone, \
         {mode}, {epochs} epochs x {triplets} triplets, batch 16, Adam lr {lr:e}, step 1 \
         gamma 0.985, margin 0.2, model seed {model_seed}, one shared trunk ({}); CPU, {threads} threads \
         available",
        cat.items.len(),
        given_trunk
            .as_ref()
            .map_or("random".into(), |p| p.display().to_string())
    );

    // One trunk for every architecture: a tiny ResNet drawn once (AG-MAN's, which also has
    // layer4, conv1_1 and fc_embed) and given to each run under torchvision names, so
    // that every row starts from the same backbone weights.
    let trunk = given_trunk
        .clone()
        .unwrap_or_else(|| runs.join("tiny-trunk.safetensors"));
    if given_trunk.is_none() {
        let mut o = TrainOptions {
            arch: Arch::AgMan,
            ..Default::default()
        };
        o.seed = seed;
        let m = Model::init(train::model_config(&cat, &o)?, 0, &device)?;
        let full = runs.join("tiny-trunk-model.safetensors");
        m.save(&full)?;
        let t: std::collections::HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(&full, &device)?
                .into_iter()
                .filter_map(|(n, t)| n.strip_prefix("backbonenet.").map(|s| (s.to_string(), t)))
                .collect();
        candle_core::safetensors::save(&t, &trunk)?;
    }
    // Throughput: the same ASEN for a few hundred triplets end to end and from the cache.
    let cache_path = Some(runs.join("tiny-backbone.features.cache"));
    if probe > 0 {
        let base = TrainOptions {
            arch: Arch::Asen,
            epochs: 1,
            triplets_per_epoch: probe,
            validate: false,
            lr,
            backbone_init: Some(trunk.clone()),
            ..Default::default()
        };
        let e2e = train::train(
            &cat,
            &base,
            &runs.join("probe-e2e.safetensors"),
            false,
            &device,
            ProgressMode::Quiet,
            &mut |_| {},
        )?;
        let mut frozen_opts = base.clone();
        frozen_opts.freeze_backbone = true;
        frozen_opts.triplets_per_epoch = probe * 20;
        frozen_opts.feature_cache = cache_path.clone();
        let fr = train::train(
            &cat,
            &frozen_opts,
            &runs.join("probe-frozen.safetensors"),
            false,
            &device,
            ProgressMode::Quiet,
            &mut |_| {},
        )?;
        let (e, f) = (&e2e.log[0], &fr.log[0]);
        let epoch_e2e = triplets as f64 / e.triplets_per_second;
        let epoch_frozen = triplets as f64 / f.triplets_per_second;
        let cache = fr.cache_seconds.unwrap_or(0.0);
        println!(
            "throughput (ASEN, tiny, {size} px, batch 16): end to end {:.1} triplets/s \
             ({:.0} images/s fwd+bwd); frozen backbone from the cache {:.0} triplets/s; \
             cache build {:.1} s for {} images x 2 flips",
            e.triplets_per_second,
            e.images_per_second,
            f.triplets_per_second,
            cache,
            cat.splits.items["train"].len() + cat.splits.items.get("valid").map_or(0, |v| v.len())
        );
        println!(
            "per epoch of {triplets} triplets: end to end {epoch_e2e:.0} s, frozen {epoch_frozen:.1} s \
             -> {:.0}x faster per epoch ({:.0}x including the one-off cache build in a \
             {epochs}-epoch run)",
            epoch_e2e / epoch_frozen,
            epoch_e2e * epochs as f64 / (epoch_frozen * epochs as f64 + cache)
        );
    }

    let mut rows = Vec::new();
    let mut random: Option<(BTreeMap<usize, f64>, f64)> = None;
    for &arch in &archs {
        let opts = TrainOptions {
            arch,
            seed: model_seed,
            epochs,
            triplets_per_epoch: triplets,
            lr,
            freeze_backbone: frozen,
            backbone_init: Some(trunk.clone()),
            // Every architecture but AG-MAN (whose map also holds the fused layer2 branch)
            // sees the same layer3 map: one cache serves them all.
            feature_cache: if frozen && arch != Arch::AgMan {
                cache_path.clone()
            } else {
                None
            },
            ..Default::default()
        };
        let out = match model_seed {
            0 => runs.join(format!("{arch}.safetensors")),
            s => runs.join(format!("{arch}-seed{s}.safetensors")),
        };
        let t = Instant::now();
        let s = train::train(
            &cat,
            &opts,
            &out,
            false,
            &device,
            ProgressMode::Quiet,
            &mut |e| {
                if let train::TrainEvent::Epoch(e) = e {
                    eprintln!(
                        "{arch} epoch {}: loss {:.4} acc {:.3} valid MAP {:.2} ({:.0} triplets/s)",
                        e.epoch,
                        e.loss,
                        e.triplet_accuracy,
                        e.valid_map.unwrap_or(f64::NAN),
                        e.triplets_per_second
                    );
                }
            },
        )?;
        let train_seconds = t.elapsed().as_secs_f64();
        let model = Model::load(&s.best_model, &device)?;
        let m = train::evaluate(&model, &cat, "test", ProgressMode::Quiet)?;
        random.get_or_insert((m.random_per_attribute.clone(), m.random_overall));
        let tps = s.log.iter().map(|e| e.triplets).sum::<usize>() as f64
            / s.log.iter().map(|e| e.seconds).sum::<f64>();
        rows.push(Row {
            arch,
            per_attribute: m.per_attribute.iter().map(|(&a, &(v, _))| (a, v)).collect(),
            overall: m.overall,
            best_epoch: s.best_epoch,
            train_seconds,
            triplets_per_second: tps,
        });
        eprintln!("{arch}: test MAP {:.2} in {train_seconds:.0} s", m.overall);
    }

    // The table: attributes as columns, as in the papers.
    let short: Vec<String> = names.iter().map(|n| n.chars().take(9).collect()).collect();
    print!("\n{:<12}", "test MAP %");
    for s in &short {
        print!(" {s:>9}");
    }
    println!(
        " {:>8} {:>5} {:>8} {:>9}",
        "overall", "best", "train s", "trip/s"
    );
    if let Some((per, overall)) = &random {
        print!("{:<12}", "random");
        for a in 0..names.len() {
            print!(" {:>9.2}", per.get(&a).copied().unwrap_or(f64::NAN));
        }
        println!(" {overall:>8.2}");
    }
    for r in &rows {
        print!("{:<12}", r.arch.name());
        for a in 0..names.len() {
            print!(
                " {:>9.2}",
                r.per_attribute.get(&a).copied().unwrap_or(f64::NAN)
            );
        }
        println!(
            " {:>8.2} {:>5} {:>8.0} {:>9.0}",
            r.overall,
            r.best_epoch.map_or("-".into(), |e| e.to_string()),
            r.train_seconds,
            r.triplets_per_second
        );
    }
    println!(
        "(local attributes: neckline, sleeve_length, garment_length, collar, silhouette; \
         global: colour, pattern)"
    );
    Ok(())
}
