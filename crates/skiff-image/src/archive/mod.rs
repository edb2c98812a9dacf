//! Air-gapped transfer: OCI image layouts (directory or tar) and docker archives (`docker
//! save` format: `manifest.json`, `repositories`, a config and one `layer.tar` per layer), in
//! and out.

mod export;
mod import;

pub use export::ExportFormat;
pub use import::ImportOptions;

/// The file an OCI layout starts with.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Its content.
pub const OCI_LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
