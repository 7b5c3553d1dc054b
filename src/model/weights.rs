//! Tensor sources for building models: seeded initialisation, checked loading from
//! safetensors / PyTorch zip checkpoints, and recording of every tensor a model asks for
//! (so a model can be saved and hashed whatever built it).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, IoContext, Result};

use super::config::{ModelConfig, CONFIG_KEY, FORMAT_KEY, MODEL_FORMAT_VERSION};

/// Tensors handed out to a model, by name (shared with the backend that produced them).
pub(crate) type Record = Arc<Mutex<BTreeMap<String, Tensor>>>;

/// Wraps a backend and remembers every tensor it returns.
pub(crate) struct Recording {
    pub inner: Box<dyn SimpleBackend>,
    pub record: Record,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        self.record
            .lock()
            .expect("record lock")
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, dev)?;
        self.record
            .lock()
            .expect("record lock")
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Deterministic initialisation: each tensor drawn from a ChaCha stream seeded by
/// (seed, name), so the result does not depend on construction order. `overrides` wins.
pub(crate) struct SeededInit {
    pub seed: u64,
    pub overrides: HashMap<String, Tensor>,
}

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl SimpleBackend for SeededInit {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(t) = self.overrides.get(name) {
            return t.to_dtype(dtype)?.to_device(dev);
        }
        let n = s.elem_count();
        let mut rng = ChaCha8Rng::seed_from_u64(fnv1a(name.as_bytes(), FNV_OFFSET ^ self.seed));
        let dims = s.dims();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| {
            // Box-Muller: rand 0.8 without rand_distr.
            let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = rng.gen();
            mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let data: Vec<f32> = match h {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| normal(&mut rng, mean, stdev) as f32)
                .collect(),
            Init::Uniform { lo, up } => (0..n).map(|_| rng.gen_range(lo..up) as f32).collect(),
            Init::Kaiming { .. } => {
                // He-uniform on fan-in, the PyTorch default family for conv/linear weights.
                let bound = (6.0 / fan_in as f64).sqrt();
                (0..n)
                    .map(|_| rng.gen_range(-bound..bound) as f32)
                    .collect()
            }
        };
        Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("seeded initialisation needs the shape of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// A mismatch between the tensors a model needs and those a file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadProblems {
    /// Needed, absent: (name, expected shape).
    pub missing: Vec<(String, Vec<usize>)>,
    /// Present with another shape: (name, expected, found).
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Present, not used by this architecture, and not a known-unused backbone tensor.
    pub unexpected: Vec<(String, Vec<usize>)>,
}

impl LoadProblems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.mis_shaped.is_empty() && self.unexpected.is_empty()
    }
    /// One line per problem.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (n, s) in &self.missing {
            lines.push(format!("missing tensor {n} (expected shape {s:?})"));
        }
        for (n, e, f) in &self.mis_shaped {
            lines.push(format!("tensor {n} has shape {f:?}, expected {e:?}"));
        }
        for (n, s) in &self.unexpected {
            lines.push(format!("unexpected tensor {n} (shape {s:?})"));
        }
        lines.join("\n  ")
    }
}

/// Serves tensors from a name map, recording what is missing or mis-shaped instead of
/// failing at the first problem (zeros stand in), so that one load reports everything.
pub(crate) struct Checked {
    pub tensors: HashMap<String, Tensor>,
    pub problems: Arc<Mutex<LoadProblems>>,
    pub used: Arc<Mutex<Vec<String>>>,
}

impl SimpleBackend for Checked {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.used.lock().expect("lock").push(name.to_string());
        match self.tensors.get(name) {
            Some(t) if t.shape() == &s => t.to_dtype(dtype)?.to_device(dev),
            Some(t) => {
                self.problems.lock().expect("lock").mis_shaped.push((
                    name.to_string(),
                    s.dims().to_vec(),
                    t.dims().to_vec(),
                ));
                Tensor::zeros(s, dtype, dev)
            }
            None => {
                self.problems
                    .lock()
                    .expect("lock")
                    .missing
                    .push((name.to_string(), s.dims().to_vec()));
                Tensor::zeros(s, dtype, dev)
            }
        }
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.used.lock().expect("lock").push(name.to_string());
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("missing tensor {name}"),
        }
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Tensors a checkpoint may carry that a model never uses: reported by nobody.
pub(crate) fn silently_ignored(name: &str, cfg: &ModelConfig) -> bool {
    let bb = cfg.arch.backbone_prefix();
    let Some(rest) = name.strip_prefix(bb).and_then(|r| r.strip_prefix('.')) else {
        return name.ends_with("num_batches_tracked");
    };
    rest.starts_with("fc.")
        || (!cfg.arch.multi_level() && rest.starts_with("layer4."))
        || name.ends_with("num_batches_tracked")
}

