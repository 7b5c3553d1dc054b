//! The batch job's work directory: append-only vector files per attribute, the ids of the
//! embedded items, the rejects report, and a checkpoint that says how much of them is
//! complete. A killed job resumes from the checkpoint; anything written after it is cut
//! off on resume.
//!
//! ```text
//! WORK/lock              the job lock (see [`super::lock`]): pid, host, start time
//! WORK/job.json          what the job is (model identity, catalog + its fingerprint,
//!                        attributes, shard, batch)
//! WORK/checkpoint.json   {next_item, rows, ids_bytes, rejects_bytes, rejected,
//!                        images_fingerprint}
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
    /// FNV-1a of the catalog's manifest bytes (when it is a file) and of its item list
    /// (ids and image paths, in order), as 16 hex digits: a reordered, edited or replaced
    /// catalog is another job.
    pub catalog_fingerprint: String,
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
    /// Running fingerprint of the image file (size, modification time) of every item up
    /// to `next_item`, in job order (see [`fold_image`]): an image replaced in place
    /// since the interrupted run makes the job start over.
    #[serde(default)]
    pub images_fingerprint: u64,
}

/// Folds one item's image file state into a running fingerprint. A missing or
/// unreadable file folds as size `u64::MAX` (its reject is then staged, and a file that
/// appears later changes the fingerprint).
pub fn fold_image(state: u64, image: &Path) -> u64 {
    let (size, mtime) = match std::fs::metadata(image) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            (m.len(), mtime)
        }
        Err(_) => (u64::MAX, 0),
    };
    crate::fnv1a(&[
        &state.to_le_bytes(),
        &size.to_le_bytes(),
        &mtime.to_le_bytes(),
    ])
}

/// Why a work directory left by an earlier run cannot be resumed by `spec`, or `None`
/// when it can (or holds nothing to resume).
pub fn mismatch(previous: &JobSpec, spec: &JobSpec) -> Option<String> {
    let why = if previous.model_identity != spec.model_identity {
        format!(
            "the model changed (identity {} then, {} now)",
            previous.model_identity, spec.model_identity
        )
    } else if previous.catalog != spec.catalog {
        format!(
            "the catalog changed ({} then, {} now)",
            previous.catalog, spec.catalog
        )
    } else if previous.catalog_items != spec.catalog_items {
        format!(
            "the catalog holds {} items, {} when the interrupted run started",
            spec.catalog_items, previous.catalog_items
        )
    } else if previous.catalog_fingerprint != spec.catalog_fingerprint {
        "the catalog's manifest or item list changed since the interrupted run".to_string()
    } else if previous.attributes != spec.attributes || previous.dims != spec.dims {
        format!(
            "the attributes changed ({:?} then, {:?} now)",
            previous.attributes, spec.attributes
        )
    } else if previous.shard != spec.shard {
        format!(
            "the shard changed ({:?} then, {:?} now)",
            previous.shard, spec.shard
        )
    } else if previous.batch != spec.batch {
        format!(
            "the batch size changed ({} then, {} now)",
            previous.batch, spec.batch
        )
    } else {
        return None;
    };
    Some(why)
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
    /// otherwise. Returns whether it resumed, or why an earlier run's work was dropped.
    pub fn open(dir: &Path, spec: JobSpec) -> Result<(Staging, Resume)> {
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
            (Some(p), Some(c)) => match mismatch(&p, &spec) {
                None => (Resume::Resumed, c),
                Some(_) if c.next_item == 0 => (Resume::Fresh, Checkpoint::default()),
                Some(why) => (Resume::Restarted(why), Checkpoint::default()),
            },
            _ => (Resume::Fresh, Checkpoint::default()),
        };
        if resume != Resume::Resumed {
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

    /// Drops everything staged (the checkpoint goes back to the start).
    pub fn reset(&mut self) -> Result<()> {
        for (a, f) in self.vectors.iter_mut().enumerate() {
            let p = self.dir.join(format!("{a}.f32"));
            f.set_len(0).at(&p)?;
            f.seek(SeekFrom::Start(0)).at(&p)?;
        }
        for (f, name) in [(&mut self.ids, IDS), (&mut self.rejects, REJECTS)] {
            f.set_len(0).at(self.dir.join(name))?;
            f.seek(SeekFrom::Start(0)).at(self.dir.join(name))?;
        }
        self.checkpoint = Checkpoint::default();
        self.commit()
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
        images_fingerprint: u64,
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
            images_fingerprint,
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

/// What [`Staging::open`] found in the work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing to resume.
    Fresh,
    /// The same job's checkpoint: it goes on from there.
    Resumed,
    /// An earlier run of another job (the reason): its work was dropped.
    Restarted(String),
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
