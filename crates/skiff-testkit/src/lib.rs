//! Shared test fixtures for Skiff (dev-only).
//!
//! Every fixture owns what it starts and removes it on drop, also when the test that holds it
//! panics: throw-away registries and etcd members are killed and their temp dirs deleted,
//! network namespaces are removed. A fixture that needs a program the machine lacks fails with
//! an error naming the Debian package that provides it (`make deps` installs them all).

pub mod error;
pub mod etcd;
pub mod image;
pub mod netns;
pub mod ports;
pub mod process;
pub mod registry;
pub mod require;
pub mod wait;

pub use error::TestkitError;

/// Result type of every fixture.
pub type Result<T> = std::result::Result<T, TestkitError>;
