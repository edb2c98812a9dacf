//! A layer downloaded and unpacked at once: each chunk the registry sends goes both into the
//! content store's temp file (hashed as it is written) and, through a bounded channel, to a
//! blocking thread that decompresses and unpacks it into a pending snapshot (hashing the
//! uncompressed stream). Nothing becomes visible early: the blob is committed (digest and size
//! checked, synced, renamed) once the download ends, and only then, with the DiffID checked
//! too, the snapshot. A broken download is retried from the start, unpack included.

use std::io::{Read, Write};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::registry::{BlobProgress, RegistryClient, retry_download};
use crate::snapshot::{PendingSnapshot, SnapshotInfo};
use crate::store::ImageStore;

/// How many received chunks may wait for the unpacker (hyper's chunks are up to a few hundred
/// KiB, so this bounds the memory a slow disk lets pile up to a few MiB per layer).
const CHUNKS_IN_FLIGHT: usize = 32;

/// One layer to fetch and unpack.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    /// The compressed blob's digest.
    pub(crate) blob: Digest,
    /// Its size as the manifest gives it.
    pub(crate) size: u64,
    /// The snapshot to make.
    pub(crate) chain_id: Digest,
    /// The parent snapshot, if any.
    pub(crate) parent: Option<Digest>,
    /// What the uncompressed stream must hash to.
    pub(crate) diff_id: Digest,
}

impl ImageStore {
    /// Downloads the layer blob and unpacks it as it arrives; both are committed once
    /// verified. `progress` hears the bytes received so far, `downloaded` when the last byte
    /// is in (the unpack may still be finishing). Transient registry failures are retried
    /// (with back-off) from the start.
    pub(crate) async fn fetch_and_unpack(
        &self,
        client: &RegistryClient,
        job: &LayerJob,
        progress: &BlobProgress,
        downloaded: &(dyn Fn() + Send + Sync),
    ) -> Result<SnapshotInfo> {
        retry_download(&job.blob, || {
            self.fetch_and_unpack_once(client, job, progress, downloaded)
        })
        .await
    }

    async fn fetch_and_unpack_once(
        &self,
        client: &RegistryClient,
        job: &LayerJob,
        progress: &BlobProgress,
        downloaded: &(dyn Fn() + Send + Sync),
    ) -> Result<SnapshotInfo> {
        let mut body = client.open_blob(&job.blob).await?;
        let mut writer = self
            .content()
            .writer(Some((job.blob.clone(), Some(job.size))))?;
        let (sender, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let snapshots = self.snapshots().clone();
        let unpack_job = job.clone();
        let unpack = tokio::task::spawn_blocking(move || {
            snapshots.unpack_pending(
                &unpack_job.chain_id,
                unpack_job.parent.as_ref(),
                &unpack_job.diff_id,
                ChunkReader::new(chunks),
            )
        });
        let ingest = self.content().ingest_dir();
        let mut sender = Some(sender);
        let received: Result<()> = async {
            progress(0);
            while let Some(chunk) = body.chunk().await? {
                writer
                    .write_all(&chunk)
                    .map_err(ImageError::io("write", &ingest))?;
                if writer.written() > job.size {
                    break;
                }
                progress(writer.written());
                // An unpacker that stopped (it failed, or the tar ended) takes no more; the
                // download goes on so that the blob's digest decides what went wrong.
                if let Some(to_unpacker) = &sender {
                    if to_unpacker.send(chunk).await.is_err() {
                        sender = None;
                    }
                }
            }
            Ok(())
        }
        .await;
        // The unpacker sees the end of the stream.
        drop(sender);
        let what = || format!("unpack of layer {}", job.blob);
        if let Err(e) = received {
            drop(writer);
            // Wait for the unpacker so that its temp directory is gone before a retry.
            let _ = unpack.await;
            return Err(e);
        }
        downloaded();
        let commit = tokio::task::spawn_blocking(move || writer.commit());
        let (committed, pending) = tokio::join!(commit, unpack);
        let pending: Result<PendingSnapshot> = pending.map_err(|e| join_error(what(), &e))?;
        // A blob that fails its digest explains any unpack failure: report it first.
        committed.map_err(|e| join_error(what(), &e))??;
        let pending = pending?;
        tokio::task::spawn_blocking(move || pending.commit())
            .await
            .map_err(|e| join_error(what(), &e))?
    }
}

fn join_error(what: String, error: &tokio::task::JoinError) -> ImageError {
    ImageError::Invalid {
        what,
        detail: error.to_string(),
    }
}

/// Reads the chunks a download sends, in order; the stream ends when the sender is dropped.
struct ChunkReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        ChunkReader {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_yields_every_chunk_in_order_then_ends() {
        let (sender, chunks) = mpsc::channel(4);
        let feeder = std::thread::spawn(move || {
            for part in [&b"hello "[..], b"", b"chunked ", b"world"] {
                sender
                    .blocking_send(Bytes::copy_from_slice(part))
                    .expect("the reader is alive");
            }
        });
        let mut text = String::new();
        let mut reader = ChunkReader::new(chunks);
        let mut small = [0u8; 3];
        let n = reader.read(&mut small).unwrap();
        text.push_str(std::str::from_utf8(&small[..n]).unwrap());
        reader.read_to_string(&mut text).unwrap();
        feeder.join().unwrap();
        assert_eq!(text, "hello chunked world");
        assert_eq!(reader.read(&mut small).unwrap(), 0);
    }
}
