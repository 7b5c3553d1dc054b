use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::index::read_ids;
use super::Output;
use tailor::index::{Hit, IndexSet};
use tailor::npy;
use tailor::query::{LabelFilter, Query, Target, Weighted};

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Index directory, or segment set (every present segment is searched).
    #[arg(long)]
    index: PathBuf,
    /// Attribute, optionally weighted (ATTR or ATTR=WEIGHT); repeat for a weighted sum.
    #[arg(long = "attr", required = true, value_parser = super::args::weighted)]
    attrs: Vec<Weighted>,
    /// Query by an item already in the index.
    #[arg(long, conflicts_with = "vector")]
    item: Option<String>,
    /// Query by vector(s): a float32 .npy with one row per --attr (or one row for all).
    #[arg(long, conflicts_with = "image")]
    vector: Option<PathBuf>,
    /// Query by an image file: embedded with the model recorded in the index manifest.
    #[arg(long, conflicts_with = "item")]
    image: Option<PathBuf>,
    /// Model file for --image (default: the path recorded in the index); its identity
    /// must equal the one recorded.
    #[arg(long, requires = "image")]
    model: Option<PathBuf>,
    /// Device for --image: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", requires = "image", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
    /// Precision for --image on the CPU: f32, bf16 or auto (see `tailor embed`).
    #[arg(long, default_value = "f32", requires = "image")]
    precision: tailor::model::Precision,
    /// Number of results (default 10; with --rerank, all the listed items).
    #[arg(short, long, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    k: Option<usize>,
    /// Graph search breadth (higher: more exact, slower).
    #[arg(long, default_value_t = 64, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    ef: usize,
    /// Brute force over the mapped vectors instead of the graphs.
    #[arg(long)]
    exact: bool,
    /// Only items with this label (ATTR=VALUE); repeat to combine.
    #[arg(long = "where", value_name = "ATTR=VALUE", value_parser = super::args::condition)]
    filters: Vec<(String, String)>,
    /// Re-rank these items (one id per line) instead of searching the whole index.
    #[arg(long)]
    rerank: Option<PathBuf>,
    /// Let the query item appear in its own results.
    #[arg(long)]
    include_self: bool,
}

#[derive(Serialize)]
struct SearchReport<'a> {
    index: &'a std::path::Path,
    attributes: Vec<(String, f32)>,
    item: Option<&'a str>,
    mode: &'a str,
    results: Vec<ResultRow<'a>>,
}

#[derive(Serialize)]
struct ResultRow<'a> {
    rank: usize,
    id: &'a str,
    score: f32,
    row: usize,
}

pub fn run(args: SearchArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let ix = IndexSet::open_any(&args.index)?;
    if !ix.missing().is_empty() {
        eprintln!(
            "note: {}: searching {} of {} segments; missing: {}",
            args.index.display(),
            ix.segments().len(),
            ix.segment_count(),
            join_numbers(ix.missing())
        );
    }
    let attrs = args.attrs.clone();
    let target = match (&args.item, &args.vector, &args.image) {
        (Some(id), None, None) => Target::Item(id.clone()),
        (None, Some(p), None) => {
            let m = npy::read_f32_matrix(p)?;
            Target::Vectors((0..m.rows).map(|r| m.row(r).to_vec()).collect())
        }
        (None, None, Some(image)) => {
            let device = args.device.open()?;
            let mut model =
                tailor::encode::model_for_index(ix.first(), args.model.as_deref(), &device)
                    .context(
                        "--image needs the index's model (--model FILE overrides the recorded one)",
                    )?;
            model
                .set_precision(args.precision)
                .with_context(|| format!("--precision {}", args.precision))?;
            let names: Vec<String> = attrs.iter().map(|w| w.attr.clone()).collect();
            Target::Vectors(tailor::encode::encode_image(&model, image, &names)?)
        }
        _ => bail!("give the query as --item ID, --vector FILE.npy or --image FILE"),
    };
    let filter = if args.filters.is_empty() {
        None
    } else {
        Some(LabelFilter::new(ix.first(), &args.filters)?)
    };
    let (hits, mode): (Vec<Hit>, &str) = match &args.rerank {
        Some(p) => {
            let ids = read_ids(p)?;
            let mut h = ix.rerank(&target, &attrs, &ids, filter.as_ref())?;
            if let Some(k) = args.k {
                h.truncate(k);
            }
            (h, "rerank")
        }
        None => {
            let k = args.k.unwrap_or(10);
            if k > ix.live_len() && !out.json {
                eprintln!(
                    "note: -k {k} is more than the index's {} items; at most {} results",
                    ix.live_len(),
                    ix.live_len()
                );
            }
            let q = Query {
                target,
                attrs: attrs.clone(),
                k,
                ef: args.ef,
                exact: args.exact,
                filter,
                include_self: args.include_self,
            };
            (ix.query(&q)?, if args.exact { "exact" } else { "hnsw" })
        }
    };
    if out.json {
        out.print_json(&SearchReport {
            index: &args.index,
            attributes: attrs.iter().map(|w| (w.attr.clone(), w.weight)).collect(),
            item: args.item.as_deref(),
            mode,
            results: hits
                .iter()
                .enumerate()
                .map(|(i, h)| ResultRow {
                    rank: i + 1,
                    id: &h.id,
                    score: h.score,
                    row: h.row,
                })
                .collect(),
        })?;
    } else {
        println!("{:>4}  {:>9}  id", "rank", "score");
        for (i, h) in hits.iter().enumerate() {
            println!("{:>4}  {:>9.5}  {}", i + 1, h.score, h.id);
        }
    }
    // An empty result is an answer, not a failure: exit 1 is kept for checks that find
    // problems (README, exit codes).
    Ok(ExitCode::SUCCESS)
}

/// `1, 3, 7`.
pub fn join_numbers(numbers: &[usize]) -> String {
    numbers
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
