//! Model configuration: architecture, backbone shape, attribute schema, pre-processing.
//! Stored as JSON in the model file's safetensors metadata (key [`CONFIG_KEY`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Safetensors metadata key holding the JSON [`ModelConfig`].
pub const CONFIG_KEY: &str = "tailor.model_config";
/// Safetensors metadata key holding the model-file format version.
pub const FORMAT_KEY: &str = "tailor.model_format";
/// Current model-file format version.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// The architectures of the ASEN family and the paper's baselines and ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ASEN (AAAI 2020): attribute-aware spatial (ASA) + channel (ACA) attention.
    Asen,
    /// ASENet_V2, the authors' "advanced version".
    AsenV2,
    /// AG-MAN (IEEE Access): multi-level backbone, spatial attention, classification logits.
    AgMan,
    /// Conditional Similarity Network: one learned mask per attribute.
    Csn,
    /// Plain triplet network: one general space for every attribute.
    Triplet,
    /// ASEN ablation without ASA: uniform pooling instead of spatial attention.
    AsenNoAsa,
    /// ASEN ablation without ACA: no channel gate.
    AsenNoAca,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::Asen,
        Arch::AsenV2,
        Arch::AgMan,
        Arch::Csn,
        Arch::Triplet,
        Arch::AsenNoAsa,
        Arch::AsenNoAca,
    ];

    /// The command-line / serde name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Asen => "asen",
            Arch::AsenV2 => "asen-v2",
            Arch::AgMan => "ag-man",
            Arch::Csn => "csn",
            Arch::Triplet => "triplet",
            Arch::AsenNoAsa => "asen-no-asa",
            Arch::AsenNoAca => "asen-no-aca",
        }
    }

    /// Prefix of the backbone's tensors (below the optional outer `embeddingnet.`).
    pub fn backbone_prefix(self) -> &'static str {
        match self {
            Arch::Csn | Arch::Triplet => "embeddingnet",
            _ => "backbonenet",
        }
    }

    /// Whether the backbone runs past layer3 (AG-MAN's multi-level variant).
    pub fn multi_level(self) -> bool {
        self == Arch::AgMan
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown architecture {s:?} (known: {})",
                    Arch::ALL.map(|a| a.name()).join(", ")
                ))
            })
    }
}

/// A ResNet of bottleneck blocks (expansion 4) with torchvision parameter names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackboneConfig {
    /// torchvision ResNet-50: stem 64, planes 64/128/256/512, blocks 3/4/6/3.
    Resnet50,
    /// A small ResNet for tests and experiments.
    Tiny {
        /// Output channels of the 7x7 stem.
        stem: usize,
        /// Bottleneck width ("planes") of layer1..layer4; a layer outputs 4x its width.
        widths: [usize; 4],
        /// Blocks per layer.
        blocks: [usize; 4],
    },
}

impl BackboneConfig {
    /// The default tiny configuration: a 64-channel map from layer3.
    pub fn tiny() -> Self {
        BackboneConfig::Tiny {
            stem: 8,
            widths: [4, 8, 16, 16],
            blocks: [2, 1, 2, 1],
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            BackboneConfig::Resnet50 => "resnet50",
            BackboneConfig::Tiny { .. } => "tiny",
        }
    }
    pub fn stem(&self) -> usize {
        match self {
            BackboneConfig::Resnet50 => 64,
            BackboneConfig::Tiny { stem, .. } => *stem,
        }
    }
    pub fn widths(&self) -> [usize; 4] {
        match self {
            BackboneConfig::Resnet50 => [64, 128, 256, 512],
            BackboneConfig::Tiny { widths, .. } => *widths,
        }
    }
    pub fn blocks(&self) -> [usize; 4] {
        match self {
            BackboneConfig::Resnet50 => [3, 4, 6, 3],
            BackboneConfig::Tiny { blocks, .. } => *blocks,
        }
    }
    /// Output channels of layer `l` (1-based, as in `layer1..layer4`).
    pub fn channels(&self, layer: usize) -> usize {
        self.widths()[layer - 1] * 4
    }
}

