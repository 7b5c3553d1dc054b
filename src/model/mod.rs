//! The ASEN model family on Candle: a ResNet trunk run once per image batch and one
//! attribute-conditioned head per architecture, with the authors' checkpoint names.
//!
//! [`Model::load`] reads a tailor model file (safetensors + configuration in metadata);
//! [`Model::import`] wraps an authors' checkpoint (safetensors or PyTorch zip) with a
//! configuration; [`Model::init`] draws an untrained model; [`Model::trainable`] rebuilds a
//! model on a `VarMap` for training.

pub mod backbone;
pub mod bf16;
pub mod config;
mod fast;
pub mod heads;
pub mod legacy_pth;
pub mod precision;
pub mod preprocess;
pub mod record;
pub mod weights;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

pub use backbone::BackboneOutput;
pub use config::{Arch, BackboneConfig, ModelConfig};
pub use precision::Precision;
pub use preprocess::preprocess;
pub use record::ModelRecord;
pub use weights::LoadProblems;

use crate::error::{Error, Result};
use backbone::ResNet;
use heads::{ag_man::AgManHead, asen::AsenHead, asen_v2::AsenV2Head, csn::CsnHead, HeadForward};
use weights::{Checked, Record, Recording, SeededInit};

/// A compute device, by name: `cpu`, `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal; `explicit` keeps whether it was written `cuda:N` (for messages).
    Cuda { ordinal: usize, explicit: bool },
}

impl DeviceSpec {
    /// Opens the device. CUDA needs a build with the `cuda` feature, the NVIDIA driver and
    /// a GPU with that ordinal; each missing piece is a [`Error::Usage`] saying which,
    /// never a panic.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda { ordinal, .. } => open_cuda(&self.to_string(), ordinal),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(spec: &str) -> Result<DeviceSpec> {
        match spec {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda {
                ordinal: 0,
                explicit: false,
            }),
            s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(DeviceSpec::Cuda {
                    ordinal,
                    explicit: true,
                }),
                _ => Err(Error::Usage(format!(
                    "unknown device {spec:?}: expected cpu, cuda or cuda:N (N a GPU ordinal)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda {
                explicit: false, ..
            } => f.write_str("cuda"),
            DeviceSpec::Cuda { ordinal, .. } => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Parses `cpu`, `cuda` or `cuda:N` ([`DeviceSpec`]) and opens that device.
pub fn device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

fn no_bf16_cpu() -> Error {
    Error::Usage(format!(
        "precision bf16 needs a CPU with AVX512-BF16 (x86-64 AVX512F+BW+BF16), and this \
         one has none{}; use precision f32 (or auto, which falls back to f32)",
        if std::env::var(bf16::DISABLE_ENV).is_ok_and(|v| v != "0") {
            format!(" ({} is set)", bf16::DISABLE_ENV)
        } else {
            String::new()
        }
    ))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &str, _ordinal: usize) -> Result<Device> {
    Err(Error::Usage(format!(
        "device {spec:?}: this tailor was built without CUDA; rebuild with \
         `cargo build --release --features cuda` (README: Building with CUDA)"
    )))
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &str, ordinal: usize) -> Result<Device> {
    use candle_core::cuda_backend::cudarc::driver::{result, CudaContext};
    // cuInit fails without a GPU (CUDA_ERROR_NO_DEVICE) or with a driver older than the
    // CUDA this build targets (CUDA_ERROR_INSUFFICIENT_DRIVER).
    result::init().map_err(|e| {
        Error::Usage(format!(
            "device {spec:?}: CUDA cannot start ({e:?}): no NVIDIA GPU visible, or its \
             driver is missing or older than this build's CUDA"
        ))
    })?;
    let count = CudaContext::device_count().map_err(|e| {
        Error::Usage(format!(
            "device {spec:?}: cannot count CUDA devices ({e:?})"
        ))
    })?;
    let count = count.max(0) as usize;
    if ordinal >= count {
        return Err(Error::Usage(match count {
            0 => format!("device {spec:?}: no CUDA device on this machine"),
            n => format!(
                "device {spec:?}: no CUDA device {ordinal}; this machine has {n} (cuda:0 to cuda:{})",
                n - 1
            ),
        }));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Usage(format!("device {spec:?}: cannot open the GPU: {e}")))
}

/// Parses a compute precision for [`Model::with_compute_dtype`]: `f32`, `bf16` or `f16`.
pub fn compute_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(Error::Usage(format!(
            "unknown precision {other:?}: expected f32, bf16 or f16"
        ))),
    }
}

/// The outputs of a training-mode (or per-image-attribute) forward pass.
pub struct HeadOutput {
    /// `[B, dim]` L2-normalised embeddings, one per (image, its attribute).
    pub embeddings: Tensor,
    /// `[B, h, w]` spatial attention (uniform for heads that average-pool).
    pub attention: Tensor,
    /// AG-MAN's `[B, n]` attribute classification logits.
    pub logits: Option<Tensor>,
}

/// One architecture's head on a backbone map. Built on the model's own variables, it is
/// also what training runs alone on cached maps when the backbone is frozen.
pub enum Head {
    Asen(AsenHead),
    AsenV2(AsenV2Head),
    AgMan(AgManHead),
    Csn(CsnHead),
}

/// The attribute-independent part of a head's work on one map, computed once and shared
/// by every attribute.
enum ImagePart {
    Asen(Option<Tensor>),
    AsenV2(Tensor),
    AgMan(Tensor, Tensor),
    Csn(Tensor),
}

impl Head {
    /// The head of `cfg.arch` under `vb`'s root, with the model's tensor names.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Head> {
        let n = cfg.num_attributes();
        let c = cfg.map_channels();
        let hid = cfg.hidden_dim;
        Ok(match cfg.arch {
            Arch::Asen => Head::Asen(AsenHead::new(vb, c, hid, n, true, true)?),
            Arch::AsenNoAsa => Head::Asen(AsenHead::new(vb, c, hid, n, false, true)?),
            Arch::AsenNoAca => Head::Asen(AsenHead::new(vb, c, hid, n, true, false)?),
            Arch::AsenV2 => Head::AsenV2(AsenV2Head::new(vb, c, hid, n)?),
            Arch::AgMan => Head::AgMan(AgManHead::new(vb, c, hid, n)?),
            Arch::Csn => Head::Csn(CsnHead::new(vb, c, cfg.embed_dim, n, true)?),
            Arch::Triplet => Head::Csn(CsnHead::new(vb, c, cfg.embed_dim, n, false)?),
        })
    }

