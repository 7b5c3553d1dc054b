//! The batch job's work directory: append-only vector files per attribute, the ids of the
//! embedded items, the rejects report, and a checkpoint that says how much of them is
//! complete. A killed job resumes from the checkpoint; anything written after it is cut
//! off on resume.
//!
//! ```text
//! WORK/job.json          what the job is (model identity, catalog, attributes, shard)
//! WORK/checkpoint.json   {next_item, rows, ids_bytes, rejects_bytes, rejected}
//! WORK/ids.txt           external ids of embedded items, one per line, row order
//! WORK/<n>.f32           raw little-endian f32 rows of attribute number n
//! WORK/rejects.jsonl     {"item","path","reason"} per skipped item
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Identity of a job: a work directory is resumed only by the same job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub model_identity: String,
    pub catalog: String,
    pub catalog_items: usize,
    pub attributes: Vec<String>,
    pub dims: Vec<usize>,
    pub shard: Option<(usize, usize)>,
    pub batch: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Checkpoint {
    /// Position in the job's item list up to which everything is written.
    pub next_item: usize,
    pub rows: usize,
    pub ids_bytes: u64,
    pub rejects_bytes: u64,
    pub rejected: usize,
}

pub struct Staging {
    dir: PathBuf,
    pub spec: JobSpec,
    pub checkpoint: Checkpoint,
    vectors: Vec<File>,
    ids: File,
    rejects: File,
}

const JOB: &str = "job.json";
const CHECKPOINT: &str = "checkpoint.json";
const IDS: &str = "ids.txt";
const REJECTS: &str = "rejects.jsonl";

impl Staging {
    /// Opens the work directory, resuming it when it holds the same job, starting afresh
    /// otherwise. Returns whether it resumed.
    pub fn open(dir: &Path, spec: JobSpec) -> Result<(Staging, bool)> {
        std::fs::create_dir_all(dir).at(dir)?;
        let job_path = dir.join(JOB);
        let cp_path = dir.join(CHECKPOINT);
        let previous: Option<JobSpec> = std::fs::read(&job_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let checkpoint: Option<Checkpoint> = std::fs::read(&cp_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (resume, checkpoint) = match (previous, checkpoint) {
            (Some(p), Some(c)) if p == spec => (true, c),
            _ => (false, Checkpoint::default()),
        };
        if !resume {
            write_atomic(&job_path, &serde_json::to_vec_pretty(&spec).expect("json"))?;
            write_atomic(&cp_path, &serde_json::to_vec(&checkpoint).expect("json"))?;
        }
        let open = |p: PathBuf, len: u64| -> Result<File> {
            let f = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(&p)
                .at(&p)?;
            // Drop whatever was written after the checkpoint.
            f.set_len(len).at(&p)?;
            let mut f = f;
            f.seek(SeekFrom::End(0)).at(&p)?;
            Ok(f)
        };
        let vectors = spec
            .dims
            .iter()
            .enumerate()
            .map(|(a, &dim)| {
                open(
                    dir.join(format!("{a}.f32")),
                    (checkpoint.rows * dim * 4) as u64,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let ids = open(dir.join(IDS), checkpoint.ids_bytes)?;
        let rejects = open(dir.join(REJECTS), checkpoint.rejects_bytes)?;
        Ok((
            Staging {
                dir: dir.to_path_buf(),
                spec,
                checkpoint,
                vectors,
                ids,
                rejects,
            },
            resume,
        ))
    }

    pub fn vector_path(&self, attribute: usize) -> PathBuf {
        self.dir.join(format!("{attribute}.f32"))
    }
    pub fn ids_path(&self) -> PathBuf {
        self.dir.join(IDS)
    }
    pub fn rejects_path(&self) -> PathBuf {
        self.dir.join(REJECTS)
    }

    /// Appends one batch: rows per attribute (`rows[a]` = n x dim_a), their ids, and the
    /// rejects of the batch. Durable only after the next [`Staging::commit`].
    pub fn append(
        &mut self,
        ids: &[String],
        rows: &[Vec<f32>],
        rejects: &[Reject],
        next_item: usize,
    ) -> Result<()> {
        for (a, (file, data)) in self.vectors.iter_mut().zip(rows).enumerate() {
            debug_assert_eq!(data.len(), ids.len() * self.spec.dims[a]);
            let bytes: &[u8] = bytemuck::cast_slice(data.as_slice());
            file.write_all(bytes)
                .at(self.dir.join(format!("{a}.f32")))?;
        }
        let mut id_text = String::new();
        for id in ids {
            id_text.push_str(id);
            id_text.push('\n');
        }
        self.ids
            .write_all(id_text.as_bytes())
            .at(self.dir.join(IDS))?;
        let mut rej_text = String::new();
        for r in rejects {
            rej_text.push_str(&serde_json::to_string(r).expect("json"));
            rej_text.push('\n');
        }
        self.rejects
            .write_all(rej_text.as_bytes())
            .at(self.dir.join(REJECTS))?;
        self.checkpoint = Checkpoint {
            next_item,
            rows: self.checkpoint.rows + ids.len(),
            ids_bytes: self.checkpoint.ids_bytes + id_text.len() as u64,
            rejects_bytes: self.checkpoint.rejects_bytes + rej_text.len() as u64,
            rejected: self.checkpoint.rejected + rejects.len(),
        };
        Ok(())
    }

    /// Makes everything appended so far durable (fsync), then moves the checkpoint to it.
    /// The job calls this every few seconds rather than per batch: an fsync per small
    /// batch would cost more than the tiny model's forward pass.
    pub fn commit(&mut self) -> Result<()> {
        for f in self.vectors.iter().chain([&self.ids, &self.rejects]) {
            f.sync_data().at(&self.dir)?;
        }
        write_atomic(
            &self.dir.join(CHECKPOINT),
            &serde_json::to_vec(&self.checkpoint).expect("json"),
        )
    }

    pub fn remove(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).at(&dir)
    }
}

/// An item the job skipped, with the reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reject {
    pub item: String,
    pub path: String,
    pub reason: String,
}

/// Writes a small file through a temporary name + fsync + rename, so readers see the old
/// or the new content, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::atomic_write(path, bytes)
}
