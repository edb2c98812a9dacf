//! Container logs for `kubectl logs`: the engine's CRI-format file rendered as the plain text
//! the kubelet serves (both streams in the order written, `P` records joined into their line),
//! with `tailLines`, `timestamps`, `limitBytes`, `previous` and `follow`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use skiff_engine::Container;
use skiff_engine::logs::{LogReader, LogRecord};
use tokio::sync::mpsc;

use crate::Context;
use crate::runtime::{self, LABEL_POD_NAME, LABEL_POD_NAMESPACE};

/// How often a followed log is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What `GET pods/{name}/log` asks for.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming while the container runs.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix lines with their RFC 3339 time.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub timestamps: bool,
    /// The previous attempt's log.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(matches!(text.as_deref(), Some("true" | "1" | "")))
}

/// Why logs cannot be served (the message is what kubectl prints).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// The container exists but has nothing to show yet.
    #[error("{0}")]
    BadRequest(String),
}

/// Renders records as plain text; `mid_line` carries a partial line between calls.
pub fn render(records: &[LogRecord], timestamps: bool, mid_line: &mut [bool; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let slot = match r.stream {
            skiff_engine::logs::Stream::Stdout => 0,
            skiff_engine::logs::Stream::Stderr => 1,
        };
        if timestamps && !mid_line[slot] {
            out.extend_from_slice(r.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.content);
        if !r.partial {
            out.push(b'\n');
        }
        mid_line[slot] = r.partial;
    }
    out
}

/// The engine container whose log is asked for.
fn find(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<Container, LogError> {
    let all = ctx
        .engine
        .list()
        .map_err(|e| LogError::NotFound(e.to_string()))?;
    let mine: Vec<Container> = all
        .into_iter()
        .filter(|c| {
            c.config.labels.get(LABEL_POD_NAMESPACE).map(String::as_str) == Some(namespace)
                && c.config.labels.get(LABEL_POD_NAME).map(String::as_str) == Some(pod)
        })
        .collect();
    // The newest pod of this name (a pod recreated under the same name has a new uid).
    let newest_uid = mine
        .iter()
        .max_by(|a, b| a.config.created.cmp(&b.config.created))
        .and_then(|c| runtime::pod_uid(c).map(str::to_string))
        .ok_or_else(|| {
            LogError::NotFound(format!(
                "pod \"{pod}\" in namespace \"{namespace}\" has no containers on this node yet"
            ))
        })?;
    let mine: Vec<Container> = mine
        .into_iter()
        .filter(|c| runtime::pod_uid(c) == Some(newest_uid.as_str()))
        .collect();
    let (latest, before) = runtime::latest(&mine, container);
    let chosen = if previous { before } else { latest };
    chosen.cloned().ok_or_else(|| {
        if previous && latest.is_some() {
            LogError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            ))
        } else {
            LogError::BadRequest(format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ))
        }
    })
}

/// Streams the log of `container` of pod `namespace/pod`: chunks of text on the returned
/// channel, ending when the log is read (or, following, when the container stopped).
pub async fn stream(
    ctx: std::sync::Arc<Context>,
    namespace: String,
    pod: String,
    container: String,
    options: LogOptions,
) -> Result<mpsc::Receiver<Result<Bytes, std::io::Error>>, LogError> {
    let found = {
        let ctx = std::sync::Arc::clone(&ctx);
        let (ns, p, c) = (namespace.clone(), pod.clone(), container.clone());
        let previous = options.previous;
        tokio::task::spawn_blocking(move || find(&ctx, &ns, &p, &c, previous))
            .await
            .map_err(|e| LogError::NotFound(e.to_string()))??
    };
    let path: PathBuf = ctx.engine.dir(found.id()).log();
    let mut reader = LogReader::open(&path).map_err(|e| LogError::NotFound(e.to_string()))?;
    let (tx, rx) = mpsc::channel(16);
    let id = found.id().to_string();
    tokio::spawn(async move {
        let mut mid_line = [false, false];
        let mut left = options.limit_bytes.unwrap_or(usize::MAX);
        let mut first = true;
        loop {
            let records = match reader.read_new() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let records = match (first, options.tail_lines) {
                (true, Some(n)) => skiff_engine::logs::tail(records, n),
                _ => records,
            };
            first = false;
            let mut text = render(&records, options.timestamps, &mut mid_line);
            if text.len() > left {
                text.truncate(left);
            }
            left -= text.len();
            if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
            if !options.follow || left == 0 {
                return;
            }
            let engine = ctx.engine.clone();
            let id = id.clone();
            let active =
                tokio::task::spawn_blocking(move || engine.load(&id).is_ok_and(|c| c.is_active()))
                    .await
                    .unwrap_or(false);
            if !active {
                // One last read for what the monitor wrote while the container ended.
                if let Ok(records) = reader.read_new() {
                    let text = render(&records, options.timestamps, &mut mid_line);
                    if !text.is_empty() {
                        let _ = tx.send(Ok(Bytes::from(text))).await;
                    }
                }
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_engine::logs::parse_record;

    #[test]
    fn partial_records_join_their_line_and_timestamps_prefix_lines() {
        let records: Vec<LogRecord> = [
            "2026-01-01T00:00:00.1Z stdout P hel",
            "2026-01-01T00:00:00.2Z stdout F lo",
            "2026-01-01T00:00:00.3Z stderr F oops",
        ]
        .iter()
        .map(|l| parse_record(l.as_bytes()).unwrap())
        .collect();
        let mut mid = [false, false];
        assert_eq!(render(&records, false, &mut mid), b"hello\noops\n");
        let mut mid = [false, false];
        let text = String::from_utf8(render(&records, true, &mut mid)).unwrap();
        assert_eq!(
            text,
            "2026-01-01T00:00:00.1Z hello\n2026-01-01T00:00:00.3Z oops\n"
        );
    }
}
