//! Export of recorded images as an OCI layout (tar or directory) or a docker archive.
//!
//! Files are written under a temp name beside the destination and renamed into place when
//! complete: a destination that exists is always whole.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use super::{OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION};
use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, Index};
use crate::reference::Reference;
use crate::store::{ImageStore, ResolvedImage};

/// The shape of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout in a tar file.
    OciArchive,
    /// An OCI image layout directory.
    OciDir,
    /// A docker archive (`docker save` format).
    DockerArchive,
}

impl ImageStore {
    /// Exports the images named `names` to `dest` in `format`.
    pub fn export(&self, names: &[String], format: ExportFormat, dest: &Path) -> Result<()> {
        let images = self.resolve_all(names)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match format {
            ExportFormat::OciDir => {
                if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
                    return Err(ImageError::Invalid {
                        what: format!("export destination {}", dest.display()),
                        detail: "directory exists and is not empty".to_string(),
                    });
                }
                let temp = tempfile::Builder::new()
                    .prefix(".skiff-export-")
                    .tempdir_in(&dir)
                    .map_err(ImageError::io("create temp dir in", &dir))?;
                self.write_oci_dir(&images, temp.path())?;
                let _ = std::fs::remove_dir(dest);
                let kept = temp.keep();
                std::fs::rename(&kept, dest).map_err(|e| {
                    let _ = std::fs::remove_dir_all(&kept);
                    ImageError::io("rename export to", dest)(e)
                })
            }
            ExportFormat::OciArchive | ExportFormat::DockerArchive => {
                let mut temp = tempfile::Builder::new()
                    .prefix(".skiff-export-")
                    .tempfile_in(&dir)
                    .map_err(ImageError::io("create temp file in", &dir))?;
                self.write_tar(&images, format, temp.as_file_mut())?;
                temp.as_file()
                    .sync_all()
                    .map_err(ImageError::io("sync", temp.path()))?;
                temp.persist(dest)
                    .map_err(|e| ImageError::io("rename export to", dest)(e.error))?;
                Ok(())
            }
        }
    }

    /// Writes the images named `names` as a tar (`OciArchive` or `DockerArchive`) to `out`.
    pub fn export_to(
        &self,
        names: &[String],
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<()> {
        let images = self.resolve_all(names)?;
        self.write_tar(&images, format, out)
    }

    fn resolve_all(&self, names: &[String]) -> Result<Vec<(String, ResolvedImage)>> {
        names
            .iter()
            .map(|name| {
                let image = self.resolve(name)?;
                let full = match Reference::parse(name) {
                    Ok(r) if self.records().get(&r.to_string())?.is_some() => r.to_string(),
                    _ => image.record.name.clone(),
                };
                Ok((full, image))
            })
            .collect()
    }

    fn write_tar(
        &self,
        images: &[(String, ResolvedImage)],
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        match format {
            ExportFormat::DockerArchive => self.write_docker_archive(images, &mut tar)?,
            _ => {
                let (index, blobs) = oci_index(images);
                append_bytes(&mut tar, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION.as_bytes())?;
                let data = serde_json::to_vec(&index).map_err(ImageError::json("index.json"))?;
                append_bytes(&mut tar, "index.json", &data)?;
                for digest in blobs {
                    let path = self.content().path(&digest);
                    let mut file = self.content().open_blob(&digest)?;
                    let size = self.content().size(&digest)?;
                    append_reader(
                        &mut tar,
                        &format!("blobs/sha256/{}", digest.hex()),
                        size,
                        &mut file,
                        &path,
                    )?;
                }
            }
        }
        tar.finish().map_err(ImageError::io("finish", "archive"))?;
        Ok(())
    }

    fn write_oci_dir(&self, images: &[(String, ResolvedImage)], dir: &Path) -> Result<()> {
        let (index, blobs) = oci_index(images);
        let blob_dir = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blob_dir).map_err(ImageError::io("create dir", &blob_dir))?;
        for digest in blobs {
            let target = blob_dir.join(digest.hex());
            std::fs::copy(self.content().path(&digest), &target)
                .map_err(ImageError::io("copy blob to", &target))?;
        }
        let data = serde_json::to_vec(&index).map_err(ImageError::json("index.json"))?;
        let index_path = dir.join("index.json");
        std::fs::write(&index_path, data).map_err(ImageError::io("write", &index_path))?;
        let layout = dir.join(OCI_LAYOUT_FILE);
        std::fs::write(&layout, OCI_LAYOUT_VERSION).map_err(ImageError::io("write", &layout))
    }

    fn write_docker_archive(
        &self,
        images: &[(String, ResolvedImage)],
        tar: &mut tar::Builder<&mut dyn Write>,
    ) -> Result<()> {
        let mut entries = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut written = BTreeSet::new();
        for (name, image) in images {
            let config_name = format!("{}.json", image.id().hex());
            if written.insert(config_name.clone()) {
                let data = self.content().read(image.id())?;
                append_bytes(tar, &config_name, &data)?;
            }
            let mut layer_paths = Vec::new();
            for (layer, diff_id) in image
                .manifest
                .layers
                .iter()
                .zip(&image.config.rootfs.diff_ids)
            {
                let path = format!("{}/layer.tar", diff_id.hex());
                if written.insert(path.clone()) {
                    self.append_uncompressed_layer(tar, &path, &layer.digest, diff_id)?;
                }
                layer_paths.push(path);
            }
            let reference = Reference::parse(name)?;
            let mut repo_tags = Vec::new();
            if let Some(tag) = &reference.tag {
                let repository = reference.familiar_repository();
                repo_tags.push(format!("{repository}:{tag}"));
                if let Some(top) = image.config.rootfs.diff_ids.last() {
                    repositories
                        .entry(repository)
                        .or_default()
                        .insert(tag.clone(), top.hex().to_string());
                }
            }
            entries.push(serde_json::json!({
                "Config": config_name,
                "RepoTags": repo_tags,
                "Layers": layer_paths,
            }));
        }
        let manifest = serde_json::to_vec(&entries).map_err(ImageError::json("manifest.json"))?;
        append_bytes(tar, "manifest.json", &manifest)?;
        let repositories =
            serde_json::to_vec(&repositories).map_err(ImageError::json("repositories"))?;
        append_bytes(tar, "repositories", &repositories)
    }

    /// Appends a layer as an uncompressed tar, checking it against its DiffID on the way.
    fn append_uncompressed_layer(
        &self,
        tar: &mut tar::Builder<&mut dyn Write>,
        path: &str,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<()> {
        let dir = self.content().ingest_dir();
        let mut temp =
            tempfile::tempfile_in(&dir).map_err(ImageError::io("create temp file in", &dir))?;
        let mut reader =
            HashingReader::new(crate::unpack::decompress(self.content().open_blob(blob)?)?);
        let size = std::io::copy(&mut reader, &mut temp)
            .map_err(ImageError::io("decompress", self.content().path(blob)))?;
        let (actual, _) = reader
            .finish()
            .map_err(ImageError::io("decompress", self.content().path(blob)))?;
        if &actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {blob}"),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        temp.rewind().map_err(ImageError::io("rewind", &dir))?;
        append_reader(tar, path, size, &mut temp, &dir)
    }
}

