//! Command-line interface: clap argument structs and one module per command. Commands
//! turn arguments into library calls and format the results (a table for people,
//! `--json` for programs). The library never prints.

mod args;
mod catalog;
mod embed;
pub mod errors;
mod eval;
mod index;
mod model;
mod progress;
mod report;
mod search;
mod show;
mod synth;
mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tailor::progress::ProgressMode;

#[derive(Parser, Debug)]
#[command(
    name = "tailor",
    version,
    about = "Attribute-specific similarity search over product catalogs"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Largest image file read, in bytes (embed, train, search --image, catalog check);
    /// a larger file is rejected before it is read.
    #[arg(long, global = true, value_name = "BYTES",
          default_value_t = tailor::image_io::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_bytes: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate the synthetic fashion catalog (images, manifest, ASEN splits, triplet lists).
    Synth(synth::SynthArgs),
    /// Validate and describe catalogs.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Create, import and describe model files.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Build, update, inspect and verify per-attribute vector indexes.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Top-k similar items by one attribute or a weighted sum of attributes; re-ranking.
    Search(search::SearchArgs),
    /// Embed a catalog with a model and publish a searchable per-attribute index.
    Embed(embed::EmbedArgs),
    /// Exact evaluation: MAP per attribute, triplet accuracy.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Train a model of the ASEN family on a labelled catalog.
    Train(Box<train::TrainArgs>),
    /// Pictures: retrieval sheets, attention overlays, embedding maps.
    #[command(subcommand)]
    Show(show::ShowCommand),
    /// One static HTML report: evaluation, charts, sheets, attention, embedding maps.
    Report(report::ReportArgs),
}

/// Output settings shared by every command.
pub struct Output {
    pub json: bool,
    /// `-q`: no progress (notices still print).
    pub quiet: bool,
    pub progress: ProgressMode,
}

impl Output {
    /// Prints a serialisable value as pretty JSON on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    tailor::image_io::set_max_bytes(cli.max_image_bytes);
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
        progress: progress::mode(cli.quiet),
    };
    match cli.command {
        Command::Synth(args) => synth::run(args, &out),
        Command::Catalog(cmd) => catalog::run(cmd, &out),
        Command::Model(cmd) => model::run(cmd, &out),
        Command::Index(cmd) => index::run(cmd, &out),
        Command::Search(args) => search::run(args, &out),
        Command::Embed(args) => embed::run(args, &out),
        Command::Eval(cmd) => eval::run(cmd, &out),
        Command::Train(args) => train::run(*args, &out),
        Command::Show(cmd) => show::run(cmd, &out),
        Command::Report(args) => report::run(args, &out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "tailor", &mut missing);
        assert!(missing.is_empty(), "no help for: {missing:#?}");
    }
}
