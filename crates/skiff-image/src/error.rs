//! The error of every image operation: what failed, and on which path, digest or name.

use std::path::PathBuf;

use crate::reference::ReferenceError;
use crate::registry::RegistryError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A string is not a `sha256:<64 hex>` digest.
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    BadDigest(String),
    /// Content did not hash to the digest it was announced with.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual} (corrupted or tampered content)"
    )]
    DigestMismatch {
        /// What was checked ("blob sha256:..", "layer 2 of ...").
        what: String,
        /// The announced digest.
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
    /// Content had another size than announced.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// The announced size.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// A blob the operation needs is not in the content store.
    #[error("blob {0} is not in the content store (pull or import the image again)")]
    BlobNotFound(String),
    /// No image record has this name or id.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// A short id matches several images.
    #[error("image id {0:?} is ambiguous: give more digits or a name")]
    AmbiguousId(String),
    /// A JSON document (manifest, index, config, layout file) does not parse.
    #[error("invalid {what}: {source}")]
    BadJson {
        /// Which document.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A document is well-formed JSON but does not make sense.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which document.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A manifest or layer has a media type this crate does not handle.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// Where it was met.
        what: String,
    },
    /// An image index has no manifest for the wanted platform.
    #[error("no image for platform {wanted} in the index (it has: {available})")]
    NoMatchingPlatform {
        /// The wanted platform, `os/arch[/variant]`.
        wanted: String,
        /// The platforms the index offers.
        available: String,
    },
    /// A layer entry would land outside the snapshot, or is otherwise unsafe.
    #[error("refusing layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path inside the layer tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The overlay mount options would not fit in one page.
    #[error("image has {layers} layers: their overlay mount options do not fit in one page")]
    TooManyLayers {
        /// How many layers the image has.
        layers: usize,
    },
    /// An image reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Talking to a registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A privileged file system call failed.
    #[error(transparent)]
    Sys(#[from] skiff_sys::SysError),
}

impl ImageError {
    /// Builds a mapper from `io::Error` for `op` on `path`.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }

    /// Builds a mapper from `serde_json::Error` for the document `what`.
    pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> ImageError {
        let what = what.into();
        move |source| ImageError::BadJson { what, source }
    }
}

/// Result of every image operation.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
