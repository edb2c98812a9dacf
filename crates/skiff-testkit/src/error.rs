//! The one error type of the test kit; each variant says what failed and with what.

use std::path::PathBuf;

/// What went wrong while setting up or tearing down a fixture.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A program the fixture runs is not installed.
    #[error(
        "`{program}` is not installed: install the Debian package `{package}` (`make deps` does)"
    )]
    MissingProgram {
        /// The program looked up on `PATH` or at a fixed path.
        program: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A condition did not come true before its deadline.
    #[error("timed out after {seconds:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long was waited.
        seconds: f64,
    },
    /// A fixture found something it did not expect.
    #[error("{fixture}: {detail}")]
    Invalid {
        /// The fixture.
        fixture: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl TestkitError {
    /// Wraps an I/O error with the action and the path involved.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TestkitError::Io {
            action,
            path,
            source,
        }
    }
}
