//! Pulling an image from a registry: resolve the tag, choose the host's platform from an
//! index, fetch config and layers (layers concurrently, each verified by digest) and unpack
//! each layer into its snapshot (checked against the config's DiffIDs) while it downloads
//! (see [`stream_unpack`](crate::stream_unpack)), then record the name. Nothing is recorded
//! unless everything succeeded.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, ImageConfig, Manifest, Platform};
use crate::records::{ImageRecord, now};
use crate::reference::Reference;
use crate::registry::{BlobProgress, RegistryClient, RegistryOptions};
use crate::store::ImageStore;
use crate::stream_unpack::LayerJob;

/// How many layers download at once (Docker's default).
const CONCURRENT_LAYERS: usize = 3;

/// What a pull reports while it works (for progress bars or plain lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to a manifest with these layers (digest, compressed size).
    Resolved {
        /// The manifest (or index) digest the tag points at.
        digest: Digest,
        /// The layers, bottom first.
        layers: Vec<(Digest, u64)>,
    },
    /// The layer's blob and snapshot are present already.
    LayerExists {
        /// The layer blob's digest.
        layer: Digest,
    },
    /// Bytes of a layer received so far.
    Downloading {
        /// The layer blob's digest.
        layer: Digest,
        /// Bytes received.
        done: u64,
        /// Bytes expected.
        total: u64,
    },
    /// The layer is downloaded; unpacking, which runs while it downloads, finishes (or, for
    /// a blob already stored, starts).
    Extracting {
        /// The layer blob's digest.
        layer: Digest,
    },
    /// The layer's snapshot is ready.
    LayerDone {
        /// The layer blob's digest.
        layer: Digest,
    },
}

/// Where pull events go.
pub type PullEvents = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registry access (insecure registries, credentials).
    pub registry: RegistryOptions,
    /// The platform to choose from an index (default: this host's).
    pub platform: Platform,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: Platform::host(),
        }
    }
}

