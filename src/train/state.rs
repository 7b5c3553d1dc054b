//! The state saved after each epoch (`M.train.json`), which a resumed run continues from.

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

use super::run_files::{write_atomic, RunFiles};
use super::{EpochLog, TrainOptions};

/// Progress saved after each epoch (`M.train.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TrainState {
    pub(super) format: u32,
    pub(super) options: TrainOptions,
    pub(super) epochs_done: usize,
    pub(super) adam_steps: u64,
    pub(super) best_epoch: Option<usize>,
    pub(super) best_valid_map: Option<f64>,
    pub(super) log: Vec<EpochLog>,
}

pub(super) const STATE_FORMAT: u32 = 1;

pub(super) fn read_state(files: &RunFiles, opts: &TrainOptions) -> Result<TrainState> {
    let path = &files.state_json;
    let text = std::fs::read_to_string(path).at(path)?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| Error::corrupted(path, format!("not a training state: {e}")))?;
    if state.format != STATE_FORMAT {
        return Err(Error::IncompatibleVersion {
            path: path.clone(),
            found: state.format,
            supported: STATE_FORMAT.to_string(),
            hint: "start the run again instead of resuming it".into(),
        });
    }
    // Everything but the epoch count must match the stopped run.
    let mut same = opts.clone();
    same.epochs = state.options.epochs;
    if same != state.options {
        return Err(Error::Usage(format!(
            "{}: resuming needs the options of the stopped run (only the epoch count may change); \
             the run used {}",
            path.display(),
            serde_json::to_string(&state.options).unwrap_or_default()
        )));
    }
    if state.epochs_done >= opts.epochs {
        return Err(Error::Usage(format!(
            "{}: the run already finished {} epochs; ask for more epochs to continue it",
            path.display(),
            state.epochs_done
        )));
    }
    Ok(state)
}

pub(super) fn write_state(files: &RunFiles, state: &TrainState) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomic(&files.state_json, &json)
}
