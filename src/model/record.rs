//! The model record an index keeps in its manifest: which model embedded the vectors
//! (identity, file, configuration, precision) and from which catalog.
//!
//! The manifest stores the record as JSON (`index-format.md`: "any / null", since
//! `tailor index build --model FILE` records a user's description verbatim); this is the
//! one place that writes it ([`ModelRecord::to_json`]) and reads it back
//! ([`ModelRecord::from_json`]). Keys it does not know are kept as they are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Arch, Model, ModelConfig, Precision};
use crate::error::{Error, Result};

/// What an index records about the model that embedded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's identity ([`Model::identity`]): vectors of two models live in
    /// different spaces, so queries, merges and sets compare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The model file (absolute where it could be resolved), for `search --image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Architecture, attributes, input size and the rest of the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ModelConfig>,
    /// The precision the vectors were computed in (absent in records before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// The catalog the items came from, where `tailor show` and `report` find images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
    /// Keys this version does not know (a user's `index build --model` description).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelRecord {
    /// The record of `model`, loaded from `model_path`, embedding `catalog`.
    pub fn of(model: &Model, model_path: &Path, catalog: &Path) -> Result<ModelRecord> {
        Ok(ModelRecord {
            identity: Some(model.identity()?),
            path: Some(absolute(model_path)),
            config: Some(model.config().clone()),
            precision: Some(model.precision()),
            catalog: Some(absolute(catalog)),
            extra: Default::default(),
        })
    }

    /// The record as the manifest stores it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a manifest's record (`None` when the index records none); `manifest` names
    /// the file in the error when a known key holds the wrong kind of value.
    pub fn from_json(
        value: Option<&serde_json::Value>,
        manifest: &Path,
    ) -> Result<Option<ModelRecord>> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                Error::corrupted(manifest, format!("the model record is not readable: {e}"))
            }),
        }
    }

    /// The architecture, when the configuration is recorded.
    pub fn arch(&self) -> Option<Arch> {
        self.config.as_ref().map(|c| c.arch)
    }

    /// The model's attributes, when the configuration is recorded.
    pub fn attributes(&self) -> Option<&[String]> {
        self.config.as_ref().map(|c| c.attributes.as_slice())
    }

    /// The model's input size (pixels per side), when the configuration is recorded.
    pub fn input_size(&self) -> Option<u32> {
        self.config.as_ref().map(|c| c.input_size)
    }

    /// The identity in words, for messages.
    pub fn identity_text(record: Option<&ModelRecord>) -> String {
        record
            .and_then(|r| r.identity.clone())
            .unwrap_or_else(|| "(none recorded: built from vectors)".to_string())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_survive_and_known_keys_are_typed() {
        let v = serde_json::json!({"name": "test-model", "dim": 3, "identity": "abc"});
        let r = ModelRecord::from_json(Some(&v), Path::new("m.json"))
            .unwrap()
            .unwrap();
        assert_eq!(r.identity.as_deref(), Some("abc"));
        assert_eq!(r.extra["name"], "test-model");
        assert_eq!(r.to_json(), v);
        assert!(ModelRecord::from_json(None, Path::new("m.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_known_key_of_the_wrong_kind_names_the_manifest() {
        let v = serde_json::json!({"identity": 5});
        let err = ModelRecord::from_json(Some(&v), Path::new("ix/manifest.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ix/manifest.json"), "{err}");
        assert!(err.contains("model record"), "{err}");
    }

    #[test]
    fn identity_in_words() {
        let r = ModelRecord {
            identity: Some("0123".into()),
            ..Default::default()
        };
        assert_eq!(ModelRecord::identity_text(Some(&r)), "0123");
        assert!(ModelRecord::identity_text(None).contains("none recorded"));
    }
}