impl ImageStore {
    /// Pulls `reference` and records it under its normalised name; returns the record.
    pub async fn pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
        events: &PullEvents,
    ) -> Result<ImageRecord> {
        let store = self.clone();
        let _lock = tokio::task::spawn_blocking(move || store.lock_for_writing())
            .await
            .map_err(|e| ImageError::Invalid {
                what: "pull".to_string(),
                detail: e.to_string(),
            })??;
        let client = RegistryClient::connect(
            &reference.registry,
            &reference.repository,
            &options.registry,
        )
        .await?;
        let wanted = reference
            .digest
            .clone()
            .or_else(|| reference.tag.clone())
            .unwrap_or_else(|| crate::reference::DEFAULT_TAG.to_string());
        let top = client.fetch_manifest(&wanted).await?;
        let target = Descriptor {
            media_type: top.media_type.clone(),
            digest: top.digest.clone(),
            size: top.data.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let (manifest_desc, manifest_data) = if oci::is_index(&top.media_type) {
            let index = oci::parse_index(&top.data, &format!("index {wanted}"))?;
            let chosen = index.choose(&options.platform)?.clone();
            let fetched = client.fetch_manifest(chosen.digest.as_str()).await?;
            if !oci::is_manifest(&fetched.media_type) {
                return Err(ImageError::UnsupportedMediaType {
                    media_type: fetched.media_type,
                    what: format!("manifest {} of {reference}", chosen.digest),
                });
            }
            self.content().write(&top.data, Some(&top.digest))?;
            (chosen, fetched.data)
        } else if oci::is_manifest(&top.media_type) {
            (target.clone(), top.data.clone())
        } else {
            return Err(ImageError::UnsupportedMediaType {
                media_type: top.media_type,
                what: format!("manifest {wanted} of {reference}"),
            });
        };
        let manifest = oci::parse_manifest(
            &manifest_data,
            &format!("manifest {}", manifest_desc.digest),
        )?;
        events(PullEvent::Resolved {
            digest: top.digest.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect(),
        });

        let config_digest = manifest.config.digest.clone();
        if !self.content().contains(&config_digest) {
            let quiet: BlobProgress = Arc::new(|_| {});
            client
                .fetch_blob(self.content(), &config_digest, manifest.config.size, &quiet)
                .await?;
        }
        let config = ImageConfig::parse(&self.content().read(&config_digest)?, &config_digest)?;
        let chain = check_layers(&manifest, &config)?;

        futures::stream::iter(manifest.layers.iter().enumerate())
            .map(|(i, layer)| self.pull_layer(&client, &config, &chain, i, layer, events))
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        self.content()
            .write(&manifest_data, Some(&manifest_desc.digest))?;
        let record = ImageRecord {
            name: reference.to_string(),
            target,
            manifest: Descriptor {
                platform: None,
                annotations: Default::default(),
                ..manifest_desc
            },
            config: config_digest,
            recorded: now(),
        };
        self.records().put(record.clone())?;
        Ok(record)
    }

    async fn pull_layer(
        &self,
        client: &RegistryClient,
        config: &ImageConfig,
        chain: &[Digest],
        index: usize,
        layer: &Descriptor,
        events: &PullEvents,
    ) -> Result<()> {
        let have_blob = self.content().contains(&layer.digest);
        if have_blob && self.snapshots().exists(&chain[index]) {
            events(PullEvent::LayerExists {
                layer: layer.digest.clone(),
            });
            return Ok(());
        }
        let diff_id = config.rootfs.diff_ids[index].clone();
        let chain_id = chain[index].clone();
        let parent = index.checked_sub(1).map(|p| chain[p].clone());
        if !have_blob {
            let progress: BlobProgress = {
                let events = Arc::clone(events);
                let (layer, total) = (layer.digest.clone(), layer.size);
                Arc::new(move |done| {
                    events(PullEvent::Downloading {
                        layer: layer.clone(),
                        done,
                        total,
                    })
                })
            };
            // Download and unpack at once: the snapshot's files are written while the blob
            // still arrives, and both are committed only once verified.
            let job = LayerJob {
                blob: layer.digest.clone(),
                size: layer.size,
                chain_id,
                parent,
                diff_id,
            };
            let extracting = {
                let events = Arc::clone(events);
                let layer = layer.digest.clone();
                move || {
                    events(PullEvent::Extracting {
                        layer: layer.clone(),
                    })
                }
            };
            self.fetch_and_unpack(client, &job, &progress, &extracting)
                .await?;
        } else {
            events(PullEvent::Extracting {
                layer: layer.digest.clone(),
            });
            let store = self.clone();
            let blob = layer.digest.clone();
            tokio::task::spawn_blocking(move || {
                store.unpack_blob(&blob, &chain_id, parent.as_ref(), &diff_id)
            })
            .await
            .map_err(|e| ImageError::Invalid {
                what: format!("unpack of layer {}", layer.digest),
                detail: e.to_string(),
            })??;
        }
        events(PullEvent::LayerDone {
            layer: layer.digest.clone(),
        });
        Ok(())
    }

    /// Unpacks the stored layer blob `blob` as snapshot `chain_id` (no-op if it exists).
    pub fn unpack_blob(
        &self,
        blob: &Digest,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
    ) -> Result<()> {
        if self.snapshots().exists(chain_id) {
            return Ok(());
        }
        let file = self.content().open_blob(blob)?;
        self.snapshots()
            .unpack(chain_id, parent, diff_id, file)
            .map(drop)
    }

    /// Unpacks every layer of an image whose blobs are stored (import, load).
    pub fn unpack_image(&self, manifest: &Manifest, config: &ImageConfig) -> Result<()> {
        let chain = check_layers(manifest, config)?;
        for (i, layer) in manifest.layers.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &chain[p]);
            self.unpack_blob(&layer.digest, &chain[i], parent, &config.rootfs.diff_ids[i])?;
        }
        Ok(())
    }
}

/// Checks that manifest and config agree on the number of layers; returns the ChainIDs.
pub(crate) fn check_layers(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<Digest>> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::Invalid {
            what: format!("image config {}", manifest.config.digest),
            detail: format!(
                "{} diff ids for {} layers in the manifest",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    Ok(Digest::chain_ids(&config.rootfs.diff_ids))
}
