use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::Output;
use tailor::catalog::{self, check, synth};

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Validate a catalog: every file parses, every image exists and decodes. Exit 1 when
    /// anything is wrong.
    Check {
        /// Catalog directory or manifest (.csv / .jsonl).
        path: PathBuf,
    },
    /// Items, labels and values per attribute, split sizes.
    Stats {
        /// Catalog directory or manifest (.csv / .jsonl).
        path: PathBuf,
    },
    /// Render a contact sheet (PNG grid) of the first items, to look at a catalog.
    Sheet {
        /// Catalog directory or manifest (.csv / .jsonl).
        path: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Number of items.
        #[arg(long, default_value_t = 32, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
        items: usize,
        /// Tile size in pixels.
        #[arg(long, default_value_t = 128, value_parser = super::args::positive_u32, allow_negative_numbers = true)]
        tile: u32,
    },
}

pub fn run(cmd: CatalogCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCommand::Check { path } => {
            let cat = catalog::open(&path)?;
            let report = check::check(&cat);
            if out.json {
                out.print_json(&report)?;
            } else {
                for p in &report.missing_images {
                    println!("missing image: item {:?}: {}", p.item, p.path);
                }
                for p in &report.unreadable_images {
                    println!(
                        "unreadable image: item {:?}: {}: {}",
                        p.item, p.path, p.reason
                    );
                }
                println!(
                    "{}: {} items, {} images checked, {} missing, {} unreadable, {} unlabelled items",
                    path.display(),
                    report.items,
                    report.images_checked,
                    report.missing_images.len(),
                    report.unreadable_images.len(),
                    report.unlabelled_items
                );
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::errors::EXIT_PROBLEMS)
            })
        }
        CatalogCommand::Stats { path } => {
            let cat = catalog::open(&path)?;
            let stats = check::stats(&cat);
            if out.json {
                out.print_json(&stats)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} ({}): {} items",
                stats.source,
                serde_json::to_value(stats.format)?.as_str().unwrap_or("?"),
                stats.items
            );
            println!(
                "{:<20} {:>7} {:>10}  values",
                "attribute", "values", "labelled"
            );
            for a in &stats.attributes {
                let counts: Vec<String> = a
                    .value_counts
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                println!(
                    "{:<20} {:>7} {:>10}  {}",
                    a.name,
                    a.values,
                    a.labelled_items,
                    counts.join(" ")
                );
            }
            for (name, s) in &stats.splits {
                println!(
                    "split {name:<6} {:>8} items {:>8} queries {:>8} candidates",
                    s.items, s.queries, s.candidates
                );
            }
            for (cond, per_split) in &stats.triplets {
                let parts: Vec<String> =
                    per_split.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("triplets {cond}: {}", parts.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Sheet {
            path,
            out: sheet_path,
            items,
            tile,
        } => {
            let cat = catalog::open(&path)?;
            let n = items.min(cat.items.len());
            let images = (0..n)
                .map(|i| {
                    let p = cat.image_path(i);
                    tailor::image_io::decode_rgb(&p)
                        .map(|img| img.to_rgb8())
                        .with_context(|| {
                            format!(
                                "{}: cannot decode image of item {:?}",
                                p.display(),
                                cat.items[i].id
                            )
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sheet = synth::contact_sheet(&images, 8, tile);
            sheet
                .save(&sheet_path)
                .with_context(|| format!("{}: cannot write", sheet_path.display()))?;
            if out.json {
                out.print_json(&serde_json::json!({"out": sheet_path, "items": n}))?;
            } else {
                println!("wrote {} ({} items)", sheet_path.display(), n);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
