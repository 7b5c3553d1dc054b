//! `tailor show search|attention|space`: pictures of retrieval results, attention maps and
//! embedding spaces (the drawing lives in `tailor::show`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::Output;
use tailor::catalog::{self, Catalog};
use tailor::index::{Index, MANIFEST_FILE};
use tailor::model::{Model, ModelRecord};
use tailor::show::sheet::{SheetQuery, SheetRequest};
use tailor::show::space::SpaceRequest;
use tailor::show::{attention, draw, sheet, space};

#[derive(Subcommand, Debug)]
pub enum ShowCommand {
    /// A retrieval sheet: the query, the top-k framed green/red by ground truth, with
    /// scores, ids and value names; --explain overlays the attribute's attention.
    Search(SearchArgs),
    /// One panel per attribute with the model's spatial attention over an image.
    Attention(AttentionArgs),
    /// A 2-D map (PCA) of one attribute's embedding space coloured by value.
    Space(SpaceArgs),
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// Query by an item of the index.
    #[arg(long, conflicts_with = "image", required_unless_present = "image")]
    item: Option<String>,
    /// Query by an image file (embedded with the index's model).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Attribute whose space is searched.
    #[arg(long)]
    attr: String,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Catalog with the images (default: the one recorded by `tailor embed`).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Overlay the attribute's spatial attention on the query and every result.
    #[arg(long)]
    explain: bool,
    /// Model file for --image and --explain (default: the one recorded in the index; its
    /// identity must equal the recorded one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Device for the model: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
    /// Graph search breadth.
    #[arg(long, default_value_t = 64)]
    ef: usize,
    /// Brute force instead of the graph.
    #[arg(long)]
    exact: bool,
    /// Tile size in pixels (the picture grows with it).
    #[arg(long, default_value_t = 160)]
    tile: u32,
    /// Exact picture size WIDTHxHEIGHT (tiles shrink to fit).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
}

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Image file.
    #[arg(long)]
    image: PathBuf,
    /// Attributes to show (repeatable or comma-separated; default: every one).
    #[arg(long = "attr", value_delimiter = ',')]
    attrs: Vec<String>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::args::device)]
    device: tailor::model::DeviceSpec,
    /// Panel size in pixels.
    #[arg(long, default_value_t = 160)]
    tile: u32,
    /// Exact picture size WIDTHxHEIGHT (panels shrink to fit).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    /// Principal component analysis (deterministic for a seed).
    Pca,
}

#[derive(Args, Debug)]
pub struct SpaceArgs {
    /// Index directory.
    #[arg(long)]
    index: PathBuf,
    /// Attribute whose space is drawn.
    #[arg(long)]
    attr: String,
    /// Catalog for value labels when the index carries none (default: the recorded one,
    /// when the index has no labels).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Output file: .png or .svg.
    #[arg(long)]
    out: PathBuf,
    /// Projection.
    #[arg(long, value_enum, default_value = "pca")]
    method: Method,
    /// Most items drawn (a seeded sample of the index).
    #[arg(long, default_value_t = 2000)]
    max_points: usize,
    /// Seed of the sample and of the projection's start.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Picture size WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size, default_value = "900x700")]
    size: (u32, u32),
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    draw::parse_size(s).map_err(|e| e.to_string())
}

pub fn run(cmd: ShowCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ShowCommand::Search(a) => search(a, out),
        ShowCommand::Attention(a) => show_attention(a, out),
        ShowCommand::Space(a) => show_space(a, out),
    }
}

/// The catalog given, else the one `tailor embed` recorded in the index.
pub fn catalog_for(ix: &Index, given: Option<&Path>) -> anyhow::Result<Option<Catalog>> {
    let recorded =
        ModelRecord::from_json(ix.model(), &ix.dir().join(MANIFEST_FILE))?.and_then(|r| r.catalog);
    match (given, recorded) {
        (Some(p), _) => Ok(Some(catalog::open(p)?)),
        (None, Some(p)) => Ok(Some(catalog::open(&p).with_context(|| {
            format!(
                "the catalog recorded in {} cannot be opened; give --catalog",
                ix.dir().display()
            )
        })?)),
        (None, None) => Ok(None),
    }
}

