//! Termination messages, as the kubelet keeps them: each container gets a host file of its
//! own bind-mounted at `terminationMessagePath` (default `/dev/termination-log`, writable by
//! any user); once the container has ended, at most 4096 bytes of it become
//! `state.terminated.message`. With `terminationMessagePolicy: FallbackToLogsOnError`, an
//! empty file and a non-zero exit code give the tail of the container's log instead (the last
//! 80 lines, at most 2048 bytes).
//!
//! The host file and the policy travel as labels of the engine's container, so the status can
//! be computed from the engine's records alone.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container as SpecContainer;
use skiff_engine::Container;
use skiff_engine::record::BindMount;

use crate::runtime::PodRef;

/// Label: the host file behind the container's termination message path.
pub const LABEL_FILE: &str = "io.skiff.termination.file";
/// Label: `File` or `FallbackToLogsOnError`.
pub const LABEL_POLICY: &str = "io.skiff.termination.policy";
/// Label: the container's log file (for `FallbackToLogsOnError`).
pub const LABEL_LOG_DIR: &str = "io.skiff.termination.data-root";

/// The kubelet's limit on a message read from the file.
pub const MAX_MESSAGE: u64 = 4096;
/// The kubelet's limits on a message taken from the log.
pub const MAX_LOG_BYTES: usize = 2048;
/// Lines of the log tail.
pub const MAX_LOG_LINES: usize = 80;

/// Why the termination file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TerminationError {
    /// Creating the directory or the file failed.
    #[error("cannot create the termination message file {path}: {source}")]
    Create {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a container needs for its termination message: the bind mount and the labels.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The host file bound at the message path.
    pub bind: BindMount,
    /// Labels for the engine's container.
    pub labels: Vec<(String, String)>,
}

/// Creates the (empty, world-writable) host file of attempt `attempt` of `spec` and says how
/// to mount it; `None` when the path is empty.
pub fn prepare(
    data_dir: &Path,
    pod: &PodRef,
    spec: &SpecContainer,
    attempt: u32,
) -> Result<Option<Setup>, TerminationError> {
    use std::os::unix::fs::PermissionsExt;
    let destination = spec
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if destination.is_empty() {
        return Ok(None);
    }
    let dir = crate::volumes::pod_dir(data_dir, &pod.uid)
        .join("containers")
        .join(&spec.name)
        .join(attempt.to_string());
    let file = dir.join("termination-log");
    let made = (|| {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&file, b"")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
    })();
    made.map_err(|source| TerminationError::Create {
        path: file.clone(),
        source,
    })?;
    let policy = spec
        .termination_message_policy
        .clone()
        .unwrap_or_else(|| "File".into());
    Ok(Some(Setup {
        bind: BindMount {
            source: file.display().to_string(),
            destination,
            read_only: false,
        },
        labels: vec![
            (LABEL_FILE.to_string(), file.display().to_string()),
            (LABEL_POLICY.to_string(), policy),
            (LABEL_LOG_DIR.to_string(), data_dir.display().to_string()),
        ],
    }))
}

/// The termination message of an ended container (`None` when there is none).
pub fn message(c: &Container) -> Option<String> {
    let labels = &c.config.labels;
    let file = labels.get(LABEL_FILE)?;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(file) {
        let mut bytes = Vec::new();
        let _ = f.take(MAX_MESSAGE).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let fallback = labels.get(LABEL_POLICY).map(String::as_str) == Some("FallbackToLogsOnError");
    if text.is_empty() && fallback && c.state.exit_code != 0 {
        let root = labels.get(LABEL_LOG_DIR)?;
        let log = skiff_engine::layout::ContainerDir::new(Path::new(root), c.id()).log();
        text = log_tail(&log)?;
    }
    (!text.is_empty()).then_some(text)
}

/// The last lines of a CRI log file as plain text, within the kubelet's limits.
fn log_tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // CRI lines carry a prefix; read enough to hold the text limit with it.
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let mut out = String::new();
    for line in lines.iter().rev().take(MAX_LOG_LINES).rev() {
        // TIMESTAMP STREAM TAG TEXT
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag) = (parts.next(), parts.next(), parts.next());
        let body = parts.next().unwrap_or_default();
        out.push_str(body);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    if out.len() > MAX_LOG_BYTES {
        let mut cut = out.len() - MAX_LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_string();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_keeps_the_last_lines_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("2024-01-01T00:00:00Z stdout F line {i}\n"));
        }
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path).unwrap();
        assert!(tail.ends_with("line 199\n"), "{tail}");
        assert!(tail.starts_with("line 120\n"), "{tail}");
        assert!(tail.len() <= MAX_LOG_BYTES);
    }
}
