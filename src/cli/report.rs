//! `tailor report`: one static HTML page with the evaluation and the pictures.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::show::{catalog_for, model_for};
use super::Output;
use tailor::index::{Index, MANIFEST_FILE};
use tailor::model::ModelRecord;
use tailor::show::report::{write_report, ReportRequest};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// Catalog with the split lists, labels and images (default: the recorded one).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Model for attention pictures (default: the one recorded in the index, if its file
    /// is there; a model whose identity differs from the recorded one is refused).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (index.html and the pictures).
    #[arg(long)]
    out: PathBuf,
    /// Evaluation split.
    #[arg(long, default_value = "test")]
    split: String,
    /// Cut-offs for precision, recall and nDCG.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    k: Vec<usize>,
    /// Graph search breadth for the HNSW MAP and the sheets.
    #[arg(long, default_value_t = 64)]
    ef: usize,
    /// Neighbours asked for per query for the HNSW MAP.
    #[arg(long, default_value_t = 100)]
    ann_k: usize,
    /// Results per retrieval sheet.
    #[arg(long, default_value_t = 8)]
    sheet_k: usize,
    /// Images shown with attention panels.
    #[arg(long, default_value_t = 2)]
    attention_images: usize,
    /// Most items per embedding map.
    #[arg(long, default_value_t = 2000)]
    max_points: usize,
    /// Seed of the sheet queries, the map samples and projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device for the model: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
}

pub fn run(args: ReportArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let ix = Index::open(&args.index)?;
    let Some(cat) = catalog_for(&ix, args.catalog.as_deref())? else {
        bail!(
            "{}: the index records no catalog; give --catalog",
            args.index.display()
        );
    };
    let recorded_model_exists = ModelRecord::from_json(ix.model(), &ix.dir().join(MANIFEST_FILE))?
        .and_then(|r| r.path)
        .is_some_and(|p| p.is_file());
    let model = if args.model.is_some() || recorded_model_exists {
        Some(model_for(&ix, args.model.as_deref(), args.device)?)
    } else {
        None
    };
    let summary = write_report(&ReportRequest {
        index: &ix,
        catalog: &cat,
        model: model.as_ref(),
        out: &args.out,
        split: args.split.clone(),
        ks: args.k.clone(),
        ef: args.ef,
        ann_k: args.ann_k,
        k: args.sheet_k,
        attention_images: args.attention_images,
        max_points: args.max_points,
        seed: args.seed,
        progress: out.progress,
    })?;
    if out.json {
        out.print_json(&summary)?;
    } else {
        for n in &summary.notes {
            println!("note: {n}");
        }
        println!(
            "wrote {} and {} pictures beside it",
            summary.html.display(),
            summary.files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
