//! Commit: a container's upper directory becomes a new layer on top of its image.
//!
//! [`ImageStore::commit`] writes the upper directory as a layer tar ([`diff`]), gzips it into
//! the content store (the DiffID hashed on the way), builds the new config (the parent's, with
//! the container config given, the DiffID appended to `rootfs.diff_ids` and a history entry)
//! and manifest (same media-type family as the parent's), unpacks the new layer as the
//! snapshot of its ChainID (which checks the DiffID again, from the stored blob), and records
//! the image under its name. Everything is written under the store's write lock, so garbage
//! collection never removes a blob before its record exists.

mod changes;
pub mod diff;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

pub use changes::apply_change;
pub use diff::{DiffStats, write_diff};

use crate::digest::{Digest, HashingWriter};
use crate::error::{ImageError, Result};
use crate::oci::{self, ContainerConfig, Descriptor, Manifest};
use crate::records::{ImageRecord, now};
use crate::reference::Reference;
use crate::store::{ImageStore, ResolvedImage};

/// What to commit and how to describe it.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// The name to record (`repo[:tag]`); none makes a dangling image, found by its id.
    pub reference: Option<Reference>,
    /// The runtime defaults of the new image (`config` of the image config); the parent's
    /// when none. Keys of the parent's config this type does not know are kept.
    pub container_config: Option<ContainerConfig>,
    /// `created` of the config and of the history entry (RFC 3339).
    pub created: String,
    /// `author` (`-a`).
    pub author: Option<String>,
    /// The history entry's `comment` (`-m`).
    pub comment: Option<String>,
    /// The history entry's `created_by` (Docker: the container's command).
    pub created_by: String,
    /// Paths inside the container left out with everything below them (mount points).
    pub exclude: Vec<PathBuf>,
}

/// What a commit made.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The record written (its `config` is the image id).
    pub record: ImageRecord,
    /// The new layer's descriptor (compressed blob).
    pub layer: Descriptor,
    /// The new layer's DiffID.
    pub diff_id: Digest,
    /// The new top snapshot's ChainID.
    pub chain_id: Digest,
    /// What the layer holds.
    pub stats: DiffStats,
}

/// The media types of one manifest family.
struct Family {
    manifest: &'static str,
    config: &'static str,
    layer: &'static str,
}

const OCI: Family = Family {
    manifest: oci::MEDIA_OCI_MANIFEST,
    config: oci::MEDIA_OCI_CONFIG,
    layer: oci::MEDIA_OCI_LAYER_GZIP,
};

const DOCKER: Family = Family {
    manifest: oci::MEDIA_DOCKER_MANIFEST,
    config: oci::MEDIA_DOCKER_CONFIG,
    layer: oci::MEDIA_DOCKER_LAYER_GZIP,
};

/// The keys of an image config's `config` that [`ContainerConfig`] owns.
const CONTAINER_CONFIG_KEYS: [&str; 9] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
];

impl ImageStore {
    /// Commits the upper directory `upper` of a container of `parent` as a new image.
    pub fn commit(
        &self,
        parent: &ResolvedImage,
        upper: &Path,
        request: &CommitRequest,
    ) -> Result<Committed> {
        let _lock = self.lock_for_writing()?;
        let family = match parent.manifest.media_type.as_deref() {
            Some(oci::MEDIA_DOCKER_MANIFEST) => &DOCKER,
            _ => &OCI,
        };
        let (diff_id, layer, stats) = self.write_layer(upper, &request.exclude, family.layer)?;
        let chain_id = match parent.chain.last() {
            None => diff_id.clone(),
            Some(top) => Digest::of(format!("{top} {diff_id}").as_bytes()),
        };
        let blob = self.content().open_blob(&layer.digest)?;
        self.snapshots()
            .unpack(&chain_id, parent.chain.last(), &diff_id, blob)?;

        let config = new_config(&parent.config_json, &diff_id, request)?;
        let config_data = serde_json::to_vec(&config).map_err(ImageError::json("image config"))?;
        let config_desc = Descriptor::of(family.config, &config_data);
        self.content()
            .write(&config_data, Some(&config_desc.digest))?;

        let mut layers = parent.manifest.layers.clone();
        layers.push(layer.clone());
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(family.manifest.to_string()),
            config: config_desc.clone(),
            layers,
            annotations: BTreeMap::new(),
        };
        let manifest_data =
            serde_json::to_vec(&manifest).map_err(ImageError::json("image manifest"))?;
        let manifest_desc = Descriptor::of(family.manifest, &manifest_data);
        self.content()
            .write(&manifest_data, Some(&manifest_desc.digest))?;