    fn image_part(&self, map: &Tensor, train: bool) -> candle_core::Result<ImagePart> {
        Ok(match self {
            Head::Asen(h) => ImagePart::Asen(h.image_part(map)?),
            Head::AsenV2(h) => ImagePart::AsenV2(h.image_part(map, train)?),
            Head::AgMan(h) => {
                let (y, p) = h.image_part(map, train)?;
                ImagePart::AgMan(y, p)
            }
            Head::Csn(h) => ImagePart::Csn(h.image_part(map)?),
        })
    }

    fn attend(
        &self,
        map: &Tensor,
        part: &ImagePart,
        attrs: &Tensor,
    ) -> candle_core::Result<HeadForward> {
        match (self, part) {
            (Head::Asen(h), ImagePart::Asen(p)) => h.attend(map, p.as_ref(), attrs),
            (Head::AsenV2(h), ImagePart::AsenV2(p)) => h.attend(map, p, attrs),
            (Head::AgMan(h), ImagePart::AgMan(y, p)) => h.attend(y, p, attrs),
            (Head::Csn(h), ImagePart::Csn(e)) => h.attend(map, e, attrs),
            _ => candle_core::bail!("internal: head and image part of different kinds"),
        }
    }

    /// Image i of `map` (`[B, C, h, w]`) embedded for attribute `attrs[i]` (`[B]` u32);
    /// batch norm (ASENet_V2, AG-MAN) uses batch statistics when `train`.
    pub fn forward_t(
        &self,
        map: &Tensor,
        attrs: &Tensor,
        train: bool,
    ) -> candle_core::Result<HeadForward> {
        self.attend(map, &self.image_part(map, train)?, attrs)
    }
}

/// A model of the ASEN family: configuration, trunk, head, and the tensors it was built
/// from (for saving and hashing).
pub struct Model {
    cfg: ModelConfig,
    backbone: ResNet,
    head: Head,
    tensors: Record,
    device: Device,
    /// Batch-norm-folded channels-last trunk for eval-mode CPU inference (absent for
    /// trainable models, whose weights change).
    fast: Option<fast::FastTrunk>,
    /// The trunk's precision in effect (f32 or bf16, never auto).
    precision: Precision,
    /// The dtype of the candle-ops path (weights, activations); outputs are always f32.
    dtype: DType,
    /// Whether the tensors are Vars that training may change (no identity caching then).
    trainable: bool,
    identity: std::sync::OnceLock<String>,
}

