//! Import of OCI layouts (directory or tar) and docker archives into the image store.
//!
//! Every file of the source is streamed into the content store (blobs under
//! `blobs/sha256/<hex>` are checked against their names), then the layout's `index.json` or the
//! archive's `manifest.json` says which images it holds; their layers are unpacked (checked
//! against the configs' DiffIDs) and only then are the names recorded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::records::{ImageRecord, now};
use crate::reference::Reference;
use crate::store::ImageStore;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The name to record the (single) image under, instead of the names in the source.
    pub name: Option<Reference>,
    /// The platform to choose when the source holds an index.
    pub platform: Platform,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            name: None,
            platform: Platform::host(),
        }
    }
}

/// Small documents kept in memory while the source is read.
const METADATA: &[&str] = &["index.json", "oci-layout", "manifest.json", "repositories"];

/// What the source's files became: blobs in the content store, or links to other files.
#[derive(Debug, Default)]
struct Files {
    blobs: BTreeMap<String, (Digest, u64)>,
    links: BTreeMap<String, String>,
    metadata: BTreeMap<String, Vec<u8>>,
    /// Blobs this import added to the store (the ones no image uses are removed at the end).
    added: Vec<Digest>,
}

impl Files {
    /// The blob a path names, following the archive's symlinks (docker archives link
    /// repeated layers).
    fn blob(&self, path: &str) -> Result<&(Digest, u64)> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(blob) = self.blobs.get(&path) {
                return Ok(blob);
            }
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        Err(ImageError::Invalid {
            what: "archive".to_string(),
            detail: format!("it lists {path} but does not contain it"),
        })
    }
}

