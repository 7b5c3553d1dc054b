//! The files of a run, named after the output model: the models, the logs (CSV and
//! JSON lines), each written atomically.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Model;

use super::EpochLog;

/// The files of a run, named after the output model path.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub best: PathBuf,
    pub last: PathBuf,
    pub state_json: PathBuf,
    pub state_tensors: PathBuf,
    pub log_csv: PathBuf,
    pub log_jsonl: PathBuf,
    pub cache: PathBuf,
}

impl RunFiles {
    pub fn new(out: &Path) -> Self {
        let stem = match out.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => out.with_extension(""),
            _ => out.to_path_buf(),
        };
        let with = |suffix: &str| {
            let mut s = stem.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        RunFiles {
            best: out.to_path_buf(),
            last: with(".last.safetensors"),
            state_json: with(".train.json"),
            state_tensors: with(".train-state.safetensors"),
            log_csv: with(".log.csv"),
            log_jsonl: with(".log.jsonl"),
            cache: with(".features.cache"),
        }
    }
}

pub(super) fn save_model(model: &Model, path: &Path) -> Result<()> {
    crate::fsio::atomic_write_path(path, |tmp| model.save(tmp))
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::atomic_write(path, bytes)
}

pub(super) fn write_logs(files: &RunFiles, log: &[EpochLog], attributes: &[String]) -> Result<()> {
    let mut csv = String::from(
        "epoch,lr,loss,triplet_loss,triplet_accuracy,triplets,seconds,triplets_per_second,\
         images_per_second,valid_map,best",
    );
    for a in attributes {
        csv.push_str(&format!(",valid_map_{a}"));
    }
    csv.push('\n');
    let mut jsonl = String::new();
    for e in log {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
        csv.push_str(&format!(
            "{},{:.4e},{:.6},{:.6},{:.4},{},{:.2},{:.1},{:.1},{},{}",
            e.epoch,
            e.lr,
            e.loss,
            e.triplet_loss,
            e.triplet_accuracy,
            e.triplets,
            e.seconds,
            e.triplets_per_second,
            e.images_per_second,
            opt(e.valid_map),
            e.best
        ));
        for a in attributes {
            csv.push(',');
            csv.push_str(&opt(e.valid_map_per_attribute.get(a).copied()));
        }
        csv.push('\n');
        jsonl.push_str(&serde_json::to_string(e).map_err(|e| Error::Usage(e.to_string()))?);
        jsonl.push('\n');
    }
    write_atomic(&files.log_csv, csv.as_bytes())?;
    write_atomic(&files.log_jsonl, jsonl.as_bytes())
}
