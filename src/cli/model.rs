use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use super::Output;
use tailor::catalog;
use tailor::model::{Arch, BackboneConfig, Model, ModelConfig};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Write an untrained model for a catalog's attribute schema (to benchmark, or to start
    /// training from).
    Init {
        /// asen, asen-v2, ag-man, csn, triplet, asen-no-asa, asen-no-aca.
        #[arg(long)]
        arch: Arch,
        /// resnet50 or tiny.
        #[arg(long, default_value = "resnet50")]
        backbone: String,
        /// Catalog whose attributes (and values) the model covers.
        #[arg(long)]
        catalog: PathBuf,
        /// Output model file (.safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Random seed of the initial weights: the same seed gives the same model.
        #[arg(long, default_value_t = 0, value_parser = super::args::seed, allow_negative_numbers = true)]
        seed: u64,
        /// Input side in pixels (default: 224 for resnet50, 64 for tiny).
        #[arg(long, value_parser = super::args::positive_u32, allow_negative_numbers = true)]
        input_size: Option<u32>,
        /// Where the weights are drawn: cpu, cuda or cuda:N (the file is the same).
        #[arg(long, default_value = "cpu", value_parser = super::args::device)]
        device: tailor::model::DeviceSpec,
    },
    /// Wrap an authors' checkpoint (safetensors, or PyTorch .pth/.pth.tar, zip or legacy) as a tailor
    /// model file. Attribute order must be the checkpoint's (the authors' meta.json order).
    Import {
        /// Architecture of the checkpoint: asen, asen-v2, ag-man, csn, triplet, asen-no-asa, asen-no-aca.
        #[arg(long)]
        arch: Arch,
        /// Checkpoint file.
        #[arg(long)]
        weights: PathBuf,
        /// Catalog giving attribute names and values, in checkpoint order.
        #[arg(
            long,
            conflicts_with = "attributes",
            required_unless_present = "attributes"
        )]
        catalog: Option<PathBuf>,
        /// Attribute names, comma-separated, in checkpoint order.
        #[arg(long, value_delimiter = ',')]
        attributes: Option<Vec<String>>,
        /// resnet50 or tiny.
        #[arg(long, default_value = "resnet50")]
        backbone: String,
        /// Output model file (.safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Input side in pixels (default: 224 for resnet50; Zappos checkpoints used 112).
        #[arg(long, value_parser = super::args::positive_u32, allow_negative_numbers = true)]
        input_size: Option<u32>,
        /// CSN/triplet embedding size (default 1024 for resnet50).
        #[arg(long, value_parser = super::args::positive_usize, allow_negative_numbers = true)]
        embed_dim: Option<usize>,
        /// Where the checkpoint is loaded and checked: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = super::args::device)]
        device: tailor::model::DeviceSpec,
    },
    /// Architecture, attributes, input size and parameters of a model file.
    Info {
        /// Model file.
        model: PathBuf,
    },
}

fn backbone(name: &str) -> anyhow::Result<BackboneConfig> {
    match name {
        "resnet50" => Ok(BackboneConfig::Resnet50),
        "tiny" => Ok(BackboneConfig::tiny()),
        other => anyhow::bail!("unknown backbone {other:?}: expected resnet50 or tiny"),
    }
}

#[derive(Serialize)]
struct Info {
    path: PathBuf,
    arch: Arch,
    backbone: BackboneConfig,
    attributes: Vec<AttributeInfo>,
    input_size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    embed_dim: usize,
    hidden_dim: usize,
    parameters: usize,
    tensors: usize,
    identity: String,
}

#[derive(Serialize)]
struct AttributeInfo {
    name: String,
    values: usize,
}

fn info(path: PathBuf, m: &Model) -> anyhow::Result<Info> {
    let cfg = m.config();
    Ok(Info {
        attributes: cfg
            .attributes
            .iter()
            .enumerate()
            .map(|(i, a)| AttributeInfo {
                name: a.clone(),
                values: cfg.values.get(i).map_or(0, |v| v.len()),
            })
            .collect(),
        arch: cfg.arch,
        backbone: cfg.backbone.clone(),
        input_size: cfg.input_size,
        mean: cfg.mean,
        std: cfg.std,
        embed_dim: cfg.embed_dim,
        hidden_dim: cfg.hidden_dim,
        parameters: m.parameter_count(),
        tensors: m.tensor_shapes().len(),
        identity: m.identity()?,
        path,
    })
}

fn print_info(i: &Info, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return out.print_json(i);
    }
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}", i.path.display())?;
    writeln!(o, "  architecture  {}", i.arch)?;
    writeln!(o, "  backbone      {}", serde_json::to_string(&i.backbone)?)?;
    writeln!(
        o,
        "  input         {} px, mean {}, std {}",
        i.input_size,
        triple(&i.mean),
        triple(&i.std)
    )?;
    writeln!(
        o,
        "  embedding     {} dims (hidden {})",
        i.embed_dim, i.hidden_dim
    )?;
    writeln!(
        o,
        "  parameters    {} in {} tensors",
        i.parameters, i.tensors
    )?;
    writeln!(o, "  identity      {}", i.identity)?;
    writeln!(o, "  attributes    {}", i.attributes.len())?;
    for (k, a) in i.attributes.iter().enumerate() {
        writeln!(o, "    {k:>3}  {:<24} {} values", a.name, a.values)?;
    }
    Ok(())
}

fn schema_from(path: &Path) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let cat = catalog::open(path)?;
    Ok((
        cat.schema.names(),
        cat.schema
            .attributes
            .iter()
            .map(|a| a.values.clone())
            .collect(),
    ))
}

pub fn run(cmd: ModelCommand, out: &Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::Init {
            arch,
            backbone: bb,
            catalog,
            out: path,
            seed,
            input_size,
            device,
        } => {
            let device = device.open()?;
            let (attributes, values) = schema_from(&catalog)?;
            let mut cfg = ModelConfig::new(arch, backbone(&bb)?, attributes, values);
            if let Some(s) = input_size {
                cfg.input_size = s;
            }
            let m = Model::init(cfg, seed, &device)?;
            m.save(&path)
                .with_context(|| format!("{}: cannot write the model", path.display()))?;
            print_info(&info(path, &m)?, out)?;
        }
        ModelCommand::Import {
            arch,
            weights,
            catalog,
            attributes,
            backbone: bb,
            out: path,
            input_size,
            embed_dim,
            device,
        } => {
            let device = device.open()?;
            let (attributes, values) = match (catalog, attributes) {
                (Some(c), _) => schema_from(&c)?,
                (None, Some(a)) => (a, vec![]),
                (None, None) => anyhow::bail!("give --catalog or --attributes"),
            };
            let mut cfg = ModelConfig::new(arch, backbone(&bb)?, attributes, values);
            if let Some(s) = input_size {
                cfg.input_size = s;
            }
            if let Some(d) = embed_dim {
                cfg.embed_dim = d;
            }
            let m = Model::import(&weights, cfg, &device)?;
            m.save(&path)
                .with_context(|| format!("{}: cannot write the model", path.display()))?;
            print_info(&info(path, &m)?, out)?;
        }
        ModelCommand::Info { model: path } => {
            let m = Model::load(&path, &candle_core::Device::Cpu)?;
            print_info(&info(path, &m)?, out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Three channel values as `0.485, 0.456, 0.406`.
fn triple(v: &[f32; 3]) -> String {
    format!("{}, {}, {}", v[0], v[1], v[2])
}
