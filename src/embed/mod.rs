//! The batch job: catalog in, searchable per-attribute index out.
//!
//! Images stream through decode + pre-process (a producer thread, rayon inside it) into
//! batches for the model (one backbone pass per image, every attribute head on the shared
//! map); rows go straight into append-only staging files (see [`staging`]) with a
//! checkpoint after every batch, so a killed job resumes where it stopped. At the end the
//! staging files are memory-mapped and handed to [`crate::index::build`], which publishes
//! the index atomically. Memory stays bounded by the batch size and the queue depth.

pub use crate::encode::decode;
pub mod lock;
pub mod staging;

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::catalog::{Catalog, ItemTable};
use crate::encode;
use crate::error::{Error, IoContext, Result};
use crate::index::{self, AttributeInput, BuildInput, BuildParams, ItemLabels};
use crate::model::{self, Model, ModelRecord};
use crate::progress::{Progress, ProgressMode};
use staging::{JobSpec, Reject, Resume, Staging};

/// One of N deterministic parts of a catalog (shard K of N, written `K/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Shard `index` of `count`, with 0 <= index < count.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::Usage(format!(
                "shard {index}/{count}: expected K/N with 0 <= K < N, e.g. 0/4"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Whether an item belongs to this shard: a hash of its id, so the assignment does not
    /// depend on catalog order and stays put as the catalog grows.
    pub fn contains(&self, id: &str) -> bool {
        (crate::fnv1a(&[id.as_bytes()]) % self.count as u64) as usize == self.index
    }
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Attributes to embed (names); all of the model's when None.
    pub attributes: Option<Vec<String>>,
    pub batch: usize,
    pub shard: Option<Shard>,
    /// Fail when more than this fraction of the selected items is rejected.
    pub max_reject_rate: f64,
    pub params: BuildParams,
    /// Staging directory; default `<out>.embed-work` beside the output.
    pub work_dir: Option<PathBuf>,
    /// Where the model file lives, recorded in the index manifest for `search --image`.
    pub model_path: PathBuf,
    /// How often progress is made durable (fsync + checkpoint), hence how much a resumed
    /// job redoes; zero means after every batch.
    pub checkpoint_every: Duration,
    pub progress: ProgressMode,
    /// When another job holds the work directory's lock: wait for it (true) or fail at
    /// once naming it (false).
    pub wait: bool,
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageSeconds {
    pub decode: f64,
    pub preprocess: f64,
    pub model: f64,
    pub write: f64,
    pub graph: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    pub out: PathBuf,
    pub catalog_items: usize,
    pub selected_items: usize,
    pub embedded: usize,
    pub rejected: usize,
    pub rejects_report: Option<PathBuf>,
    /// Items already done by an earlier, interrupted run of the same job.
    pub resumed_from: usize,
    pub attributes: Vec<String>,
    pub seconds: f64,
    pub items_per_second: f64,
    pub stage_seconds: StageSeconds,
    /// With a shard: the segment directory published inside the set at `out`.
    pub segment: Option<PathBuf>,
    /// What the job had to say besides its result (waited for another job, took over a
    /// stale lock, started over because the catalog changed); also printed to stderr.
    pub notices: Vec<String>,
}

/// A decoded, pre-processed batch on its way to the model.
struct Batch {
    /// Position after the batch in the job's item list.
    end: usize,
    ids: Vec<String>,
    pixels: Vec<f32>,
    rejects: Vec<Reject>,
    decode: Duration,
    preprocess: Duration,
    /// The images fingerprint up to `end` (see [`staging::fold_image`]).
    images_fingerprint: u64,
}

/// Embeds a catalog with a model and publishes the index at `out` (see [`embed_items`];
/// `tailor embed` reads the catalog with [`crate::catalog::open_items`], which never holds
/// the whole [`Catalog`]).
pub fn embed_catalog(
    model: &Model,
    catalog: &Catalog,
    out: &Path,
    opts: &EmbedOptions,
) -> Result<EmbedSummary> {
    embed_items(model, &ItemTable::from_catalog(catalog)?, out, opts)
}

