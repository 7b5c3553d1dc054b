use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::Serialize;

use super::Output;
use tailor::catalog::{self, Labels};
use tailor::index::{
    self, set, AttributeInput, BuildInput, BuildParams, CompactKind, Index, IndexSet, ItemLabels,
};
use tailor::model::ModelRecord;
use tailor::npy;

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Build an index from per-attribute float32 .npy matrices and an id list.
    Build {
        /// ATTR=FILE.npy (shape [items, dim]); repeat for each attribute.
        #[arg(long = "vectors", required = true)]
        vectors: Vec<String>,
        /// One external id per line, in the rows' order.
        #[arg(long)]
        ids: PathBuf,
        /// Index directory (created; an index already there is replaced atomically).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        graph: GraphArgs,
        /// Order of the rows in the index files: input (the id list's) or graph (near
        /// items of the first attribute's graph stored together: faster walks of graphs
        /// larger than the CPU caches; results are the same items).
        #[arg(long, default_value = "input")]
        row_order: index::RowOrder,
        /// Catalog whose labels to store for filtering (items matched by id).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// JSON file describing the model that produced the vectors (kept in the manifest).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Add items to an index (inserted into the existing graphs).
    #[command(after_help = "\
The vectors must cover every attribute of the index, one --vectors ATTR=FILE.npy each, \
with the index's dimensions and one row per id (`tailor index info DIR` lists them).

Example:
  tailor index add idx/ --vectors colour=new-colour.npy --vectors neckline=new-neckline.npy \\
      --ids new-ids.txt --catalog shop/manifest.csv")]
    Add {
        /// Index directory to add to.
        dir: PathBuf,
        /// ATTR=FILE.npy (float32, shape [new items, dim]); one for every attribute of the index.
        #[arg(long = "vectors", required = true)]
        vectors: Vec<String>,
        /// One id per line for the new rows, in the rows' order (ids already in the index are refused).
        #[arg(long)]
        ids: PathBuf,
        /// Catalog whose labels to store for the new items (matched by id), for --where filters.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Remove items (tombstones; `compact` reclaims their space).
    Remove {
        /// Index directory.
        dir: PathBuf,
        /// Item id to remove; repeatable.
        #[arg(long = "id")]
        id: Vec<String>,
        /// File with one id per line to remove.
        #[arg(long)]
        ids: Option<PathBuf>,
    },
    /// Rebuild the index without its removed items.
    Compact {
        /// Index directory.
        dir: PathBuf,
    },
    /// Describe an index, or a segment set (its present and missing segments).
    Info {
        /// Index directory or segment set.
        dir: PathBuf,
    },
    /// Check every file against its checksum (exit 1 when any fails); on a segment set,
    /// every segment, and exit 1 when one is missing.
    Verify {
        /// Index directory or segment set.
        dir: PathBuf,
    },
    /// Combine index segments or whole segment sets (e.g. from `tailor embed --shard
    /// K/N`) into one index: optional compaction of a set into one segment.
    Merge {
        /// Segment directories or segment sets (same model, attributes and dimensions).
        #[arg(required = true)]
        segments: Vec<PathBuf>,
        /// Index directory to publish.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        graph: GraphArgs,
    },
    /// Write one attribute's vectors and their ids (same row order).
    Export {
        /// Index directory.
        dir: PathBuf,
        /// Attribute whose vectors to write.
        #[arg(long)]
        attr: String,
        /// Output .npy file (float32, [items, dim]).
        #[arg(long)]
        out: PathBuf,
        /// Output id list (one id per line, the rows' order).
        #[arg(long)]
        ids_out: PathBuf,
        /// Also export removed items.
        #[arg(long)]
        include_removed: bool,
    },
}

/// Graph parameters shared by every command that builds graphs (index build and merge,
/// embed).
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// Graph neighbours per node (level 0 keeps 2*m).
    #[arg(long, default_value_t = 16, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    m: usize,
    /// Candidate list size while inserting.
    #[arg(long, default_value_t = 200, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
    ef_construction: usize,
    /// Compact copy for the graph walk: none, f16, int8, bit1 (1-bit codes) or bit4 (4-bit codes).
    #[arg(long, default_value = "int8")]
    compact: CompactKind,
    /// Re-scoring tier under a bit1 or bit4 walk: int8 (a quarter of the f32 rows' bytes,
    /// read for every candidate; its bound leaves few f32 rows to read) or none.
    #[arg(long, default_value = "none")]
    rescore: CompactKind,
}