/// `./a/b` and `a//b` as `a/b`.
fn normalize(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The digest a layout path `blobs/sha256/<hex>` promises.
fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

impl ImageStore {
    /// Imports an OCI layout directory, or a tar (optionally gzip/zstd-compressed) holding an
    /// OCI layout or a docker archive. Returns the records written.
    pub fn import_path(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let _lock = self.lock_for_writing()?;
        let files = if path.is_dir() {
            self.read_dir_source(path)?
        } else {
            let file = std::fs::File::open(path).map_err(ImageError::io("open", path))?;
            self.read_tar_source(file)?
        };
        self.import_and_clean(&files, options)
    }

    /// Imports a tar stream (OCI layout or docker archive, optionally compressed).
    pub fn import_tar(
        &self,
        reader: impl Read + Send,
        options: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let _lock = self.lock_for_writing()?;
        let files = self.read_tar_source(reader)?;
        self.import_and_clean(&files, options)
    }

    /// Imports, then removes the blobs this import added that no image uses (a docker
    /// archive's `VERSION` and legacy `json` files, unselected platforms).
    fn import_and_clean(&self, files: &Files, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let result = self.import_files(files, options);
        let mut used = std::collections::BTreeSet::new();
        for record in self.records().list()? {
            used.insert(record.target.digest.clone());
            used.insert(record.manifest.digest.clone());
            used.insert(record.config.clone());
            if let Ok(image) = self.resolve_record(&record) {
                used.extend(image.manifest.layers.into_iter().map(|l| l.digest));
            }
        }
        for digest in &files.added {
            if !used.contains(digest) {
                self.content().remove(digest)?;
            }
        }
        result
    }

    fn ingest_file(
        &self,
        files: &mut Files,
        path: String,
        reader: &mut dyn Read,
        size: u64,
    ) -> Result<()> {
        if METADATA.contains(&path.as_str()) {
            let mut data = Vec::new();
            reader
                .read_to_end(&mut data)
                .map_err(ImageError::io("read", &path))?;
            files.metadata.insert(path, data);
            return Ok(());
        }
        let expected = digest_of_blob_path(&path).map(|d| (d, Some(size)));
        if let Some((digest, _)) = &expected {
            if self.content().contains(digest) {
                files.blobs.insert(path, (digest.clone(), size));
                std::io::copy(reader, &mut std::io::sink())
                    .map_err(ImageError::io("read", "archive"))?;
                return Ok(());
            }
        }
        let blob = self
            .content()
            .ingest(reader, expected)
            .map_err(|e| match e {
                ImageError::DigestMismatch {
                    expected, actual, ..
                } => ImageError::DigestMismatch {
                    what: format!("{path} in the archive"),
                    expected,
                    actual,
                },
                other => other,
            })?;
        files.added.push(blob.0.clone());
        files.blobs.insert(path, blob);
        Ok(())
    }

    fn read_tar_source(&self, reader: impl Read + Send) -> Result<Files> {
        let mut files = Files::default();
        let mut archive = tar::Archive::new(crate::unpack::decompress(reader)?);
        let entries = archive
            .entries()
            .map_err(ImageError::io("read archive", "tar"))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io("read archive", "tar"))?;
            let path = normalize(
                &entry
                    .path()
                    .map_err(ImageError::io("read archive", "tar"))?
                    .to_string_lossy(),
            );
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    self.ingest_file(&mut files, path, &mut entry, size)?;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Ok(Some(target)) = entry.link_name() {
                        let target = target.to_string_lossy().into_owned();
                        let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                            let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                            normalize_relative(&parent.join(target))
                        } else {
                            normalize(&target)
                        };
                        files.links.insert(path, resolved);
                    }
                }
                _ => {}
            }
        }
        Ok(files)
    }

    fn read_dir_source(&self, root: &Path) -> Result<Files> {
        let mut files = Files::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(ImageError::io("list", &dir))? {
                let entry = entry.map_err(ImageError::io("list", &dir))?;
                let path = entry.path();
                let meta = std::fs::metadata(&path).map_err(ImageError::io("stat", &path))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let relative = path
                        .strip_prefix(root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let mut file =
                        std::fs::File::open(&path).map_err(ImageError::io("open", &path))?;
                    self.ingest_file(&mut files, normalize(&relative), &mut file, meta.len())?;
                }
            }
        }
        Ok(files)
    }

    fn import_files(&self, files: &Files, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let images = if let Some(manifest) = files.metadata.get("manifest.json") {
            self.docker_archive_images(files, manifest)?
        } else if let Some(index) = files.metadata.get("index.json") {
            self.layout_images(index, options)?
        } else {
            return Err(ImageError::Invalid {
                what: "import source".to_string(),
                detail:
                    "neither an OCI layout (no index.json) nor a docker archive (no manifest.json)"
                        .to_string(),
            });
        };
        if options.name.is_some() && images.len() != 1 {
            return Err(ImageError::Invalid {
                what: "import source".to_string(),
                detail: format!("it holds {} images: --name needs exactly one", images.len()),
            });
        }
        let mut records = Vec::new();
        for found in &images {
            let manifest_data = self.content().read(&found.manifest.digest)?;
            let manifest = oci::parse_manifest(
                &manifest_data,
                &format!("manifest {}", found.manifest.digest),
            )?;
            let config = ImageConfig::parse(
                &self.content().read(&manifest.config.digest)?,
                &manifest.config.digest,
            )?;
            for layer in &manifest.layers {
                if !self.content().contains(&layer.digest) {
                    return Err(ImageError::BlobNotFound(layer.digest.to_string()));
                }
            }
            self.unpack_image(&manifest, &config)?;
            let names: Vec<String> = match &options.name {
                Some(name) => vec![name.to_string()],
                None => found.names.clone(),
            };
            if names.is_empty() {
                return Err(ImageError::Invalid {
                    what: "import source".to_string(),
                    detail: format!(
                        "image {} has no name in the source: give --name",
                        manifest.config.digest
                    ),
                });
            }
            for name in names {
                records.push(ImageRecord {
                    name,
                    target: found.target.clone(),
                    manifest: found.manifest.clone(),
                    config: manifest.config.digest.clone(),
                    recorded: now(),
                });
            }
        }
        for record in &records {
            self.records().put(record.clone())?;
        }
        Ok(records)
    }

    /// The images of an OCI layout's `index.json`.
    fn layout_images(&self, index_data: &[u8], options: &ImportOptions) -> Result<Vec<FoundImage>> {
        let index: Index = oci::parse_index(index_data, "index.json of the layout")?;
        let mut out: Vec<FoundImage> = Vec::new();
        for descriptor in &index.manifests {
            let names = layout_names(descriptor, options.name.is_some())?;
            let manifest = if oci::is_index(&descriptor.media_type) {
                let nested = oci::parse_index(
                    &self.content().read(&descriptor.digest)?,
                    &format!("index {}", descriptor.digest),
                )?;
                nested.choose(&options.platform)?.clone()
            } else if oci::is_manifest(&descriptor.media_type) {
                if let Some(platform) = &descriptor.platform {
                    if !options.platform.matches(platform) {
                        continue;
                    }
                }
                descriptor.clone()
            } else {
                continue;
            };
            out.push(FoundImage {
                names,
                target: strip(descriptor),
                manifest: strip(&manifest),
            });
        }
        if out.is_empty() {
            return Err(ImageError::NoMatchingPlatform {
                wanted: options.platform.to_string(),
                available: "no image in the layout's index.json".to_string(),
            });
        }
        Ok(out)
    }

    /// The images of a docker archive's `manifest.json`; writes an OCI manifest for each.
    fn docker_archive_images(
        &self,
        files: &Files,
        manifest_json: &[u8],
    ) -> Result<Vec<FoundImage>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(manifest_json)
            .map_err(ImageError::json("manifest.json of the docker archive"))?;
        let mut out = Vec::new();
        for entry in entries {
            let (config_digest, config_size) = files.blob(&entry.config)?.clone();
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let (digest, size) = files.blob(layer)?.clone();
                let media_type = layer_media_type(&mut self.content().open_blob(&digest)?);
                layers.push(Descriptor {
                    media_type: media_type.to_string(),
                    digest,
                    size,
                    platform: None,
                    annotations: BTreeMap::new(),
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::MEDIA_OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: oci::MEDIA_OCI_CONFIG.to_string(),
                    digest: config_digest,
                    size: config_size,
                    platform: None,
                    annotations: BTreeMap::new(),
                },
                layers,
                annotations: BTreeMap::new(),
            };
            let data = serde_json::to_vec(&manifest).map_err(ImageError::json("manifest"))?;
            let descriptor = Descriptor::of(oci::MEDIA_OCI_MANIFEST, &data);
            self.content().write(&data, Some(&descriptor.digest))?;
            let names = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|tag| Reference::parse(tag).map(|r| r.to_string()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            out.push(FoundImage {
                names,
                target: descriptor.clone(),
                manifest: descriptor,
            });
        }
        Ok(out)
    }
}

