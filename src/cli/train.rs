//! `tailor train`: learn a model of the ASEN family from a labelled catalog.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::Output;
use tailor::catalog;
use tailor::model::{Arch, BackboneConfig, Model};
use tailor::train::{self, SplitMap, TrainEvent, TrainOptions, TrainSummary, TripletSource};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Catalog directory or manifest (.csv / .jsonl) with a train split.
    #[arg(long)]
    catalog: PathBuf,
    /// Architecture: asen, asen-v2, ag-man, csn, triplet (or asen-no-asa, asen-no-aca).
    #[arg(long, default_value = "asen")]
    arch: String,
    /// ASEN without attribute-aware spatial attention (ablation).
    #[arg(long)]
    no_asa: bool,
    /// ASEN without attribute-aware channel attention (ablation).
    #[arg(long)]
    no_aca: bool,
    /// Output model file (the best epoch by validation MAP); the run's other files go beside it.
    #[arg(long)]
    out: PathBuf,
    /// Backbone: tiny (CPU-sized) or resnet50.
    #[arg(long, value_enum, default_value_t = BackboneArg::Tiny)]
    backbone: BackboneArg,
    /// Input side in pixels (default 64 for tiny, 224 for resnet50).
    #[arg(long, value_parser = super::args::positive_u32, allow_negative_numbers = true)]
    input_size: Option<u32>,
    /// Width of the attention spaces (default 16 for tiny, 512 for resnet50).
    #[arg(long, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    hidden_dim: Option<usize>,
    /// Passes over --triplets-per-epoch fresh triplets.
    #[arg(long, default_value_t = 10, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    epochs: usize,
    /// Triplets per optimisation step.
    #[arg(long, default_value_t = 16, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-4, value_parser = super::args::positive_f64, allow_negative_numbers = true)]
    lr: f64,
    /// Triplet loss margin (distance the negative must lie beyond the positive).
    #[arg(long, default_value_t = 0.2, value_parser = super::args::positive_f64, allow_negative_numbers = true)]
    margin: f64,
    /// Fresh triplets drawn per epoch.
    #[arg(long, default_value_t = 10_000, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    triplets_per_epoch: usize,
    /// Multiply the learning rate by --decay every --step-size epochs.
    #[arg(long, default_value_t = 1, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    step_size: usize,
    /// Learning-rate factor applied every --step-size epochs, in (0, 1].
    #[arg(long, default_value_t = 0.985, value_parser = super::args::decay, allow_negative_numbers = true)]
    decay: f64,
    /// Random seed (initial weights, triplet sampling, flips): the same seed repeats a run.
    #[arg(long, default_value_t = 0, value_parser = super::args::seed, allow_negative_numbers = true)]
    seed: u64,
    /// cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
    /// Backbone weights (torchvision names, safetensors), e.g. an ImageNet ResNet-50.
    #[arg(long)]
    backbone_init: Option<PathBuf>,
    /// Start from this tailor model file instead of a fresh model.
    #[arg(long)]
    init_model: Option<PathBuf>,
    /// Train the heads only, from backbone maps cached once (both flips) beside --out.
    #[arg(long)]
    freeze_backbone: bool,
    /// Feature cache file for --freeze-backbone (default: beside --out). Runs with the same
    /// backbone weights can share it.
    #[arg(long)]
    feature_cache: Option<PathBuf>,
    /// Triplet source: labels (the papers' sampling), lists (the catalog's train triplet
    /// lists) or auto (lists when the catalog has them).
    #[arg(long, value_enum, default_value_t = TripletsArg::Auto)]
    triplets: TripletsArg,
    /// Skip the validation MAP after each epoch (the last epoch is then the model).
    #[arg(long)]
    no_validate: bool,
    /// After training, evaluate the best model on the test split (MAP and random baseline).
    #[arg(long)]
    test: bool,
    /// Continue the stopped run whose files sit beside --out (same options; --epochs may grow).
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackboneArg {
    Tiny,
    Resnet50,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TripletsArg {
    Auto,
    Labels,
    Lists,
}

fn arch(args: &TrainArgs) -> anyhow::Result<Arch> {
    let arch: Arch = args.arch.parse()?;
    Ok(match (arch, args.no_asa, args.no_aca) {
        (a, false, false) => a,
        (Arch::Asen, true, false) => Arch::AsenNoAsa,
        (Arch::Asen, false, true) => Arch::AsenNoAca,
        (Arch::Asen, true, true) => bail!("--no-asa and --no-aca together leave no attention"),
        (a, _, _) => bail!("--no-asa / --no-aca are ablations of asen, not of {a}"),
    })
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    summary: TrainSummary,
    test: Option<TestReport>,
}

#[derive(Serialize)]
struct TestReport {
    map: f64,
    random_map: f64,
    per_attribute: Vec<(String, f64, f64)>,
}

pub fn run(args: TrainArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let opts = TrainOptions {
        arch: arch(&args)?,
        backbone: match args.backbone {
            BackboneArg::Tiny => BackboneConfig::tiny(),
            BackboneArg::Resnet50 => BackboneConfig::Resnet50,
        },
        input_size: args.input_size,
        hidden_dim: args.hidden_dim,
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        margin: args.margin,
        triplets_per_epoch: args.triplets_per_epoch,
        step_size: args.step_size,
        decay: args.decay,
        seed: args.seed,
        freeze_backbone: args.freeze_backbone,
        backbone_init: args.backbone_init.clone(),
        init_model: args.init_model.clone(),
        triplets: match args.triplets {
            TripletsArg::Auto => TripletSource::Auto,
            TripletsArg::Labels => TripletSource::Labels,
            TripletsArg::Lists => TripletSource::Lists,
        },
        validate: !args.no_validate,
        feature_cache: args.feature_cache.clone(),
    };
    let device = args.device.open()?;
    let cat = catalog::open(&args.catalog)?;
    let mut printer = EventPrinter::new(out.quiet);
    let summary = train::train(
        &cat,
        &opts,
        &args.out,
        args.resume,
        &device,
        out.progress,
        &mut |e| printer.print(e),
    )
    .with_context(|| format!("training on {}", args.catalog.display()))?;

    let test = if args.test {
        let model = Model::load(&summary.best_model, &device)?;
        let m = train::evaluate(&model, &cat, "test", out.progress)?;
        Some(test_report(&m, &model.config().attributes))
    } else {
        None
    };
    if out.json {
        out.print_json(&Report { summary, test })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "trained {} for {} epochs in {:.1} s ({} parameters{}){}",
        summary.arch,
        summary.epochs,
        summary.seconds,
        summary.parameters_trained,
        summary
            .cache_seconds
            .map(|s| format!(", feature cache {s:.1} s"))
            .unwrap_or_default(),
        summary
            .resumed_from_epoch
            .map(|e| format!(", resumed after epoch {e}"))
            .unwrap_or_default()
    );
    if summary.bn_recalibrated {
        println!("the fresh frozen trunk's batch-norm statistics were set from training images");
    }
    match (summary.best_epoch, summary.best_valid_map) {
        (Some(e), Some(m)) => println!("best validation MAP {m:.2} % at epoch {e}"),
        _ => println!("no validation lists: the model is the last epoch's"),
    }
    println!("model: {}", summary.best_model.display());
    println!("last:  {}", summary.last_model.display());
    println!("log:   {}", summary.log_csv.display());
    if let Some(t) = test {
        println!("\ntest MAP (%)        model   random");
        for (name, m, r) in &t.per_attribute {
            println!("  {name:<16} {m:>7.2}  {r:>7.2}");
        }
        println!("  {:<16} {:>7.2}  {:>7.2}", "overall", t.map, t.random_map);
    }
    Ok(ExitCode::SUCCESS)
}

fn test_report(m: &SplitMap, names: &[String]) -> TestReport {
    TestReport {
        map: m.overall,
        random_map: m.random_overall,
        per_attribute: m
            .per_attribute
            .iter()
            .map(|(&a, &(map, _))| {
                (
                    names[a].clone(),
                    map,
                    m.random_per_attribute.get(&a).copied().unwrap_or(f64::NAN),
                )
            })
            .collect(),
    }
}

/// Progress on stderr: a rewritten line on a terminal, a line every 10 s otherwise, and
/// one line per epoch.
struct EventPrinter {
    quiet: bool,
    tty: bool,
    last: Instant,
}

impl EventPrinter {
    fn new(quiet: bool) -> Self {
        EventPrinter {
            quiet,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn print(&mut self, event: &TrainEvent) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        match event {
            TrainEvent::Phase(p) => {
                let _ = writeln!(err, "{p}...");
            }
            TrainEvent::Batch(b) => {
                let every = if self.tty {
                    Duration::from_millis(250)
                } else {
                    Duration::from_secs(10)
                };
                if self.last.elapsed() < every && b.done < b.total {
                    return;
                }
                self.last = Instant::now();
                let line = format!(
                    "epoch {}/{} {}/{} loss {:.4} acc {:.3} {:.0} img/s ETA {:.0} s",
                    b.epoch,
                    b.epochs,
                    b.done,
                    b.total,
                    b.loss,
                    b.triplet_accuracy,
                    b.images_per_second,
                    b.eta_seconds
                );
                let _ = if self.tty {
                    write!(err, "\r{line}\x1b[K")
                } else {
                    writeln!(err, "{line}")
                };
            }
            TrainEvent::Epoch(e) => {
                if self.tty {
                    let _ = write!(err, "\r\x1b[K");
                }
                let _ = writeln!(
                    err,
                    "epoch {}: loss {:.4} acc {:.3} lr {:.2e} {:.1} s ({:.0} triplets/s){}{}",
                    e.epoch,
                    e.loss,
                    e.triplet_accuracy,
                    e.lr,
                    e.seconds,
                    e.triplets_per_second,
                    e.valid_map
                        .map(|m| format!(" valid MAP {m:.2} %"))
                        .unwrap_or_default(),
                    if e.best { " (best)" } else { "" }
                );
            }
        }
    }
}
