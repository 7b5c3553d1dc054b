//! `tailor eval map` and `tailor eval triplets`: exact evaluation of per-attribute vectors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::Output;
use tailor::catalog;
use tailor::eval::index_source::SetGraphSearch;
use tailor::eval::source::{self, NpyVectors};
use tailor::eval::{evaluate_map, evaluate_triplets, MapOptions, NeighbourSearch, VectorSource};
use tailor::index::IndexSet;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// MAP per attribute (exact inner-product ranking of every candidate), the random
    /// baseline, precision/recall/nDCG@k and a per-value breakdown. Ties rank by
    /// candidate-list order.
    Map(MapArgs),
    /// Triplet accuracy per condition: the fraction of (a, b, c) with s(a,c) > s(a,b).
    Triplets(TripletArgs),
}

/// Where the vectors come from: an index, or .npy files with their ids.
#[derive(Args, Debug)]
pub struct VectorArgs {
    /// Index directory or segment set (as `tailor embed` or `tailor index build` writes it).
    #[arg(long, conflicts_with_all = ["vectors", "ids"], required_unless_present = "vectors")]
    pub index: Option<PathBuf>,
    /// Vectors of one attribute: ATTR=FILE.npy (float32, one row per id of --ids).
    /// Repeat for every attribute.
    #[arg(long = "vectors", value_name = "ATTR=FILE.npy", requires = "ids")]
    pub vectors: Vec<String>,
    /// Item ids, one per line, naming the rows of every --vectors file.
    #[arg(long, value_name = "IDS.txt")]
    pub ids: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MapArgs {
    #[command(flatten)]
    pub source: VectorArgs,
    /// Catalog whose split lists give queries and candidates.
    #[arg(long, conflicts_with_all = ["queries", "candidates"], required_unless_present = "queries")]
    pub catalog: Option<PathBuf>,
    /// Evaluation split of the catalog.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Queries: lines `item_id attribute value`.
    #[arg(long, requires = "candidates")]
    pub queries: Option<PathBuf>,
    /// Candidates: lines `item_id attribute value` (their order is the tie order).
    #[arg(long, requires = "queries")]
    pub candidates: Option<PathBuf>,
    /// Only these attributes (repeatable); default: every attribute with queries.
    #[arg(long = "attribute", value_name = "NAME")]
    pub attributes: Vec<String>,
    /// Cut-offs for precision, recall and nDCG.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50", value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    pub k: Vec<usize>,
    /// Print the per-value breakdown (MAP, top-1 accuracy, confusions) of each attribute.
    #[arg(long)]
    pub values: bool,
    /// Most queries scored per block (memory: threads x block x candidates floats,
    /// capped at 64 MiB per thread).
    #[arg(long, default_value_t = 192, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    pub query_block: usize,
    /// Also compute MAP from the index's HNSW top-k lists (candidates not returned rank
    /// last) and recall@k against exact ranking. Needs --index.
    #[arg(long, requires = "index")]
    pub ann: bool,
    /// Graph search breadth for --ann.
    #[arg(long, default_value_t = 64, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    pub ef: usize,
    /// Neighbours asked for per query with --ann.
    #[arg(long, default_value_t = 100, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    pub ann_k: usize,
}

#[derive(Args, Debug)]
pub struct TripletArgs {
    #[command(flatten)]
    pub source: VectorArgs,
    /// Catalog with triplet lists (Zappos50k / CSN layout).
    #[arg(
        long,
        conflicts_with = "triplets",
        required_unless_present = "triplets"
    )]
    pub catalog: Option<PathBuf>,
    /// Split of the catalog's triplet lists (train, valid, test).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Triplets: lines `a b c condition` (item ids; a is closer to c than to b).
    #[arg(long)]
    pub triplets: Option<PathBuf>,
}

pub fn run(cmd: EvalCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Map(args) => map(args, out),
        EvalCommand::Triplets(args) => triplets(args, out),
    }
}

