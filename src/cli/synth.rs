use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Output;
use tailor::catalog::synth::{self, SynthOptions};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory (created if needed).
    #[arg(long)]
    out: PathBuf,
    /// Number of items.
    #[arg(long, default_value_t = 1000, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    items: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64, value_parser = super::args::positive_u32, allow_negative_numbers = true)]
    size: u32,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 0, value_parser = super::args::seed, allow_negative_numbers = true)]
    seed: u64,
    /// Write JPEG images instead of PNG.
    #[arg(long)]
    jpeg: bool,
}

pub fn run(args: SynthArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let opts = SynthOptions {
        items: args.items,
        size: args.size,
        seed: args.seed,
        jpeg: args.jpeg,
    };
    let summary = synth::generate(&args.out, &opts, out.progress)?;
    if out.json {
        out.print_json(&summary)?;
    } else {
        println!(
            "wrote {} items ({} px, seed {}) to {} in {:.1} s: train {}, valid {}, test {}",
            summary.items,
            summary.size,
            summary.seed,
            summary.out.display(),
            summary.seconds,
            summary.train,
            summary.valid,
            summary.test
        );
    }
    Ok(ExitCode::SUCCESS)
}