/// One image a source holds.
struct FoundImage {
    names: Vec<String>,
    target: Descriptor,
    manifest: Descriptor,
}

fn strip(descriptor: &Descriptor) -> Descriptor {
    Descriptor {
        platform: None,
        annotations: BTreeMap::new(),
        ..descriptor.clone()
    }
}

/// The names an index entry of a layout gives its image: containerd's full-name annotation,
/// or `org.opencontainers.image.ref.name` when that is a whole reference. A bare tag is not
/// enough to name an image (unless `--name` is given).
fn layout_names(descriptor: &Descriptor, named_by_caller: bool) -> Result<Vec<String>> {
    if let Some(name) = descriptor.annotations.get(oci::ANNOTATION_IMAGE_NAME) {
        return Ok(vec![Reference::parse(name)?.to_string()]);
    }
    match descriptor.annotations.get(oci::ANNOTATION_REF_NAME) {
        Some(name) if name.contains('/') || name.contains('@') => {
            Ok(vec![Reference::parse(name)?.to_string()])
        }
        Some(tag) if !named_by_caller => Err(ImageError::Invalid {
            what: "OCI layout".to_string(),
            detail: format!(
                "its image is named only by the tag {tag:?}: give --name REPOSITORY[:TAG]"
            ),
        }),
        _ => Ok(Vec::new()),
    }
}

/// The OCI media type of a layer blob, from its first bytes.
fn layer_media_type(file: &mut std::fs::File) -> &'static str {
    let mut head = [0u8; 4];
    let n = file.read(&mut head).unwrap_or(0);
    if head[..n].starts_with(&[0x1f, 0x8b]) {
        oci::MEDIA_OCI_LAYER_GZIP
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        oci::MEDIA_OCI_LAYER_ZSTD
    } else {
        oci::MEDIA_OCI_LAYER
    }
}

/// Resolves `..` in an archive-relative path (a symlink's target).
fn normalize_relative(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let joined: PathBuf = parts.iter().collect();
    joined.to_string_lossy().into_owned()
}
