use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::index::GraphArgs;
use super::Output;
use tailor::embed::{self, EmbedOptions, Shard};
use tailor::model::{self, Model};

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model file (safetensors written by `tailor model` or `tailor train`).
    #[arg(long)]
    model: PathBuf,
    /// Catalog directory or manifest.
    #[arg(long)]
    catalog: PathBuf,
    /// Index directory to publish (replaced atomically when it exists).
    #[arg(long)]
    out: PathBuf,
    /// Attributes to embed, comma-separated (default: all of the model's).
    #[arg(long, value_delimiter = ',')]
    attrs: Option<Vec<String>>,
    /// Images per model batch.
    #[arg(long, default_value_t = 32, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
    /// Trunk precision on the CPU: f32, bf16 (bf16 products with f32 accumulation; needs
    /// AVX512-BF16) or auto (bf16 where the CPU has it).
    #[arg(long, default_value = "f32")]
    precision: model::Precision,
    /// Embed only the K-th of N deterministic parts of the catalog (by a hash of the id)
    /// and publish it as segment K of the segment set at --out.
    #[arg(long, value_name = "K/N", value_parser = super::args::shard)]
    shard: Option<Shard>,
    /// When another embed job runs on the same output, wait for it to finish instead of
    /// failing at once.
    #[arg(long)]
    wait: bool,
    /// Fail when more than this fraction of the items is rejected (bad images).
    #[arg(long, default_value_t = 0.01, value_parser = super::args::fraction, allow_negative_numbers = true)]
    max_reject_rate: f64,
    #[command(flatten)]
    graph: GraphArgs,
    /// Seconds between checkpoints (fsync of the staged rows); 0 = after every batch.
    #[arg(long, default_value_t = 2.0, value_parser = super::args::non_negative_f64, allow_negative_numbers = true)]
    checkpoint_secs: f64,
    /// Staging directory for the resumable job (default: OUT.embed-work beside OUT).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub fn run(args: EmbedArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let device = args.device.open()?;
    let mut model = Model::load(&args.model, &device)?;
    let precision = model
        .set_precision(args.precision)
        .with_context(|| format!("--precision {}", args.precision))?;
    let catalog = tailor::catalog::open_items(&args.catalog)?;
    let opts = EmbedOptions {
        attributes: args.attrs,
        batch: args.batch,
        shard: args.shard,
        max_reject_rate: args.max_reject_rate,
        params: args.graph.params(),
        work_dir: args.work_dir,
        model_path: args.model.clone(),
        checkpoint_every: std::time::Duration::from_secs_f64(args.checkpoint_secs.max(0.0)),
        progress: out.progress,
        wait: args.wait,
    };
    let s =
        embed::embed_items(&model, &catalog, &args.out, &opts).map_err(super::errors::flag_hint)?;
    if out.json {
        let mut v = serde_json::to_value(&s)?;
        v["precision"] = serde_json::to_value(precision)?;
        out.print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    if s.resumed_from > 0 {
        println!(
            "resumed after {} items done by an earlier run",
            s.resumed_from
        );
    }
    println!(
        "embedded {} of {} items ({} rejected) for {} attributes into {} in {:.1} s ({:.1} items/s)",
        s.embedded,
        s.selected_items,
        s.rejected,
        s.attributes.len(),
        s.segment.as_ref().unwrap_or(&s.out).display(),
        s.seconds,
        s.items_per_second
    );
    if let Some(k) = model.bf16_kernel() {
        println!("precision: {precision} ({k} kernel)");
    }
    let st = s.stage_seconds;
    println!(
        "stages (s): decode {:.2}, pre-process {:.2}, model {:.2}, write {:.2}, graph {:.2}",
        st.decode, st.preprocess, st.model, st.write, st.graph
    );
    if let Some(r) = &s.rejects_report {
        println!("rejects: {}", r.display());
    }
    Ok(ExitCode::SUCCESS)
}