/// The layout's `index.json` and every blob it needs.
fn oci_index(images: &[(String, ResolvedImage)]) -> (Index, BTreeSet<Digest>) {
    let mut blobs = BTreeSet::new();
    let mut manifests = Vec::new();
    for (name, image) in images {
        blobs.insert(image.record.manifest.digest.clone());
        blobs.insert(image.manifest.config.digest.clone());
        blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
        let mut descriptor: Descriptor = image.record.manifest.clone();
        descriptor
            .annotations
            .insert(oci::ANNOTATION_IMAGE_NAME.to_string(), name.clone());
        if let Ok(reference) = Reference::parse(name) {
            if let Some(tag) = reference.tag {
                descriptor
                    .annotations
                    .insert(oci::ANNOTATION_REF_NAME.to_string(), tag);
            }
        }
        descriptor.platform = Some(oci::Platform {
            architecture: image.config.architecture.clone(),
            os: image.config.os.clone(),
            variant: image.config.variant.clone(),
        });
        manifests.push(descriptor);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_OCI_INDEX.to_string()),
        manifests,
        annotations: BTreeMap::new(),
    };
    (index, blobs)
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = header(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .map_err(ImageError::io("write archive entry", path))
}

fn append_reader<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    reader: &mut dyn std::io::Read,
    source: &Path,
) -> Result<()> {
    let mut header = header(size);
    tar.append_data(&mut header, path, reader)
        .map_err(ImageError::io("write archive entry from", source))
}