impl GraphArgs {
    pub fn params(&self) -> BuildParams {
        BuildParams {
            m: self.m,
            ef_construction: self.ef_construction,
            compact: self.compact,
            rescore: self.rescore,
            ..BuildParams::default()
        }
    }
}

pub fn run(cmd: IndexCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        IndexCommand::Build {
            vectors,
            ids,
            out: dir,
            graph,
            row_order,
            catalog,
            model,
        } => {
            let ids = read_ids(&ids)?;
            let mats = read_vectors(&vectors)?;
            let labels = catalog.map(|c| catalog_labels(&c, &ids)).transpose()?;
            let model = model
                .map(|p| -> anyhow::Result<serde_json::Value> {
                    let text = std::fs::read(&p).with_context(|| format!("{}", p.display()))?;
                    let value: serde_json::Value = serde_json::from_slice(&text)
                        .with_context(|| format!("{}: not valid JSON", p.display()))?;
                    // Recorded verbatim, but the keys tailor reads back must be usable.
                    ModelRecord::from_json(Some(&value), &p)?;
                    Ok(value)
                })
                .transpose()?;
            let input = build_input(ids, &mats, labels, model);
            let summary =
                index::build_in_order(&dir, &input, &graph.params(), row_order, out.progress)?;
            print_summary(out, &summary, "built")
        }
        IndexCommand::Add {
            dir,
            vectors,
            ids,
            catalog,
        } => {
            let ids = read_ids(&ids)?;
            let mats = read_vectors(&vectors)?;
            let labels = catalog.map(|c| catalog_labels(&c, &ids)).transpose()?;
            let input = build_input(ids, &mats, labels, None);
            let summary = index::add(&dir, &input, out.progress)?;
            print_summary(out, &summary, "added to")
        }
        IndexCommand::Remove { dir, id, ids } => {
            let mut all = id;
            if let Some(p) = ids {
                all.extend(read_ids(&p)?);
            }
            if all.is_empty() {
                bail!("give the items to remove with --id or --ids");
            }
            let s = index::remove(&dir, &all)?;
            if out.json {
                out.print_json(&s)?;
            } else {
                println!(
                    "{}: removed {} items ({} were already removed); {} live items (generation {})",
                    dir.display(),
                    s.removed,
                    s.already_removed,
                    s.live,
                    s.generation
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IndexCommand::Compact { dir } => {
            let summary = index::compact(&dir, out.progress)?;
            print_summary(out, &summary, "compacted")
        }
        IndexCommand::Info { dir } if set::is_set(&dir) => set_info(&dir, out),
        IndexCommand::Info { dir } => info(&dir, out),
        IndexCommand::Merge {
            segments,
            out: dest,
            graph,
        } => {
            let segments = expand_sets(&segments)?;
            let summary = index::merge(&dest, &segments, &graph.params(), out.progress)?;
            print_summary(out, &summary, "merged")
        }
        IndexCommand::Verify { dir } if set::is_set(&dir) => set_verify(&dir, out),
        IndexCommand::Verify { dir } => {
            // Damage (the manifest's included) is a report, exit 1; an I/O error is exit 2.
            let mut report = index::verify_dir(&dir)?;
            if report.ok {
                match Index::open(&dir) {
                    Ok(ix) => report = ix.verify()?,
                    Err(e) => {
                        report.problems.push(e.to_string());
                        report.ok = false;
                    }
                }
            }
            if out.json {
                out.print_json(&report)?;
            } else {
                for f in &report.files {
                    let status = if f.ok { "ok" } else { "FAILED" };
                    let detail = if f.len != f.expected_len {
                        format!("length {} != {}", f.len, f.expected_len)
                    } else {
                        match f.crc32 {
                            Some(c) if c != f.expected_crc32 => {
                                format!("crc32 {c:08x} != {:08x}", f.expected_crc32)
                            }
                            _ => format!("crc32 {:08x}", f.expected_crc32),
                        }
                    };
                    println!("{status:6} {:28} {:>14} bytes  {detail}", f.name, f.len);
                }
                for p in &report.problems {
                    println!("problem: {p}");
                }
                println!(
                    "{}: {}",
                    dir.display(),
                    if report.ok {
                        "all checks hold"
                    } else {
                        "verification FAILED"
                    }
                );
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::errors::EXIT_PROBLEMS)
            })
        }
        IndexCommand::Export {
            dir,
            attr,
            out: npy_out,
            ids_out,
            include_removed,
        } => {
            let ix = IndexSet::open_any(&dir)?;
            let dim = ix.dim(&attr)?;
            let keep: Vec<usize> = (0..ix.len())
                .filter(|&r| include_removed || !ix.is_removed(r))
                .collect();
            // Row by row from each segment's mapped rows (a set is never concatenated).
            let rows = keep
                .iter()
                .map(|&r| ix.vector(&attr, r))
                .collect::<Result<Vec<_>, _>>()?;
            let file = std::fs::File::create(&npy_out)
                .with_context(|| format!("{}: cannot create", npy_out.display()))?;
            let mut w = std::io::BufWriter::new(file);
            npy::write_f32_matrix_to(
                &mut w,
                keep.len(),
                dim,
                rows.iter().flat_map(|r| r.iter().copied()),
            )
            .and_then(|_| std::io::Write::flush(&mut w))
            .with_context(|| format!("{}: cannot write", npy_out.display()))?;
            let mut text = String::new();
            for &r in &keep {
                text.push_str(ix.id(r).unwrap_or_default());
                text.push('\n');
            }
            std::fs::write(&ids_out, text)
                .with_context(|| format!("{}: cannot write", ids_out.display()))?;
            if out.json {
                out.print_json(&serde_json::json!({
                    "attribute": attr, "rows": keep.len(), "dim": dim,
                    "vectors": npy_out, "ids": ids_out,
                }))?;
            } else {
                println!(
                    "wrote {} x {dim} vectors of {attr:?} to {} and their ids to {}",
                    keep.len(),
                    npy_out.display(),
                    ids_out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(out: &Output, s: &index::BuildSummary, verb: &str) -> anyhow::Result<ExitCode> {
    if out.json {
        out.print_json(s)?;
    } else {
        let attrs: Vec<String> = s
            .attributes
            .iter()
            .map(|a| format!("{} ({}-d, graph {:.1} s)", a.name, a.dim, a.graph_seconds))
            .collect();
        println!(
            "{verb} {}: {} items ({} new), generation {}, {:.1} MB, {:.1} s; attributes: {}",
            s.dir.display(),
            s.items,
            s.added,
            s.generation,
            s.bytes as f64 / 1e6,
            s.seconds,
            attrs.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct InfoAttr {
    name: String,
    dim: usize,
    m: usize,
    m0: usize,
    vectors: String,
    compact: Option<String>,
    rescore: Option<String>,
    graph: String,
}

#[derive(Serialize)]
struct Info<'a> {
    dir: &'a Path,
    format_version: u32,
    generation: u64,
    items: usize,
    removed: usize,
    live: usize,
    metric: &'a str,
    ef_construction: usize,
    compact: CompactKind,
    rescore: CompactKind,
    attributes: Vec<InfoAttr>,
    label_attributes: Vec<String>,
    model: Option<&'a serde_json::Value>,
    bytes_vectors: u64,
    bytes_compact: u64,
    bytes_graphs: u64,
    bytes_other: u64,
}

fn info(dir: &Path, out: &Output) -> anyhow::Result<ExitCode> {
    let ix = Index::open(dir)?;
    let m = ix.manifest();
    let mut attributes = Vec::new();
    for a in &m.attributes {
        let (gm, gm0) = ix.graph_degrees(&a.name)?;
        attributes.push(InfoAttr {
            name: a.name.clone(),
            dim: a.dim,
            m: gm,
            m0: gm0,
            vectors: a.vectors.clone(),
            compact: a.compact.clone(),
            rescore: a.rescore.clone(),
            graph: a.graph.clone(),
        });
    }
    let (bv, bc, bg, bo) = ix.sizes();
    let info = Info {
        dir,
        format_version: m.format_version,
        generation: m.generation,
        items: ix.len(),
        removed: m.removed,
        live: ix.live_len(),
        metric: &m.metric,
        ef_construction: m.params.ef_construction,
        compact: m.params.compact,
        rescore: m.params.rescore,
        attributes,
        label_attributes: ix.schema().map(|s| s.names()).unwrap_or_default(),
        model: ix.model(),
        bytes_vectors: bv,
        bytes_compact: bc,
        bytes_graphs: bg,
        bytes_other: bo,
    };
    if out.json {
        out.print_json(&info)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("index      {}", dir.display());
    println!(
        "format     v{} generation {}",
        info.format_version, info.generation
    );
    println!(
        "items      {} ({} live, {} removed)",
        info.items, info.live, info.removed
    );
    let kind =
        |k: CompactKind| serde_json::to_value(k).map(|v| v.as_str().unwrap_or("?").to_string());
    let tier = if info.rescore == CompactKind::None {
        String::new()
    } else {
        format!(" | re-scoring tier {}", kind(info.rescore)?)
    };
    println!(
        "metric     {} | m {} ef_construction {} | compact {}{tier}",
        info.metric,
        m.params.m,
        info.ef_construction,
        kind(info.compact)?
    );
    println!(
        "size       vectors {:.1} MB, compact {:.1} MB, graphs {:.1} MB, other {:.1} MB",
        bv as f64 / 1e6,
        bc as f64 / 1e6,
        bg as f64 / 1e6,
        bo as f64 / 1e6
    );
    println!(
        "labels     {}",
        if info.label_attributes.is_empty() {
            "none".to_string()
        } else {
            info.label_attributes.join(", ")
        }
    );
    if let Some(model) = info.model {
        println!("model      {model}");
    }
    println!(
        "{:<24} {:>6} {:>4} {:>4}  files",
        "attribute", "dim", "m", "m0"
    );
    for a in &info.attributes {
        println!(
            "{:<24} {:>6} {:>4} {:>4}  {} {} {}{}",
            a.name,
            a.dim,
            a.m,
            a.m0,
            a.vectors,
            a.compact.as_deref().unwrap_or("-"),
            a.rescore
                .as_deref()
                .map_or(String::new(), |t| format!("{t} ")),
            a.graph
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The merge inputs with every segment set replaced by its segments (all must be
/// present: compacting a partial set would drop the missing segments' items).
fn expand_sets(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if !set::is_set(p) {
            out.push(p.clone());
            continue;
        }
        let s = IndexSet::open(p)?;
        if !s.missing().is_empty() {
            bail!(
                "{}: segments {} of {} are missing; merge the set once every shard has published",
                p.display(),
                super::search::join_numbers(s.missing()),
                s.segment_count()
            );
        }
        out.extend(s.segments().iter().map(|seg| seg.dir.clone()));
    }
    Ok(out)
}

#[derive(Serialize)]
struct SetSegmentInfo<'a> {
    number: usize,
    dir: &'a Path,
    items: usize,
    live: usize,
    generation: u64,
}

#[derive(Serialize)]
struct SetInfo<'a> {
    dir: &'a Path,
    set: bool,
    segments: usize,
    present: Vec<usize>,
    missing: &'a [usize],
    items: usize,
    live: usize,
    attributes: Vec<(String, usize)>,
    label_attributes: Vec<String>,
    model: Option<&'a serde_json::Value>,
    segment_list: Vec<SetSegmentInfo<'a>>,
}

fn set_info(dir: &Path, out: &Output) -> anyhow::Result<ExitCode> {
    let s = IndexSet::open(dir)?;
    let info = SetInfo {
        dir,
        set: true,
        segments: s.segment_count(),
        present: s.segments().iter().map(|g| g.number).collect(),
        missing: s.missing(),
        items: s.len(),
        live: s.live_len(),
        attributes: s
            .attributes()
            .iter()
            .map(|a| Ok((a.clone(), s.dim(a)?)))
            .collect::<anyhow::Result<_>>()?,
        label_attributes: s.schema().map(|x| x.names()).unwrap_or_default(),
        model: s.model(),
        segment_list: s
            .segments()
            .iter()
            .map(|g| SetSegmentInfo {
                number: g.number,
                dir: &g.dir,
                items: g.index.len(),
                live: g.index.live_len(),
                generation: g.index.manifest().generation,
            })
            .collect(),
    };
    if out.json {
        out.print_json(&info)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("segment set {}", dir.display());
    println!(
        "segments   {} of {} present: {}",
        info.present.len(),
        info.segments,
        super::search::join_numbers(&info.present)
    );
    println!(
        "missing    {}",
        if info.missing.is_empty() {
            "none".to_string()
        } else {
            super::search::join_numbers(info.missing)
        }
    );
    println!("items      {} ({} live)", info.items, info.live);
    println!(
        "attributes {}",
        info.attributes
            .iter()
            .map(|(a, d)| format!("{a} ({d}-d)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(model) = info.model {
        println!("model      {model}");
    }
    println!(
        "{:>7} {:>10} {:>10} {:>6}  dir",
        "segment", "items", "live", "gen"
    );
    for g in &info.segment_list {
        println!(
            "{:>7} {:>10} {:>10} {:>6}  {}",
            g.number,
            g.items,
            g.live,
            g.generation,
            g.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct SetVerify {
    dir: PathBuf,
    segments: usize,
    missing: Vec<usize>,
    reports: Vec<SetVerifySegment>,
    problems: Vec<String>,
    ok: bool,
}

#[derive(Serialize)]
struct SetVerifySegment {
    segment: usize,
    report: index::VerifyReport,
}

fn set_verify(dir: &Path, out: &Output) -> anyhow::Result<ExitCode> {
    let segments = set::read_set_manifest(dir)?.segments;
    let (reports, missing) = set::verify_set_dir(dir)?;
    let mut problems = Vec::new();
    for k in &missing {
        problems.push(format!(
            "segment {k} ({}) is missing",
            dir.join(set::segment_name(*k)).display()
        ));
    }
    // Cross-segment checks (same model and attributes, no id twice) once every present
    // segment passed on its own.
    if reports.iter().all(|(_, r)| r.ok) {
        if let Err(e) = IndexSet::open(dir) {
            problems.push(e.to_string());
        }
    }
    let ok = problems.is_empty() && reports.iter().all(|(_, r)| r.ok);
    let report = SetVerify {
        dir: dir.to_path_buf(),
        segments,
        missing,
        reports: reports
            .into_iter()
            .map(|(segment, report)| SetVerifySegment { segment, report })
            .collect(),
        problems,
        ok,
    };
    if out.json {
        out.print_json(&report)?;
    } else {
        for s in &report.reports {
            let bad: Vec<&str> = s
                .report
                .files
                .iter()
                .filter(|f| !f.ok)
                .map(|f| f.name.as_str())
                .collect();
            let status = if s.report.ok { "ok" } else { "FAILED" };
            println!(
                "{status:6} segment {:>5}  {} files  {}",
                s.segment,
                s.report.files.len(),
                s.report.dir.display()
            );
            for f in bad {
                println!("         file {f} fails its length or crc32");
            }
            for p in &s.report.problems {
                println!("         problem: {p}");
            }
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
        println!(
            "{}: {}",
            dir.display(),
            if report.ok {
                "all checks hold"
            } else {
                "verification FAILED"
            }
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One id per line; a final empty line is allowed, other empty lines are errors.
pub fn read_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read ids", path.display()))?;
    let mut ids = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.trim_end_matches('\r');
        if id.is_empty() {
            bail!("{}:{}: empty id", path.display(), i + 1);
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// The `--vectors ATTR=FILE.npy` inputs, mapped (not read: a catalog's vectors can be
/// far larger than memory).
fn read_vectors(specs: &[String]) -> anyhow::Result<Vec<(String, npy::MappedMatrix)>> {
    specs
        .iter()
        .map(|s| {
            let (name, file) = s
                .split_once('=')
                .with_context(|| format!("--vectors {s:?}: expected ATTR=FILE.npy"))?;
            let m = npy::map_f32_matrix(Path::new(file))?;
            Ok((name.to_string(), m))
        })
        .collect()
}

fn build_input<'a>(
    ids: Vec<String>,
    mats: &'a [(String, npy::MappedMatrix)],
    labels: Option<ItemLabels>,
    model: Option<serde_json::Value>,
) -> BuildInput<'a> {
    BuildInput {
        ids,
        attributes: mats
            .iter()
            .map(|(name, m)| AttributeInput {
                name: name.clone(),
                dim: m.cols,
                rows: m.data(),
            })
            .collect(),
        labels,
        model,
    }
}

/// Labels of `ids` taken from a catalog (every id must be a catalog item).
fn catalog_labels(path: &Path, ids: &[String]) -> anyhow::Result<ItemLabels> {
    let cat = catalog::open(path)?;
    let by_id: HashMap<&str, usize> = cat
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let k = cat.schema.len();
    let mut labels = Labels::new(ids.len(), k);
    for (row, id) in ids.iter().enumerate() {
        let item = *by_id
            .get(id.as_str())
            .with_context(|| format!("{}: item {id:?} is not in the catalog", path.display()))?;
        for a in 0..k {
            labels.set(row, a, cat.labels.get(item, a));
        }
    }
    Ok(ItemLabels {
        schema: cat.schema,
        labels,
    })
}