/// Embeds a catalog's items with a model and publishes the index at `out`.
///
/// Memory per catalog item: the compact table (its strings, 16 bytes of offsets, two
/// bytes per attribute), 4 bytes for the shard's item list; the vectors go to staging
/// files as they are made, never to memory.
pub fn embed_items(
    model: &Model,
    catalog: &ItemTable,
    out: &Path,
    opts: &EmbedOptions,
) -> Result<EmbedSummary> {
    let start = Instant::now();
    let cfg = model.config();
    let attr_names: Vec<String> = match &opts.attributes {
        Some(names) => names.clone(),
        None => cfg.attributes.clone(),
    };
    let attr_ids: Vec<usize> = attr_names
        .iter()
        .map(|n| {
            cfg.attributes
                .iter()
                .position(|a| a == n)
                .ok_or_else(|| Error::UnknownAttribute {
                    name: n.clone(),
                    known: cfg.attributes.join(", "),
                })
        })
        .collect::<Result<_>>()?;
    if opts.batch == 0 {
        return Err(Error::Usage("the batch size must be at least 1".into()));
    }
    // u32: the table holds at most u32::MAX items (see `ItemTable::push`).
    let selected: Vec<u32> = (0..catalog.len())
        .filter(|&i| opts.shard.is_none_or(|s| s.contains(catalog.id(i))))
        .map(|i| i as u32)
        .collect();
    let mut notices = Vec::new();
    // With a shard, `out` is a segment set and the job publishes its segment in it.
    let (index_dir, segment) = match opts.shard {
        Some(s) => {
            let dir = index::set::prepare_segment(out, s.index, s.count)?;
            (dir.clone(), Some(dir))
        }
        None if index::set::is_set(out) => {
            return Err(Error::Usage(format!(
                "{} is a segment set: embed one shard of it into it, or choose another output",
                out.display()
            )))
        }
        None => (out.to_path_buf(), None),
    };
    let dims = vec![cfg.embed_dim; attr_ids.len()];
    let spec = JobSpec {
        model_identity: model.identity()?,
        catalog: catalog.source.display().to_string(),
        catalog_items: catalog.len(),
        catalog_fingerprint: catalog_fingerprint(catalog)?,
        attributes: attr_names.clone(),
        dims: dims.clone(),
        shard: opts.shard.map(|s| (s.index, s.count)),
        batch: opts.batch,
    };
    let work_dir = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::sibling_path(&index_dir, "embed-work"));
    // Held until the function returns: staging, build, publish and clean-up.
    let _lock = lock::acquire(&work_dir, opts.wait, &mut |m| {
        note(opts.progress, &mut notices, m)
    })?;
    let (mut staging, resume) = Staging::open(&work_dir, spec)?;
    match resume {
        Resume::Restarted(why) => note(
            opts.progress,
            &mut notices,
            format!(
                "{}: starting over, the interrupted run's work does not fit this job: {why}",
                work_dir.display()
            ),
        ),
        Resume::Resumed => {
            let done = staging.checkpoint.next_item.min(selected.len());
            let now = selected[..done].iter().fold(0, |h, &i| {
                staging::fold_image(h, &catalog.image_path(i as usize))
            });
            if now != staging.checkpoint.images_fingerprint {
                staging.reset()?;
                note(
                    opts.progress,
                    &mut notices,
                    format!(
                        "{}: starting over, an image of the {done} items the interrupted run staged changed since (size or modification time)",
                        work_dir.display()
                    ),
                );
            }
        }
        Resume::Fresh => {}
    }
    let resumed_from = staging.checkpoint.next_item;
    let start_fingerprint = staging.checkpoint.images_fingerprint;
    let size = cfg.input_size as usize;
    let pixels_per_image = 3 * size * size;

    let progress = Progress::new("embed", selected.len() as u64, opts.progress);
    progress.inc(resumed_from as u64);
    let mut stages = StageSeconds::default();
    let device = model.device().clone();
    std::thread::scope(|scope| -> Result<()> {
        // Two batches in flight: one being embedded, one being decoded.
        let (tx, rx) = sync_channel::<Batch>(1);
        let todo = &selected[resumed_from..];
        scope.spawn(move || {
            let mut pos = resumed_from;
            let mut fingerprint = start_fingerprint;
            for chunk in todo.chunks(opts.batch) {
                for &i in chunk {
                    fingerprint = staging::fold_image(fingerprint, &catalog.image_path(i as usize));
                }
                let decoded: Vec<(usize, LoadedItem)> = chunk
                    .par_iter()
                    .map(|&i| (i as usize, load_item(catalog, i as usize, cfg)))
                    .collect();
                pos += chunk.len();
                let mut batch = Batch {
                    end: pos,
                    ids: Vec::with_capacity(chunk.len()),
                    pixels: Vec::with_capacity(chunk.len() * pixels_per_image),
                    rejects: Vec::new(),
                    decode: Duration::ZERO,
                    preprocess: Duration::ZERO,
                    images_fingerprint: fingerprint,
                };
                for (i, res) in decoded {
                    match res {
                        Ok((px, d, p)) => {
                            batch.ids.push(catalog.id(i).to_string());
                            batch.pixels.extend_from_slice(&px);
                            batch.decode += d;
                            batch.preprocess += p;
                        }
                        Err(reason) => batch.rejects.push(Reject {
                            item: catalog.id(i).to_string(),
                            path: catalog.image_path(i).display().to_string(),
                            reason,
                        }),
                    }
                }
                if tx.send(batch).is_err() {
                    return; // the consumer stopped on an error
                }
            }
        });
        let mut last_commit = Instant::now();
        for batch in rx {
            // Per-image CPU time summed over the parallel decoders, as a share of wall time.
            let threads = rayon::current_num_threads().max(1) as f64;
            stages.decode += batch.decode.as_secs_f64() / threads;
            stages.preprocess += batch.preprocess.as_secs_f64() / threads;
            let t = Instant::now();
            let rows: Vec<Vec<f32>> = if batch.ids.is_empty() {
                vec![Vec::new(); attr_ids.len()]
            } else {
                let n = batch.ids.len();
                let images = encode::pixels_tensor(batch.pixels, n, cfg, &device)?;
                encode::embed_pixels(model, &images, &attr_ids)?
                    .into_iter()
                    .map(|t| t.flatten_all()?.to_vec1::<f32>())
                    .collect::<candle_core::Result<_>>()?
            };
            stages.model += t.elapsed().as_secs_f64();
            let t = Instant::now();
            staging.append(
                &batch.ids,
                &rows,
                &batch.rejects,
                batch.end,
                batch.images_fingerprint,
            )?;
            if last_commit.elapsed() >= opts.checkpoint_every || batch.end == selected.len() {
                staging.commit()?;
                last_commit = Instant::now();
                failpoint_abort_after(staging.checkpoint.next_item);
            }
            stages.write += t.elapsed().as_secs_f64();
            progress.inc((batch.ids.len() + batch.rejects.len()) as u64);
            failpoint_batch_sleep();
        }
        Ok(())
    })?;
    progress.finish();

    let cp = staging.checkpoint;
    if cp.rows == 0 {
        return Err(Error::invalid(
            &catalog.source,
            format!(
                "no item could be embedded ({} rejected; see {})",
                cp.rejected,
                staging.rejects_path().display()
            ),
        ));
    }
    let reject_rate = cp.rejected as f64 / selected.len().max(1) as f64;
    if reject_rate > opts.max_reject_rate {
        return Err(Error::TooManyRejects {
            catalog: catalog.source.clone(),
            rejected: cp.rejected,
            selected: selected.len(),
            rate: reject_rate,
            max_rate: opts.max_reject_rate,
            report: staging.rejects_path(),
        });
    }

    // Build the index from the memory-mapped staging files.
    let t = Instant::now();
    let ids: Vec<String> = std::fs::read_to_string(staging.ids_path())
        .at(staging.ids_path())?
        .lines()
        .map(str::to_string)
        .collect();
    let maps = (0..attr_ids.len())
        .map(|a| map_f32(&staging.vector_path(a)))
        .collect::<Result<Vec<_>>>()?;
    let attributes = attr_names
        .iter()
        .zip(&maps)
        .zip(&dims)
        .map(|((name, map), &dim)| -> Result<AttributeInput<'_>> {
            Ok(AttributeInput {
                name: name.clone(),
                dim,
                rows: bytemuck::try_cast_slice(&map[..]).map_err(|e| {
                    Error::corrupted(
                        staging.vector_path(0),
                        format!("staging file not f32 rows: {e}"),
                    )
                })?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let labels = item_labels(catalog, &selected, &ids)?;
    let model_record = ModelRecord::of(model, &opts.model_path, &catalog.source)?;
    let input = BuildInput {
        ids,
        attributes,
        labels: Some(labels),
        model: Some(model_record.to_json()),
    };
    index::build(&index_dir, &input, &opts.params, opts.progress)?;
    stages.graph = t.elapsed().as_secs_f64();
    drop(input);
    drop(maps);

    // The rejects report outlives the work directory, beside the index; each run
    // replaces it (a clean run removes the previous run's).
    let report = crate::sibling_path(&index_dir, "rejects.jsonl");
    let rejects_report = if cp.rejected > 0 {
        let tmp = crate::sibling_path(&index_dir, "rejects.jsonl.tmp");
        std::fs::copy(staging.rejects_path(), &tmp).at(&tmp)?;
        std::fs::rename(&tmp, &report).at(&report)?;
        Some(report)
    } else {
        match std::fs::remove_file(&report) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&report, e))
            }
            _ => None,
        }
    };
    staging.remove()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(EmbedSummary {
        out: out.to_path_buf(),
        catalog_items: catalog.len(),
        selected_items: selected.len(),
        embedded: cp.rows,
        rejected: cp.rejected,
        rejects_report,
        resumed_from,
        attributes: attr_names,
        seconds,
        items_per_second: (selected.len() - resumed_from) as f64 / seconds.max(1e-9),
        stage_seconds: stages,
        segment,
        notices,
    })
}