/// The dispatch point between the two inference paths: the folded channels-last trunk
/// (`fast.rs`) is CPU f32 code; every other device or dtype runs candle's ops, which
/// candle implements for the GPU (and which equal the fast path, see
/// `tests/device_paths.rs`).
fn uses_fast_trunk(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
}

fn build_parts(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<(ResNet, Head)> {
    let n = cfg.num_attributes();
    let multi = cfg.arch.multi_level().then_some(n);
    let backbone = ResNet::new(vb.pp(cfg.arch.backbone_prefix()), &cfg.backbone, multi)?;
    let head = Head::new(cfg, vb)?;
    Ok((backbone, head))
}

impl Model {
    /// Builds a model from any tensor source, recording the tensors it takes.
    fn build(
        cfg: ModelConfig,
        inner: Box<dyn SimpleBackend>,
        device: &Device,
        fold: bool,
    ) -> Result<Model> {
        cfg.validate("model configuration")?;
        let record: Record = Arc::new(Mutex::new(BTreeMap::new()));
        let backend = Recording {
            inner,
            record: record.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let (backbone, head) = build_parts(&cfg, vb)?;
        let fast = if fold && uses_fast_trunk(device, DType::F32) {
            Some(fast::FastTrunk::fold(&backbone)?)
        } else {
            None
        };
        Ok(Model {
            cfg,
            backbone,
            head,
            tensors: record,
            device: device.clone(),
            fast,
            precision: Precision::F32,
            dtype: DType::F32,
            trainable: !fold,
            identity: std::sync::OnceLock::new(),
        })
    }

    /// An untrained model: He-uniform convolutions and linears, identity batch norm,
    /// N(0, 1) attribute embeddings, CSN masks N(0.9, 0.7), AG-MAN's block masks; every
    /// tensor drawn from `seed` and its name, so the same seed gives the same model.
    pub fn init(cfg: ModelConfig, seed: u64, device: &Device) -> Result<Model> {
        let n = cfg.num_attributes();
        let mut overrides = HashMap::new();
        match cfg.arch {
            Arch::AgMan => {
                let m = AgManHead::initial_masks(n, cfg.hidden_dim);
                overrides.insert(
                    "masks.weight".to_string(),
                    Tensor::from_vec(m, (n, cfg.hidden_dim), &Device::Cpu)?,
                );
            }
            Arch::Csn => {
                let init = SeededInit {
                    seed,
                    overrides: HashMap::new(),
                };
                let t = init.get(
                    (n, cfg.embed_dim).into(),
                    "masks.weight",
                    candle_nn::Init::Randn {
                        mean: 0.9,
                        stdev: 0.7,
                    },
                    DType::F32,
                    &Device::Cpu,
                )?;
                overrides.insert("masks.weight".to_string(), t);
            }
            _ => {}
        }
        Model::build(cfg, Box::new(SeededInit { seed, overrides }), device, true)
    }

    /// Builds a model for `cfg` from named tensors, reporting every missing, mis-shaped or
    /// unexpected tensor at once. `source` names the file in errors.
    fn from_tensors(
        cfg: ModelConfig,
        tensors: HashMap<String, Tensor>,
        source: &Path,
        device: &Device,
    ) -> Result<Model> {
        let problems = Arc::new(Mutex::new(LoadProblems::default()));
        let used = Arc::new(Mutex::new(Vec::new()));
        let names: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().to_vec()))
            .collect();
        let checked = Checked {
            tensors,
            problems: problems.clone(),
            used: used.clone(),
        };
        let model = Model::build(cfg, Box::new(checked), device, true)?;
        let mut problems = problems.lock().expect("lock").clone();
        let used: std::collections::HashSet<String> =
            used.lock().expect("lock").iter().cloned().collect();
        for (name, shape) in names {
            if !used.contains(&name) && !weights::silently_ignored(&name, &model.cfg) {
                problems.unexpected.push((name, shape));
            }
        }
        problems.missing.sort();
        problems.mis_shaped.sort();
        problems.unexpected.sort();
        if !problems.is_empty() {
            return Err(Error::invalid(
                source,
                format!(
                    "weights do not fit a {} model with backbone {}:\n  {}",
                    model.cfg.arch,
                    model.cfg.backbone.name(),
                    problems.describe()
                ),
            ));
        }
        Ok(model)
    }

    /// Loads a tailor model file (safetensors whose metadata carries the configuration).
    pub fn load(path: &Path, device: &Device) -> Result<Model> {
        let file = weights::read_weights(path, device)?;
        let cfg = file.config.ok_or_else(|| {
            Error::invalid(
                path,
                "no tailor model configuration in this file's metadata; wrap an authors' \
                 checkpoint with `tailor model import`",
            )
        })?;
        cfg.validate(&path.display().to_string())?;
        Model::from_tensors(cfg, file.tensors, path, device)
    }

    /// Wraps a checkpoint (safetensors or PyTorch zip `.pth`/`.pth.tar`, names with or
    /// without `embeddingnet.`) with a configuration; a configuration in the file is ignored.
    pub fn import(path: &Path, cfg: ModelConfig, device: &Device) -> Result<Model> {
        cfg.validate(&path.display().to_string())?;
        let file = weights::read_weights(path, device)?;
        Model::from_tensors(cfg, file.tensors, path, device)
    }

    /// Rebuilds this model on `varmap` (every tensor becomes a trainable `Var`, batch-norm
    /// running statistics included, holding this model's values). `VarMap::save` or
    /// [`Model::save`] on the result persist the trained values.
    pub fn trainable(&self, varmap: &VarMap) -> Result<Model> {
        let model = Model::build(
            self.cfg.clone(),
            Box::new(varmap.clone()),
            &self.device,
            false,
        )?;
        let src = self.tensors.lock().expect("lock");
        // VarMap shares its storage between clones; set_one only needs a handle.
        let mut handle = varmap.clone();
        for (name, t) in src.iter() {
            handle.set_one(name, t)?;
        }
        drop(src);
        Ok(model)
    }

    /// Saves weights and configuration as one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        weights::write_model(path, &self.cfg, &self.tensors.lock().expect("lock"))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype inference computes in (f32 unless [`Model::with_compute_dtype`] changed it).
    pub fn compute_dtype(&self) -> DType {
        self.dtype
    }

    /// This inference model computing in `dtype` on its device: the weights converted once,
    /// images converted on entry, embeddings, attention and logits returned as f32. Reduced
    /// precision runs candle's ops (the GPU path); on the CPU, candle has f16 but no bf16
    /// matrix products, so bf16 there is refused. Identity and saved weights stay those of
    /// the f32 model, so an index embedded in bf16 still names the model that made it.
    pub fn with_compute_dtype(&self, dtype: DType) -> Result<Model> {
        if self.trainable {
            return Err(Error::Usage(
                "reduced precision is for inference; training computes in f32".into(),
            ));
        }
        match dtype {
            DType::F32 | DType::F16 => {}
            DType::BF16 if !self.device.is_cpu() => {}
            DType::BF16 => {
                return Err(Error::Usage(
                    "bf16 needs a GPU here (candle's CPU matrix products have no bf16); use \
                     f32, or f16 (slow) on the CPU"
                        .into(),
                ))
            }
            other => {
                return Err(Error::Usage(format!(
                    "compute dtype {other:?}: expected f32, bf16 or f16"
                )))
            }
        }
        let identity = self.identity()?;
        let tensors: HashMap<String, Tensor> = self
            .tensors
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, dtype, &self.device);
        let (backbone, head) = build_parts(&self.cfg, vb)?;
        let fast = if uses_fast_trunk(&self.device, dtype) {
            Some(fast::FastTrunk::fold(&backbone)?)
        } else {
            None
        };
        let model = Model {
            cfg: self.cfg.clone(),
            backbone,
            head,
            // The f32 originals: saving and hashing see the model as loaded.
            tensors: self.tensors.clone(),
            device: self.device.clone(),
            fast,
            precision: Precision::F32,
            dtype,
            trainable: false,
            identity: std::sync::OnceLock::new(),
        };
        let _ = model.identity.set(identity);
        Ok(model)
    }

    /// f32 outputs whatever the compute dtype.
    fn to_f32(&self, t: Tensor) -> Result<Tensor> {
        if t.dtype() == DType::F32 {
            Ok(t)
        } else {
            Ok(t.to_dtype(DType::F32)?)
        }
    }

    /// Number of scalar parameters (batch-norm statistics included).
    pub fn parameter_count(&self) -> usize {
        self.tensors
            .lock()
            .expect("lock")
            .values()
            .map(|t| t.elem_count())
            .sum()
    }

    /// Names and shapes of every tensor, in name order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, t)| (n.clone(), t.dims().to_vec()))
            .collect()
    }

    /// Stable content hash of configuration and weights (16 hex digits; FNV-1a 64 over the
    /// configuration JSON and every tensor's name and f32 bytes). Computed once for an
    /// inference model; recomputed on every call for a trainable one.
    pub fn identity(&self) -> Result<String> {
        if let Some(id) = self.identity.get() {
            return Ok(id.clone());
        }
        let id = weights::content_hash(&self.cfg, &self.tensors.lock().expect("lock"))?;
        if !self.trainable {
            let _ = self.identity.set(id.clone());
        }
        Ok(id)
    }

    /// Runs the trunk: the head's input map (in the compute dtype) and AG-MAN's logits (f32).
    pub fn backbone_forward(&self, images: &Tensor, train: bool) -> Result<BackboneOutput> {
        self.check_images(images)?;
        let converted;
        let images = if images.dtype() == self.dtype {
            images
        } else {
            converted = images.to_dtype(self.dtype)?;
            &converted
        };
        let out = match &self.fast {
            Some(fast) if !train => {
                let multi = self.cfg.arch.multi_level();
                let (x2, x3) = fast.forward(images, multi)?;
                let x3 = x3.to_nchw(&self.device)?;
                match x2 {
                    Some(x2) => self.backbone.finish(x2.to_nchw(&self.device)?, x3, false)?,
                    None => BackboneOutput {
                        map: x3,
                        logits: None,
                    },
                }
            }
            _ => self.backbone.forward_t(images, train)?,
        };
        Ok(BackboneOutput {
            logits: out.logits.map(|l| self.to_f32(l)).transpose()?,
            map: out.map,
        })
    }

    /// Whether eval-mode forwards use the folded channels-last trunk (CPU models built for
    /// inference). [`Model::set_fast_inference`] turns it off, e.g. to compare.
    pub fn fast_inference(&self) -> bool {
        self.fast.is_some()
    }

    /// Drops (false) or rebuilds (true, CPU f32 compute only) the folded inference trunk,
    /// in the precision set before. Off, a CPU model runs the candle-ops path a GPU runs,
    /// which is how tests compare the two.
    pub fn set_fast_inference(&mut self, on: bool) -> Result<()> {
        self.fast = if on && !self.trainable && uses_fast_trunk(&self.device, self.dtype) {
            let mut t = fast::FastTrunk::fold(&self.backbone)?;
            if self.precision == Precision::Bf16 {
                t.use_bf16(bf16::Kernel::detect().ok_or_else(no_bf16_cpu)?);
            }
            Some(t)
        } else {
            None
        };
        Ok(())
    }

    /// Sets the precision of eval-mode forwards and returns the one in effect (`auto`
    /// resolved). bf16 converts the trunk's folded weights once, here; it needs the
    /// folded CPU trunk (a CPU model built for inference) and a CPU with AVX512-BF16,
    /// and is refused with a [`Error::Usage`] otherwise. `auto` is bf16 exactly where
    /// [`Model::bf16_available`] holds.
    pub fn set_precision(&mut self, p: Precision) -> Result<Precision> {
        let p = match p {
            Precision::Auto if self.bf16_available() => Precision::Bf16,
            Precision::Auto => Precision::F32,
            p => p,
        };
        if !self.device.is_cpu() {
            // On a GPU, bf16 is candle's bf16 ops on the device (f32 outputs); `auto` stays
            // f32 there, since its rule is about the CPU's bf16 instructions.
            let dtype = match p {
                Precision::Bf16 => DType::BF16,
                _ => DType::F32,
            };
            if dtype != self.dtype {
                *self = self.with_compute_dtype(dtype)?;
            }
            self.precision = p;
            return Ok(p);
        }
        if p == Precision::Bf16 {
            let kernel = bf16::Kernel::detect().ok_or_else(no_bf16_cpu)?;
            let fast = self.fast.as_mut().ok_or_else(|| {
                Error::Usage(format!(
                    "precision bf16 runs on the CPU inference trunk; this model is on {:?}{}: \
                     use precision f32",
                    self.device.location(),
                    if self.trainable { " and trainable" } else { "" }
                ))
            })?;
            if fast.bf16_kernel().is_none() {
                fast.use_bf16(kernel);
            }
        } else if self.precision == Precision::Bf16 {
            self.precision = Precision::F32;
            self.set_fast_inference(self.fast.is_some())?;
        }
        self.precision = p;
        Ok(p)
    }

    /// The precision in effect: f32 or bf16.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether precision bf16 (and so `auto`) can run here: a CPU inference model on a
    /// CPU with AVX512-BF16.
    pub fn bf16_available(&self) -> bool {
        self.fast.is_some() && bf16::Kernel::detect().is_some()
    }

    /// The bf16 kernel in use (`avx512-bf16`), `None` in f32.
    pub fn bf16_kernel(&self) -> Option<&'static str> {
        self.fast
            .as_ref()
            .and_then(|f| f.bf16_kernel())
            .map(|k| k.name())
    }

    /// Training-mode (or mixed-attribute) forward: image i embedded for attribute
    /// `attrs[i]` (`[B]` u32). Batch norm uses batch statistics when `train`.
    pub fn forward_t(&self, images: &Tensor, attrs: &Tensor, train: bool) -> Result<HeadOutput> {
        let out = self.backbone_forward(images, train)?;
        let attrs = self.check_attr_tensor(attrs, images.dim(0)?)?;
        let h = self.head.forward_t(&out.map, &attrs, train)?;
        Ok(HeadOutput {
            embeddings: self.to_f32(h.embeddings)?,
            attention: self.to_f32(h.attention)?,
            logits: out.logits,
        })
    }

    /// Runs the heads for each attribute of `attrs` on an already computed trunk output.
    pub fn heads_forward(&self, out: &BackboneOutput, attrs: &[usize]) -> Result<Vec<HeadOutput>> {
        let b = out.map.dim(0)?;
        for &a in attrs {
            self.check_attr(a)?;
        }
        let part = self.head.image_part(&out.map, false)?;
        attrs
            .iter()
            .map(|&a| {
                let ids = Tensor::full(a as u32, b, &self.device)?;
                let h = self.head.attend(&out.map, &part, &ids)?;
                Ok(HeadOutput {
                    embeddings: self.to_f32(h.embeddings)?,
                    attention: self.to_f32(h.attention)?,
                    logits: out.logits.clone(),
                })
            })
            .collect()
    }

    /// Every image in every requested attribute's space, the trunk run once:
    /// `[attr]` of `[B, dim]`.
    pub fn embed(&self, images: &Tensor, attrs: &[usize]) -> Result<Vec<Tensor>> {
        let out = self.backbone_forward(images, false)?;
        Ok(self
            .heads_forward(&out, attrs)?
            .into_iter()
            .map(|h| h.embeddings)
            .collect())
    }

    /// Spatial attention per requested attribute: `[attr]` of `[B, h, w]`.
    pub fn attention_maps(&self, images: &Tensor, attrs: &[usize]) -> Result<Vec<Tensor>> {
        let out = self.backbone_forward(images, false)?;
        Ok(self
            .heads_forward(&out, attrs)?
            .into_iter()
            .map(|h| h.attention)
            .collect())
    }

    /// Every level of spatial attention per requested attribute, for pictures:
    /// `[attr][level]` of `[B, h, w]`, levels named by [`Model::attention_levels_names`].
    /// One level for most heads (uniform for those that average-pool); AG-MAN has two,
    /// its attribute-guided softmax and its CBAM-style spatial gate (values in (0, 1)).
    pub fn attention_levels(&self, images: &Tensor, attrs: &[usize]) -> Result<Vec<Vec<Tensor>>> {
        let out = self.backbone_forward(images, false)?;
        for &a in attrs {
            self.check_attr(a)?;
        }
        let b = out.map.dim(0)?;
        let part = self.head.image_part(&out.map, false)?;
        attrs
            .iter()
            .map(|&a| {
                let ids = Tensor::full(a as u32, b, &self.device)?;
                Ok(match (&self.head, &part) {
                    (Head::AgMan(h), ImagePart::AgMan(y, p)) => {
                        let (f, gate) = h.attend_levels(y, p, &ids)?;
                        vec![f.attention, gate]
                    }
                    _ => vec![self.head.attend(&out.map, &part, &ids)?.attention],
                })
            })
            .collect()
    }

    /// Names of the levels [`Model::attention_levels`] returns.
    pub fn attention_levels_names(&self) -> &'static [&'static str] {
        match self.cfg.arch {
            Arch::AgMan => &["attribute-guided", "spatial gate"],
            Arch::Csn | Arch::Triplet | Arch::AsenNoAsa => &["uniform (average pooling)"],
            _ => &["spatial attention"],
        }
    }

    fn check_images(&self, images: &Tensor) -> Result<()> {
        match images.dims() {
            [_, 3, h, w] if *h >= 32 && *w >= 32 => Ok(()),
            d => Err(Error::Usage(format!(
                "images must be [B, 3, H, W] with H, W >= 32, got {d:?}"
            ))),
        }
    }

    fn check_attr(&self, a: usize) -> Result<()> {
        if a >= self.cfg.num_attributes() {
            return Err(Error::Usage(format!(
                "attribute index {a} out of range: the model has {} attributes ({})",
                self.cfg.num_attributes(),
                self.cfg.attributes.join(", ")
            )));
        }
        Ok(())
    }

    fn check_attr_tensor(&self, attrs: &Tensor, batch: usize) -> Result<Tensor> {
        if attrs.dims() != [batch] {
            return Err(Error::Usage(format!(
                "attribute ids must be [B] = [{batch}], got {:?}",
                attrs.dims()
            )));
        }
        let attrs = attrs.to_dtype(DType::U32)?;
        let max = attrs.max_all()?.to_scalar::<u32>()? as usize;
        self.check_attr(max)?;
        Ok(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(arch: Arch) -> ModelConfig {
        ModelConfig::new(
            arch,
            BackboneConfig::tiny(),
            vec!["a".into(), "b".into(), "c".into()],
            vec![],
        )
    }

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
    }

    #[test]
    fn every_arch_embeds_with_expected_shapes() {
        let dev = Device::Cpu;
        let images = Tensor::randn(0f32, 1.0, (2, 3, 64, 48), &dev).unwrap();
        for arch in Arch::ALL {
            let m = Model::init(tiny(arch), 1, &dev).unwrap();
            let embs = m.embed(&images, &[0, 2]).unwrap();
            assert_eq!(embs.len(), 2);
            assert_eq!(embs[0].dims(), [2, m.config().embed_dim], "{arch}");
            let norms = embs[1]
                .sqr()
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                norms.iter().all(|n| (n - 1.0).abs() < 1e-4),
                "{arch}: {norms:?}"
            );
            let att = m.attention_maps(&images, &[1]).unwrap();
            assert_eq!(att[0].dims(), [2, 4, 3], "{arch}");
            let sums = att[0].sum((1, 2)).unwrap().to_vec1::<f32>().unwrap();
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{arch}");
        }
    }

    #[test]
    fn save_load_round_trip_keeps_identity_and_outputs() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = Model::init(tiny(Arch::AgMan), 3, &dev).unwrap();
        m.save(&path).unwrap();
        let back = Model::load(&path, &dev).unwrap();
        assert_eq!(back.config(), m.config());
        assert_eq!(back.identity().unwrap(), m.identity().unwrap());
        let again = Model::init(tiny(Arch::AgMan), 3, &dev).unwrap();
        assert_eq!(again.identity().unwrap(), m.identity().unwrap());
        let other = Model::init(tiny(Arch::AgMan), 4, &dev).unwrap();
        assert_ne!(other.identity().unwrap(), m.identity().unwrap());
        let images = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &dev).unwrap();
        let a = m.embed(&images, &[1]).unwrap().remove(0);
        let b = back.embed(&images, &[1]).unwrap().remove(0);
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn wrong_architecture_reports_tensors_by_name() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        Model::init(tiny(Arch::Asen), 0, &dev)
            .unwrap()
            .save(&path)
            .unwrap();
        let err = Model::import(&path, tiny(Arch::AsenV2), &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("missing tensor attr_embedding.weight (expected shape [3, 16])"),
            "{err}"
        );
        assert!(
            err.contains("tensor fc1.weight has shape [16, 128], expected [16, 80]"),
            "{err}"
        );
        assert!(
            err.contains("unexpected tensor mask_fc1.weight (shape [16, 3])"),
            "{err}"
        );
        let mut four = tiny(Arch::Asen);
        four.attributes.push("d".into());
        let err = Model::import(&path, four, &dev).err().unwrap().to_string();
        assert!(
            err.contains("mask_fc1.weight has shape [16, 3], expected [16, 4]"),
            "{err}"
        );
    }

    #[test]
    fn forward_t_mixed_attributes_matches_per_attribute_embed() {
        let dev = Device::Cpu;
        let m = Model::init(tiny(Arch::AsenV2), 5, &dev).unwrap();
        let images = Tensor::randn(0f32, 1.0, (3, 3, 64, 64), &dev).unwrap();
        let ids = Tensor::new(&[2u32, 0, 1], &dev).unwrap();
        let out = m.forward_t(&images, &ids, false).unwrap();
        let per = m.embed(&images, &[0, 1, 2]).unwrap();
        for (i, a) in [2usize, 0, 1].into_iter().enumerate() {
            let d = (out.embeddings.get(i).unwrap() - per[a].get(i).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "{d}");
        }
        assert!(m
            .forward_t(&images, &Tensor::new(&[3u32, 0, 0], &dev).unwrap(), false)
            .is_err());
    }

    #[test]
    fn bf16_precision_stays_close_to_f32_and_switches_back_exactly() {
        let dev = Device::Cpu;
        let mut m = Model::init(tiny(Arch::AgMan), 4, &dev).unwrap();
        let images = Tensor::randn(0f32, 1.0, (1, 3, 64, 48), &dev).unwrap();
        let f32_embs = m.embed(&images, &[0, 2]).unwrap();
        if bf16::Kernel::detect().is_none() {
            assert!(!m.bf16_available());
            assert!(matches!(
                m.set_precision(Precision::Bf16),
                Err(Error::Usage(_))
            ));
            assert_eq!(m.set_precision(Precision::Auto).unwrap(), Precision::F32);
            return;
        }
        assert_eq!(m.set_precision(Precision::Auto).unwrap(), Precision::Bf16);
        assert_eq!(m.bf16_kernel(), Some("avx512-bf16"));
        let bf = m.embed(&images, &[0, 2]).unwrap();
        for (a, b) in f32_embs.iter().zip(&bf) {
            let cos = (a * b).unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
            assert!(cos.iter().all(|&c| c > 0.99 && c < 1.0), "{cos:?}");
        }
        // Rebuilding the folded trunk keeps bf16; f32 again gives the f32 outputs exactly.
        m.set_fast_inference(true).unwrap();
        assert_eq!(m.bf16_kernel(), Some("avx512-bf16"));
        assert_eq!(m.set_precision(Precision::F32).unwrap(), Precision::F32);
        assert_eq!(m.bf16_kernel(), None);
        let again = m.embed(&images, &[0, 2]).unwrap();
        for (a, b) in f32_embs.iter().zip(&again) {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
        // The trainable copy has no folded trunk: bf16 refused, auto is f32.
        let mut t = m.trainable(&VarMap::new()).unwrap();
        assert!(matches!(
            t.set_precision(Precision::Bf16),
            Err(Error::Usage(_))
        ));
        assert_eq!(t.set_precision(Precision::Auto).unwrap(), Precision::F32);
    }

    #[test]
    fn trainable_model_updates_batch_norm_and_has_gradients() {
        let dev = Device::Cpu;
        let m = Model::init(tiny(Arch::Asen), 2, &dev).unwrap();
        let vm = VarMap::new();
        let t = m.trainable(&vm).unwrap();
        assert_eq!(t.identity().unwrap(), m.identity().unwrap());
        let images = Tensor::randn(0f32, 1.0, (4, 3, 64, 64), &dev).unwrap();
        let ids = Tensor::new(&[0u32, 1, 2, 0], &dev).unwrap();
        let out = t.forward_t(&images, &ids, true).unwrap();
        let loss = out.embeddings.sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = vm.data().lock().unwrap();
        let stem = data.get("backbonenet.conv1.weight").unwrap();
        assert!(grads.get(stem.as_tensor()).is_some());
        drop(data);
        // Running statistics moved, so the hash changed.
        assert_ne!(t.identity().unwrap(), m.identity().unwrap());
    }
}
