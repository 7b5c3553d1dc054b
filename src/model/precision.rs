//! Numeric precision of CPU inference: f32 everywhere, or bf16 products in the folded
//! trunk (see `bf16.rs`), or `auto`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The numeric precision asked for (f32, bf16 or auto).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights, activations and products.
    #[default]
    F32,
    /// The trunk's convolutions take bf16 weights and activations and accumulate in f32;
    /// batch-norm folding, biases, the heads (attention, softmax, channel gates, the
    /// final linear) and the L2 normalisation stay f32. Refused where the CPU has no
    /// AVX512-BF16, on a non-CPU device, and on a trainable model.
    Bf16,
    /// bf16 where [`auto_prefers_bf16`] says the CPU gains from it, else f32.
    Auto,
}

impl Precision {
    pub const NAMES: [&'static str; 3] = ["f32", "bf16", "auto"];
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            _ => Err(Error::Usage(format!(
                "unknown precision {s:?}: expected f32, bf16 or auto"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        })
    }
}