        let record = ImageRecord {
            name: match &request.reference {
                Some(reference) => reference.to_string(),
                None => config_desc.digest.to_string(),
            },
            target: manifest_desc.clone(),
            manifest: manifest_desc,
            config: config_desc.digest,
            recorded: now(),
        };
        self.records().put(record.clone())?;
        tracing::info!(image = %record.name, id = %record.config, layer = %layer.digest, "committed");
        Ok(Committed {
            record,
            layer,
            diff_id,
            chain_id,
            stats,
        })
    }

    /// Writes the layer of `upper` into the content store: tar, hashed (the DiffID), gzipped.
    fn write_layer(
        &self,
        upper: &Path,
        exclude: &[PathBuf],
        media_type: &str,
    ) -> Result<(Digest, Descriptor, DiffStats)> {
        let blob = self.content().writer(None)?;
        let hashing = HashingWriter::new(GzEncoder::new(blob, Compression::default()));
        let (hashing, stats) = write_diff(upper, exclude, hashing)?;
        let (diff_id, _, mut gzip) = hashing.finish();
        gzip.flush()
            .map_err(ImageError::io("compress layer of", upper))?;
        let blob = gzip
            .finish()
            .map_err(ImageError::io("compress layer of", upper))?;
        let (digest, size) = blob.commit()?;
        let layer = Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        Ok((diff_id, layer, stats))
    }
}

/// The parent's config with the new layer, history entry, author and container config.
fn new_config(parent: &Value, diff_id: &Digest, request: &CommitRequest) -> Result<Value> {
    let mut config = parent.clone();
    let Some(object) = config.as_object_mut() else {
        return Err(ImageError::Invalid {
            what: "parent image config".to_string(),
            detail: "not a JSON object".to_string(),
        });
    };
    // Docker's record of the container that built the parent describes the parent only.
    for key in ["container", "container_config", "id", "parent", "comment"] {
        object.remove(key);
    }
    object.insert("created".into(), json!(request.created));
    match &request.author {
        Some(author) => object.insert("author".into(), json!(author)),
        None => object.remove("author"),
    };
    if let Some(comment) = &request.comment {
        object.insert("comment".into(), json!(comment));
    }
    if let Some(container) = &request.container_config {
        let mut runtime = object
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for key in CONTAINER_CONFIG_KEYS {
            runtime.remove(key);
        }
        if let Value::Object(fields) =
            serde_json::to_value(container).map_err(ImageError::json("container config"))?
        {
            runtime.extend(fields);
        }
        object.insert("config".into(), Value::Object(runtime));
    }
    let rootfs = object
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(diff_id)),
        None => rootfs["diff_ids"] = json!([diff_id]),
    }
    let mut entry = serde_json::Map::new();
    entry.insert("created".into(), json!(request.created));
    entry.insert("created_by".into(), json!(request.created_by));
    if let Some(author) = &request.author {
        entry.insert("author".into(), json!(author));
    }
    if let Some(comment) = &request.comment {
        entry.insert("comment".into(), json!(comment));
    }
    let history = object.entry("history").or_insert_with(|| json!([]));
    match history.as_array_mut() {
        Some(list) => list.push(Value::Object(entry)),
        None => *history = json!([entry]),
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_config_keeps_the_parent_and_adds_layer_history_and_runtime_defaults() {
        let parent = json!({
            "architecture": "amd64", "os": "linux", "author": "someone else",
            "container_config": {"Cmd": ["old"]},
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Healthcheck": {"Test": ["NONE"]}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:".to_string() + &"a".repeat(64)]},
            "history": [{"created_by": "base"}],
        });
        let diff_id = Digest::of(b"layer");
        let request = CommitRequest {
            container_config: Some(ContainerConfig {
                env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
                cmd: Some(vec!["echo".into()]),
                ..ContainerConfig::default()
            }),
            created: "2024-01-02T03:04:05Z".into(),
            comment: Some("a message".into()),
            created_by: "sh -c touch /x".into(),
            ..CommitRequest::default()
        };
        let config = new_config(&parent, &diff_id, &request).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][1], json!(diff_id));
        assert_eq!(config["config"]["Cmd"], json!(["echo"]));
        assert_eq!(config["config"]["Env"], json!(["PATH=/bin", "A=1"]));
        assert_eq!(config["config"]["Healthcheck"], json!({"Test": ["NONE"]}));
        assert!(config.get("author").is_none());
        assert!(config.get("container_config").is_none());
        assert_eq!(config["created"], "2024-01-02T03:04:05Z");
        assert_eq!(config["comment"], "a message");
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(
            history[1],
            json!({"created": "2024-01-02T03:04:05Z", "created_by": "sh -c touch /x", "comment": "a message"})
        );
        // It still parses as an image config.
        let data = serde_json::to_vec(&config).unwrap();
        let parsed = oci::ImageConfig::parse(&data, &Digest::of(&data)).unwrap();
        assert_eq!(parsed.rootfs.diff_ids.len(), 2);
    }
}