fn open_source(args: &VectorArgs) -> anyhow::Result<Box<dyn VectorSource>> {
    if let Some(dir) = &args.index {
        return Ok(Box::new(IndexSet::open_any(dir)?));
    }
    let Some(ids) = &args.ids else {
        bail!("give --index DIR, or --vectors ATTR=FILE.npy with --ids IDS.txt");
    };
    let mut files = Vec::new();
    for spec in &args.vectors {
        let Some((attr, path)) = spec.split_once('=') else {
            bail!("--vectors {spec:?}: expected ATTR=FILE.npy");
        };
        if attr.is_empty() || path.is_empty() {
            bail!("--vectors {spec:?}: expected ATTR=FILE.npy");
        }
        files.push((attr.to_string(), PathBuf::from(path)));
    }
    Ok(Box::new(NpyVectors::open(ids, &files)?))
}

fn map(args: MapArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let source = open_source(&args.source)?;
    let mut sets = match (&args.catalog, &args.queries, &args.candidates) {
        (Some(path), _, _) => {
            let cat = catalog::open(path)?;
            source::sets_from_catalog(&cat, &args.split, source.as_ref())?
        }
        (None, Some(q), Some(c)) => source::sets_from_lists(q, c, source.as_ref())?,
        _ => bail!("give --catalog, or --queries with --candidates"),
    };
    if !args.attributes.is_empty() {
        for a in &args.attributes {
            if !sets.iter().any(|s| &s.name == a) {
                bail!(
                    "--attribute {a:?}: no queries for it (attributes with queries: {})",
                    sets.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        sets.retain(|s| args.attributes.contains(&s.name));
    }
    if sets.is_empty() {
        bail!("no attribute has queries to evaluate");
    }
    let options = MapOptions {
        ks: args.k.clone(),
        query_block: args.query_block,
        ann_k: args.ann_k,
        progress: out.progress,
        ..MapOptions::default()
    };
    let index = match (&args.source.index, args.ann) {
        (Some(dir), true) => Some(IndexSet::open_any(dir)?),
        _ => None,
    };
    let searcher = index
        .as_ref()
        .map(|set| SetGraphSearch { set, ef: args.ef });
    let report = evaluate_map(
        source.as_ref(),
        &sets,
        searcher.as_ref().map(|s| s as &dyn NeighbourSearch),
        &options,
    )
    .context("evaluation failed")?;
    if out.json {
        out.print_json(&report)?;
    } else {
        print!("{}", report.table());
        println!(
            "MAP {:.2}% over {} queries (random ranking: {:.2}%); ties rank by candidate order",
            100.0 * report.map,
            report.queries,
            100.0 * report.random_map
        );
        for a in report
            .attributes
            .iter()
            .filter(|a| a.queries_without_relevant > 0)
        {
            println!(
                "note: {}: {} queries have no relevant candidate (AP 0)",
                a.name, a.queries_without_relevant
            );
        }
        for a in report.attributes.iter().filter(|a| a.skipped_items > 0) {
            println!(
                "note: {}: {} queries and candidates skipped (removed from the index)",
                a.name, a.skipped_items
            );
        }
        if args.values {
            for a in &report.attributes {
                println!();
                print!("{}", report.value_table(a, 3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn triplets(args: TripletArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let source = open_source(&args.source)?;
    let conditions = match (&args.catalog, &args.triplets) {
        (Some(path), _) => {
            let cat = catalog::open(path)?;
            source::triplets_from_catalog(&cat, &args.split, source.as_ref())?
        }
        (None, Some(file)) => source::triplets_from_file(file, source.as_ref())?,
        _ => bail!("give --catalog or --triplets"),
    };
    let report = evaluate_triplets(source.as_ref(), &conditions)?;
    if out.json {
        out.print_json(&report)?;
    } else {
        print!("{}", report.table());
        let ties: usize = report.conditions.iter().map(|c| c.ties).sum();
        if ties > 0 {
            println!("note: {ties} triplets have s(a,c) == s(a,b) and count as wrong");
        }
    }
    Ok(ExitCode::SUCCESS)
}