/// The index's model (identity checked), from `--model` or the recorded path.
pub fn model_for(
    ix: &Index,
    given: Option<&Path>,
    device: tailor::model::DeviceSpec,
) -> anyhow::Result<Model> {
    let device = device.open()?;
    Ok(tailor::encode::model_for_index(ix, given, &device)?)
}

#[derive(Serialize)]
struct Written<'a, T: Serialize> {
    out: &'a Path,
    width: u32,
    height: u32,
    #[serde(flatten)]
    details: T,
}

fn search(args: SearchArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let ix = Index::open(&args.index)?;
    let Some(cat) = catalog_for(&ix, args.catalog.as_deref())? else {
        bail!(
            "{}: the index records no catalog to take images from; give --catalog",
            args.index.display()
        );
    };
    let model = if args.explain || args.image.is_some() {
        Some(model_for(&ix, args.model.as_deref(), args.device)?)
    } else {
        None
    };
    let query = match (&args.item, &args.image) {
        (Some(id), None) => SheetQuery::Item(id.clone()),
        (None, Some(p)) => SheetQuery::Image(p.clone()),
        _ => bail!("give the query as --item ID or --image FILE"),
    };
    let (img, summary) = sheet::search_sheet(&SheetRequest {
        index: &ix,
        catalog: &cat,
        model: model.as_ref(),
        query,
        attr: args.attr.clone(),
        k: args.k,
        ef: args.ef,
        exact: args.exact,
        explain: args.explain,
        tile: args.tile,
        size: args.size,
    })?;
    draw::save_png(&img, &args.out)?;
    if out.json {
        out.print_json(&Written {
            out: &args.out,
            width: img.width(),
            height: img.height(),
            details: &summary,
        })?;
    } else {
        println!(
            "wrote {} ({}x{}): {} results for {} by {}",
            args.out.display(),
            img.width(),
            img.height(),
            summary.results.len(),
            summary.query,
            summary.attribute
        );
        for n in &summary.notes {
            println!("note: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_attention(args: AttentionArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let device = args.device.open()?;
    let m = Model::load(&args.model, &device)?;
    let (img, panels) =
        attention::attention_sheet(&m, &args.image, &args.attrs, args.tile, args.size)?;
    draw::save_png(&img, &args.out)?;
    if out.json {
        #[derive(Serialize)]
        struct Details<'a> {
            model: &'a Path,
            arch: String,
            image: &'a Path,
            panels: Vec<attention::PanelSummary>,
        }
        out.print_json(&Written {
            out: &args.out,
            width: img.width(),
            height: img.height(),
            details: Details {
                model: &args.model,
                arch: m.config().arch.to_string(),
                image: &args.image,
                panels,
            },
        })?;
    } else {
        println!(
            "wrote {} ({}x{}): {} attention panels",
            args.out.display(),
            img.width(),
            img.height(),
            panels.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show_space(args: SpaceArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let Method::Pca = args.method;
    let ix = Index::open(&args.index)?;
    // The recorded catalog is only needed when the index has no labels of its own.
    let has_labels = ix
        .schema()
        .is_some_and(|s| s.attribute_index(&args.attr).is_ok());
    let cat = if args.catalog.is_some() || !has_labels {
        catalog_for(&ix, args.catalog.as_deref())?
    } else {
        None
    };
    let summary = space::space_map(
        &SpaceRequest {
            index: &ix,
            catalog: cat.as_ref(),
            attr: args.attr.clone(),
            max_points: args.max_points,
            seed: args.seed,
            size: args.size,
        },
        &args.out,
    )?;
    if out.json {
        out.print_json(&Written {
            out: &args.out,
            width: args.size.0,
            height: args.size.1,
            details: &summary,
        })?;
    } else {
        println!(
            "wrote {} ({}x{}): {} of {} items, PCA {:.1}% + {:.1}% of variance{}",
            args.out.display(),
            args.size.0,
            args.size.1,
            summary.points,
            summary.items,
            100.0 * summary.explained_variance[0],
            100.0 * summary.explained_variance[1],
            if summary.labelled {
                ""
            } else {
                " (no labels: one colour)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