/// Strips a wrapper prefix (`embeddingnet.` of the triplet wrapper, `module.` of
/// DataParallel) when every name carries it; repeats for nested wrappers.
pub(crate) fn normalise_names(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for prefix in ["module.", "embeddingnet."] {
        if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(prefix)) {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    tensors
}

/// A model file's contents: tensors by name and, when present, the tailor configuration.
pub(crate) struct WeightFile {
    pub tensors: HashMap<String, Tensor>,
    pub config: Option<ModelConfig>,
}

/// Reads safetensors (with optional tailor metadata), a PyTorch zip checkpoint or a
/// legacy (pre-zip) one (`.pth`, `.pth.tar`, `.pt`; the `state_dict` entry when there is one).
pub(crate) fn read_weights(path: &Path, device: &Device) -> Result<WeightFile> {
    let bytes = std::fs::read(path).at(path)?;
    if bytes.starts_with(b"PK\x03\x04") {
        return read_pth(path, device);
    }
    if super::legacy_pth::is_legacy(&bytes) {
        let tensors = super::legacy_pth::read(path, &bytes, device)?;
        return Ok(WeightFile {
            tensors: normalise_names(tensors),
            config: None,
        });
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::invalid(
            path,
            format!("not a safetensors file or PyTorch zip checkpoint: {e}"),
        )
    })?;
    let config = match meta.metadata().as_ref().and_then(|m| {
        m.get(FORMAT_KEY)
            .map(|f| (f.clone(), m.get(CONFIG_KEY).cloned()))
    }) {
        None => None,
        Some((format, cfg)) => {
            let version: u32 = format.parse().map_err(|_| {
                Error::corrupted(path, format!("bad {FORMAT_KEY} metadata {format:?}"))
            })?;
            if version > MODEL_FORMAT_VERSION {
                return Err(Error::IncompatibleVersion {
                    path: path.to_path_buf(),
                    found: version,
                    supported: format!("1..={MODEL_FORMAT_VERSION}"),
                    hint: "upgrade tailor".into(),
                });
            }
            let cfg = cfg.ok_or_else(|| {
                Error::corrupted(
                    path,
                    format!("metadata has {FORMAT_KEY} but no {CONFIG_KEY}"),
                )
            })?;
            let cfg: ModelConfig = serde_json::from_str(&cfg).map_err(|e| {
                Error::corrupted(path, format!("bad model configuration in metadata: {e}"))
            })?;
            Some(cfg)
        }
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::corrupted(path, format!("cannot read tensors: {e}")))?;
    Ok(WeightFile {
        tensors: normalise_names(tensors),
        config,
    })
}

fn read_pth(path: &Path, device: &Device) -> Result<WeightFile> {
    let bad = |e: candle_core::Error| {
        Error::invalid(path, format!("cannot read PyTorch checkpoint: {e}"))
    };
    let with_state = candle_core::pickle::read_all_with_key(path, Some("state_dict"));
    let list = match with_state {
        Ok(l) if !l.is_empty() => l,
        _ => candle_core::pickle::read_all(path).map_err(bad)?,
    };
    let mut tensors = HashMap::new();
    for (name, t) in list {
        tensors.insert(name, t.to_device(device)?);
    }
    Ok(WeightFile {
        tensors: normalise_names(tensors),
        config: None,
    })
}

/// Rewrites a serialised safetensors header with its JSON keys sorted, so that the same
/// model gives the same bytes: safetensors writes its metadata from a `HashMap`, whose
/// order changes from run to run. Offsets are relative to the data, so reordering the
/// header moves nothing; the length is unchanged (same keys, same compact JSON).
fn canonical_header(bytes: &mut [u8]) {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return;
    };
    // serde_json's map is ordered by key (no `preserve_order` feature).
    let Ok(sorted) = serde_json::to_vec(&value) else {
        return;
    };
    if sorted.len() <= len {
        let (dst, pad) = bytes[8..8 + len].split_at_mut(sorted.len());
        dst.copy_from_slice(&sorted);
        pad.fill(b' ');
    }
}

/// Writes tensors and the configuration as safetensors metadata (through a temporary
/// file and a rename, so a mapped older file is never truncated).
pub(crate) fn write_model(
    path: &Path,
    cfg: &ModelConfig,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert(FORMAT_KEY.to_string(), MODEL_FORMAT_VERSION.to_string());
    meta.insert(
        CONFIG_KEY.to_string(),
        serde_json::to_string(cfg).map_err(|e| Error::invalid(path, e.to_string()))?,
    );
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    let mut bytes = safetensors::serialize(cpu, Some(meta))
        .map_err(|e| Error::invalid(path, format!("cannot serialise tensors: {e}")))?;
    canonical_header(&mut bytes);
    crate::fsio::atomic_write(path, &bytes)
}

/// Stable content hash of the configuration and every tensor (FNV-1a 64 over the config
/// JSON, then each name and its little-endian f32 bytes in name order).
pub(crate) fn content_hash(
    cfg: &ModelConfig,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<String> {
    let json = serde_json::to_string(cfg).map_err(|e| Error::Usage(e.to_string()))?;
    let mut h = fnv1a(json.as_bytes(), FNV_OFFSET);
    for (name, t) in tensors {
        h = fnv1a(name.as_bytes(), h);
        let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        h = fnv1a(bytemuck::cast_slice(&v), h);
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_stripped_only_when_universal() {
        let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        let m: HashMap<String, Tensor> = [
            ("embeddingnet.embeddingnet.conv1.weight", t.clone()),
            ("embeddingnet.masks.weight", t.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let n = normalise_names(m);
        assert!(n.contains_key("embeddingnet.conv1.weight"));
        assert!(n.contains_key("masks.weight"));
        let m: HashMap<String, Tensor> = [
            ("embeddingnet.conv1.weight", t.clone()),
            ("masks.weight", t),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let n = normalise_names(m);
        assert!(n.contains_key("embeddingnet.conv1.weight"));
    }

    #[test]
    fn seeded_init_is_deterministic_per_name() {
        let a = SeededInit {
            seed: 7,
            overrides: HashMap::new(),
        };
        let s = Shape::from((3, 4));
        let h = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let x = a.get(s.clone(), "w", h, DType::F32, &Device::Cpu).unwrap();
        let y = a.get(s.clone(), "w", h, DType::F32, &Device::Cpu).unwrap();
        let z = a.get(s, "v", h, DType::F32, &Device::Cpu).unwrap();
        let d = |p: &Tensor, q: &Tensor| {
            (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(d(&x, &y), 0.0);
        assert!(d(&x, &z) > 0.0);
    }
}