/// Everything needed to rebuild a model from its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub backbone: BackboneConfig,
    /// Attribute names; attribute index = position (the order of the authors' `meta.json`).
    pub attributes: Vec<String>,
    /// Value names per attribute (may be empty for an attribute whose values are unknown).
    pub values: Vec<Vec<String>>,
    /// Square input side in pixels (shorter side resized to this, then centre-cropped).
    pub input_size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Output embedding dimension.
    pub embed_dim: usize,
    /// Width of the attention spaces (512 in the papers).
    pub hidden_dim: usize,
}

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl ModelConfig {
    /// A configuration with the papers' defaults for this backbone: 224 px and hidden width
    /// 512 for ResNet-50, 64 px and width 16 for tiny; ImageNet normalisation; the
    /// architecture's natural output dimension (CSN/triplet: 1024, or the map width for tiny).
    pub fn new(
        arch: Arch,
        backbone: BackboneConfig,
        attributes: Vec<String>,
        values: Vec<Vec<String>>,
    ) -> Self {
        let (input_size, hidden_dim) = match backbone {
            BackboneConfig::Resnet50 => (224, 512),
            BackboneConfig::Tiny { .. } => (64, 16),
        };
        let map = backbone.channels(3);
        let embed_dim = match arch {
            Arch::AgMan => hidden_dim,
            Arch::Csn | Arch::Triplet => match backbone {
                BackboneConfig::Resnet50 => 1024,
                BackboneConfig::Tiny { .. } => map,
            },
            _ => map,
        };
        ModelConfig {
            arch,
            backbone,
            attributes,
            values,
            input_size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            embed_dim,
            hidden_dim,
        }
    }

    pub fn num_attributes(&self) -> usize {
        self.attributes.len()
    }

    /// Channels of the image map the heads see (AG-MAN: layer3 and the fused map, stacked).
    pub fn map_channels(&self) -> usize {
        let c = self.backbone.channels(3);
        if self.arch.multi_level() {
            2 * c
        } else {
            c
        }
    }

    /// Index of an attribute by name.
    pub fn attribute_index(&self, name: &str) -> Result<usize> {
        self.attributes
            .iter()
            .position(|a| a == name)
            .ok_or_else(|| Error::UnknownAttribute {
                name: name.to_string(),
                known: self.attributes.join(", "),
            })
    }

    /// Checks internal consistency; `what` names the source in the error.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::invalid(what, reason));
        if self.attributes.is_empty() {
            return bad("the model configuration has no attributes".into());
        }
        if !self.values.is_empty() && self.values.len() != self.attributes.len() {
            return bad(format!(
                "{} attributes but {} value lists",
                self.attributes.len(),
                self.values.len()
            ));
        }
        if self.input_size < 32 {
            return bad(format!(
                "input size {} is below 32 pixels (the backbone downsamples 16x)",
                self.input_size
            ));
        }
        if self.hidden_dim == 0 || self.embed_dim == 0 {
            return bad("hidden_dim and embed_dim must be positive".into());
        }
        let b = &self.backbone;
        if b.stem() == 0 || b.widths().contains(&0) || b.blocks().contains(&0) {
            return bad("backbone widths and block counts must be positive".into());
        }
        let natural = match self.arch {
            Arch::AgMan => Some(self.hidden_dim),
            Arch::Csn | Arch::Triplet => None,
            _ => Some(self.backbone.channels(3)),
        };
        if let Some(n) = natural {
            if n != self.embed_dim {
                return bad(format!(
                    "architecture {} outputs {n} dimensions but embed_dim is {}",
                    self.arch, self.embed_dim
                ));
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return bad("normalisation std must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
        }
        assert!("resnet".parse::<Arch>().is_err());
    }

    #[test]
    fn config_json_round_trip_and_validation() {
        let cfg = ModelConfig::new(
            Arch::AgMan,
            BackboneConfig::tiny(),
            vec!["a".into(), "b".into()],
            vec![],
        );
        cfg.validate("test").unwrap();
        let back: ModelConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let mut bad = cfg.clone();
        bad.embed_dim += 1;
        assert!(bad.validate("test").is_err());
        let mut bad = cfg;
        bad.values = vec![vec![]];
        assert!(bad.validate("test").is_err());
    }
}