/// Records a notice and reports it (the command line prints it on stderr: it is a
/// diagnostic, not the result).
fn note(progress: ProgressMode, notices: &mut Vec<String>, message: String) {
    progress.notice(&message);
    notices.push(message);
}

/// FNV-1a of the catalog's manifest bytes (when the catalog is a file) and of its item
/// list (ids and image paths in order), as 16 hex digits.
fn catalog_fingerprint(catalog: &ItemTable) -> Result<String> {
    let manifest = if catalog.source.is_file() {
        fnv1a_file(&catalog.source)?
    } else {
        0
    };
    let mut h = crate::fnv1a(&[&manifest.to_le_bytes()]);
    for i in 0..catalog.len() {
        h = crate::fnv1a(&[
            &h.to_le_bytes(),
            catalog.id(i).as_bytes(),
            catalog.image(i).as_os_str().as_encoded_bytes(),
        ]);
    }
    Ok(format!("{h:016x}"))
}

/// FNV-1a of a file's bytes (as `fnv1a(&[bytes])`), read in blocks: a manifest of
/// 100M rows is never in memory at once.
fn fnv1a_file(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).at(path)?;
    let mut block = vec![0u8; 1 << 16];
    let mut h: u64 = 0xcbf29ce484222325;
    loop {
        let n = match file.read(&mut block) {
            Ok(0) => return Ok(h),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        for &b in &block[..n] {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
}

/// One item's pixels and its (decode, pre-process) times, or why it was rejected.
type LoadedItem = std::result::Result<(Vec<f32>, Duration, Duration), String>;

/// Decodes and pre-processes one item; the timings are (decode, pre-process).
fn load_item(catalog: &ItemTable, item: usize, cfg: &model::ModelConfig) -> LoadedItem {
    encode::load_pixels_timed(&catalog.image_path(item), cfg)
}

fn map_f32(path: &Path) -> Result<memmap2::Mmap> {
    // The staging files belong to this job; nothing truncates them while mapped.
    crate::fsio::map_path(path)
}

/// Test hook (only with the `failpoints` feature): `TAILOR_FAILPOINT_EMBED_ABORT_AT=N`
/// aborts the process (like a kill) once the checkpoint covers N items, so tests can
/// prove that a resumed job finishes the same index.
fn failpoint_abort_after(done: usize) {
    #[cfg(feature = "failpoints")]
    if let Ok(v) = std::env::var("TAILOR_FAILPOINT_EMBED_ABORT_AT") {
        if v.parse::<usize>().is_ok_and(|n| done >= n) {
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = done;
}

/// Test hooks (only with the `failpoints` feature): `TAILOR_FAILPOINT_EMBED_BATCH_SLEEP_MS=N`
/// sleeps N ms after every batch, so tests can start a second job while the first surely
/// runs. `TAILOR_FAILPOINT_EMBED_HOLD_UNTIL=FILE` holds the job after its first batch until
/// FILE exists (the test's signal), so a second job surely meets a running one.
fn failpoint_batch_sleep() {
    #[cfg(feature = "failpoints")]
    if let Ok(v) = std::env::var("TAILOR_FAILPOINT_EMBED_BATCH_SLEEP_MS") {
        if let Ok(ms) = v.parse::<u64>() {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    #[cfg(feature = "failpoints")]
    if let Some(path) = std::env::var_os("TAILOR_FAILPOINT_EMBED_HOLD_UNTIL") {
        while !Path::new(&path).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The catalog's labels for the embedded items, in row order (for label filters).
///
/// The staged rows are the job's items in `selected` order less the rejected ones (a
/// resumed job goes on where the checkpoint stopped), so one forward walk pairs them:
/// no id -> item map of the whole catalog.
fn item_labels(catalog: &ItemTable, selected: &[u32], ids: &[String]) -> Result<ItemLabels> {
    let mut labels = crate::catalog::Labels::new(ids.len(), catalog.schema.len());
    let mut next = selected.iter();
    for (row, id) in ids.iter().enumerate() {
        let item = next
            .by_ref()
            .map(|&i| i as usize)
            .find(|&i| catalog.id(i) == id)
            .ok_or_else(|| Error::UnknownItem { id: id.clone() })?;
        for a in 0..catalog.schema.len() {
            labels.set(row, a, catalog.labels.get(item, a));
        }
    }
    Ok(ItemLabels {
        schema: catalog.schema.clone(),
        labels,
    })
}
