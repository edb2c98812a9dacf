//! SPDY/3.1 as Kubernetes streams use it (`Upgrade: SPDY/3.1`: what kubectl's exec, attach and
//! port-forward speak to a kubelet, and what `SPDY/3.1+portforward.k8s.io` tunnels through a
//! WebSocket): the frame codec ([`Inflater`], [`Deflater`], [`decode`], [`encode`]) and a
//! server side connection ([`serve`]) that accepts the client's streams.
//!
//! Frames (draft 3.1): a control frame starts with the control bit, version 3 and its type,
//! then 8 bits of flags and a 24-bit length; a data frame with a 31-bit stream id, then flags
//! and length. Header blocks (`SYN_STREAM`, `SYN_REPLY`, `HEADERS`) are a count and
//! length-prefixed names and values, compressed with one zlib stream per direction that
//! starts from the protocol's preset dictionary. Flow control (`WINDOW_UPDATE`) is parsed
//! but not enforced: Kubernetes' SPDY library neither enforces nor sends it.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The protocol version carried in control frames.
pub const VERSION: u16 = 3;
/// The flag ending a stream's direction (data and control frames).
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame payload accepted.
const MAX_LENGTH: usize = (1 << 24) - 1;
/// The largest data frame this side writes.
const MAX_DATA_WRITE: usize = 32 * 1024;

/// Why a SPDY frame or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame that breaks the protocol.
    #[error("malformed SPDY frame: {0}")]
    Malformed(String),
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// The header block did not inflate or deflate.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// The connection failed.
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
}

/// A header block: lower-case names and their values (several values joined by NUL).
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or_default())
}

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream.
        stream_id: u32,
        /// The stream it belongs to (0: none).
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// Flags (`FLAG_FIN`, 0x02 unidirectional).
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// Flags (`FLAG_FIN`).
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why (1 protocol error, 5 cancel, ...).
        status: u32,
    },
    /// Connection settings: (flags, id, value).
    Settings(Vec<(u8, u32, u32)>),
    /// A ping, echoed by the receiver when the other side sent it.
    Ping(u32),
    /// The connection ends.
    GoAway {
        /// The last stream the sender handled.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// Flags (`FLAG_FIN`).
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control credit.
    WindowUpdate {
        /// The stream (0: the connection).
        stream_id: u32,
        /// The credit.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// Flags (`FLAG_FIN`).
        flags: u8,
        /// The payload.
        data: Bytes,
    },
}

/// The preset dictionary of SPDY/3 header compression (draft 3, section 2.6.10.1): the
/// length-prefixed names below followed by common values.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut out = Vec::with_capacity(1423);
        for word in WORDS {
            out.extend_from_slice(&(word.len() as u32).to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(TAIL.as_bytes());
        out
    })
}

/// The receiving direction's header decompressor (one zlib stream for the connection).
pub struct Inflater(Decompress);

impl Default for Inflater {
    fn default() -> Self {
        Inflater(Decompress::new(true))
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Inflater {
    /// Inflates one frame's header block.
    pub fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.0.total_in();
            let before_out = out.len();
            let result = self
                .0
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.0.total_in() - before_in).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let room = out.capacity() > out.len();
                    if input.is_empty() && room {
                        break;
                    }
                    if consumed == 0 && out.len() == before_out && room {
                        break;
                    }
                }
                Err(err) if err.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                }
                Err(err) => return Err(SpdyError::Compression(err.to_string())),
            }
        }
        Ok(out)
    }
}

/// The sending direction's header compressor (one zlib stream with the preset dictionary).
pub struct Deflater {
    inner: Compress,
    started: bool,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            inner: Compress::new(Compression::default(), true),
            started: false,
        }
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Deflater {
    /// Deflates one header block, ending it with a sync flush.
    pub fn deflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        if !self.started {
            self.inner
                .set_dictionary(dictionary())
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            self.started = true;
        }
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inner.total_in();
            self.inner
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = usize::try_from(self.inner.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            // Done once all input went in and the flush left room unused.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

fn encode_headers(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn decode_headers(block: &[u8]) -> Result<Headers, SpdyError> {
    let mut buf = block;
    let take_u32 = |buf: &mut &[u8]| -> Result<u32, SpdyError> {
        if buf.len() < 4 {
            return Err(SpdyError::Malformed("truncated header block".into()));
        }
        Ok(buf.get_u32())
    };
    let take_str = |buf: &mut &[u8], len: usize| -> Result<String, SpdyError> {
        if buf.len() < len {
            return Err(SpdyError::Malformed("truncated header block".into()));
        }
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        buf.advance(len);
        Ok(text)
    };
    let count = take_u32(&mut buf)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = take_u32(&mut buf)? as usize;
        let name = take_str(&mut buf, len)?.to_ascii_lowercase();
        let len = take_u32(&mut buf)? as usize;
        let value = take_str(&mut buf, len)?;
        out.push((name, value));
    }
    Ok(out)
}

/// Decodes the next whole frame at the start of `buf` (consuming it), or `None` when more
/// bytes are needed.
pub fn decode(buf: &mut BytesMut, inflater: &mut Inflater) -> Result<Option<Frame>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flags = buf[4];
    let length = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if length > MAX_LENGTH {
        return Err(SpdyError::Malformed(format!("frame of {length} bytes")));
    }
    if buf.len() < 8 + length {
        return Ok(None);
    }
    buf.advance(8);
    let mut payload = buf.split_to(length).freeze();
    if word & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream_id: word & 0x7fff_ffff,
            flags,
            data: payload,
        }));
    }
    let version = ((word >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = word & 0xffff;
    let need = |n: usize, payload: &Bytes| {
        if payload.len() < n {
            Err(SpdyError::Malformed(format!(
                "control frame type {kind} of {} bytes",
                payload.len()
            )))
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        1 => {
            need(10, &payload)?;
            let stream_id = payload.get_u32() & 0x7fff_ffff;
            let associated = payload.get_u32() & 0x7fff_ffff;
            let priority = payload.get_u8() >> 5;
            let _slot = payload.get_u8();
            let headers = decode_headers(&inflater.inflate(&payload)?)?;
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                flags,
                headers,
            }
        }
        2 | 8 => {
            need(4, &payload)?;
            let stream_id = payload.get_u32() & 0x7fff_ffff;
            let headers = decode_headers(&inflater.inflate(&payload)?)?;
            if kind == 2 {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        3 => {
            need(8, &payload)?;
            Frame::RstStream {
                stream_id: payload.get_u32() & 0x7fff_ffff,
                status: payload.get_u32(),
            }
        }
        4 => {
            need(4, &payload)?;
            let count = payload.get_u32() as usize;
            need(count.saturating_mul(8), &payload)?;
            let mut entries = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                let id = payload.get_u32();
                entries.push(((id >> 24) as u8, id & 0x00ff_ffff, payload.get_u32()));
            }
            Frame::Settings(entries)
        }
        6 => {
            need(4, &payload)?;
            Frame::Ping(payload.get_u32())
        }
        7 => {
            need(4, &payload)?;
            let last_good = payload.get_u32() & 0x7fff_ffff;
            let status = if payload.len() >= 4 {
                payload.get_u32()
            } else {
                0
            };
            Frame::GoAway { last_good, status }
        }
        9 => {
            need(8, &payload)?;
            Frame::WindowUpdate {
                stream_id: payload.get_u32() & 0x7fff_ffff,
                delta: payload.get_u32() & 0x7fff_ffff,
            }
        }
        other => {
            return Err(SpdyError::Malformed(format!(
                "unknown control frame type {other}"
            )));
        }
    };
    Ok(Some(frame))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    let len = payload.len() as u32;
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

/// Appends `frame` to `out`, compressing header blocks with `deflater`.
pub fn encode(frame: &Frame, deflater: &mut Deflater, out: &mut Vec<u8>) -> Result<(), SpdyError> {
    let mut payload = Vec::new();
    match frame {
        Frame::SynStream {
            stream_id,
            associated,
            priority,
            flags,
            headers,
        } => {
            payload.extend_from_slice(&stream_id.to_be_bytes());
            payload.extend_from_slice(&associated.to_be_bytes());
            payload.push(priority << 5);
            payload.push(0);
            payload.extend_from_slice(&deflater.deflate(&encode_headers(headers))?);
            control(out, 1, *flags, &payload);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            payload.extend_from_slice(&stream_id.to_be_bytes());
            payload.extend_from_slice(&deflater.deflate(&encode_headers(headers))?);
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                2
            } else {
                8
            };
            control(out, kind, *flags, &payload);
        }
        Frame::RstStream { stream_id, status } => {
            payload.extend_from_slice(&stream_id.to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            control(out, 3, 0, &payload);
        }
        Frame::Settings(entries) => {
            payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (flags, id, value) in entries {
                payload.extend_from_slice(
                    &((u32::from(*flags) << 24) | (id & 0xff_ffff)).to_be_bytes(),
                );
                payload.extend_from_slice(&value.to_be_bytes());
            }
            control(out, 4, 0, &payload);
        }
        Frame::Ping(id) => control(out, 6, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            payload.extend_from_slice(&last_good.to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            control(out, 7, 0, &payload);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            payload.extend_from_slice(&stream_id.to_be_bytes());
            payload.extend_from_slice(&delta.to_be_bytes());
            control(out, 9, 0, &payload);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() > MAX_LENGTH {
                return Err(SpdyError::Malformed(format!(
                    "data frame of {} bytes",
                    data.len()
                )));
            }
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

/// A stream the client opened: its headers, the data it sends (the channel ends with its
/// `FIN` or a reset), and a handle to answer on it.
#[derive(Debug)]
pub struct IncomingStream {
    /// The stream id.
    pub id: u32,
    /// The `SYN_STREAM` headers.
    pub headers: Headers,
    /// The client's data on this stream.
    pub data: mpsc::Receiver<Bytes>,
    /// Writes to the stream.
    pub writer: Writer,
}

/// Sends frames on a connection (cheap to clone; frames go out in order).
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Frame>,
}

impl Writer {
    /// Sends `data` on stream `id`, split in frames of at most 32 KiB.
    pub async fn data(&self, id: u32, data: Bytes) -> Result<(), SpdyError> {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(MAX_DATA_WRITE));
            self.send(Frame::Data {
                stream_id: id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Ends this side of stream `id`.
    pub async fn finish(&self, id: u32) -> Result<(), SpdyError> {
        self.send(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets stream `id`.
    pub async fn reset(&self, id: u32) -> Result<(), SpdyError> {
        self.send(Frame::RstStream {
            stream_id: id,
            status: 5,
        })
        .await
    }

    /// Sends any frame.
    pub async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.tx.send(frame).await.map_err(|_| {
            SpdyError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the connection is closed",
            ))
        })
    }
}

/// Serves the server side of a SPDY connection over `io`: every stream the client opens is
/// accepted (`SYN_REPLY` with no headers) and handed out on the returned channel; pings are
/// answered. The channel ends when the connection does.
pub fn serve<T>(io: T) -> (mpsc::Receiver<IncomingStream>, Writer)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut write_half) = tokio::io::split(io);
    let (frame_tx, mut frame_rx) = mpsc::channel::<Frame>(64);
    let writer = Writer { tx: frame_tx };
    tokio::spawn(async move {
        let mut deflater = Deflater::default();
        let mut out = Vec::new();
        while let Some(frame) = frame_rx.recv().await {
            out.clear();
            if let Err(err) = encode(&frame, &mut deflater, &mut out) {
                tracing::debug!(error = %err, "cannot encode a SPDY frame");
                break;
            }
            // Write whatever else is queued in the same syscall.
            while let Ok(next) = frame_rx.try_recv() {
                if encode(&next, &mut deflater, &mut out).is_err() {
                    break;
                }
                if out.len() > 256 * 1024 {
                    break;
                }
            }
            if write_half.write_all(&out).await.is_err() || write_half.flush().await.is_err() {
                break;
            }
        }
        let _ = write_half.shutdown().await;
    });
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let conn_writer = writer.clone();
    tokio::spawn(async move {
        let mut inflater = Inflater::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        'read: loop {
            loop {
                let frame = match decode(&mut buf, &mut inflater) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(err) => {
                        tracing::debug!(error = %err, "bad SPDY frame");
                        let _ = conn_writer
                            .send(Frame::GoAway {
                                last_good: 0,
                                status: 1,
                            })
                            .await;
                        break 'read;
                    }
                };
                match frame {
                    Frame::SynStream {
                        stream_id,
                        flags,
                        headers,
                        ..
                    } => {
                        let (tx, rx) = mpsc::channel(32);
                        if flags & FLAG_FIN == 0 {
                            streams.insert(stream_id, tx);
                        }
                        let _ = conn_writer
                            .send(Frame::SynReply {
                                stream_id,
                                flags: 0,
                                headers: Vec::new(),
                            })
                            .await;
                        let incoming = IncomingStream {
                            id: stream_id,
                            headers,
                            data: rx,
                            writer: conn_writer.clone(),
                        };
                        if streams_tx.send(incoming).await.is_err() {
                            let _ = conn_writer.reset(stream_id).await;
                        }
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        if let Some(tx) = streams.get(&stream_id)
                            && !data.is_empty()
                            && tx.send(data).await.is_err()
                        {
                            streams.remove(&stream_id);
                        }
                        if flags & FLAG_FIN != 0 {
                            streams.remove(&stream_id);
                        }
                    }
                    Frame::Headers {
                        stream_id, flags, ..
                    } if flags & FLAG_FIN != 0 => {
                        streams.remove(&stream_id);
                    }
                    Frame::RstStream { stream_id, .. } => {
                        streams.remove(&stream_id);
                    }
                    // Pings from the client have odd ids: echo them.
                    Frame::Ping(id) if id % 2 == 1 => {
                        let _ = conn_writer.send(Frame::Ping(id)).await;
                    }
                    Frame::GoAway { .. } => break 'read,
                    _ => {}
                }
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        drop(streams);
    });
    (streams_rx, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_protocols() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip_with_compressed_headers() {
        let mut deflater = Deflater::default();
        let mut inflater = Inflater::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: vec![("a".into(), "b\0c".into())],
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::Settings(vec![(1, 7, 65536)]),
            Frame::Ping(1),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1000,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut deflater, &mut wire).unwrap();
        }
        // Fed a byte at a time: frames come out only when whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode(&mut buf, &mut inflater).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(header(&vec![("a".into(), "b\0c".into())], "A"), Some("b"));
    }

    #[test]
    fn headers_compressed_against_the_dictionary_inflate() {
        // A compressor that uses the preset dictionary (as Go's SPDY framer does) produces
        // back-references into it; the inflater must load the dictionary when asked.
        let mut go_like = Compress::new(Compression::best(), true);
        go_like.set_dictionary(dictionary()).unwrap();
        let block = encode_headers(&vec![
            ("content-type".into(), "text/plain".into()),
            ("streamtype".into(), "stdout".into()),
        ]);
        let mut compressed = Vec::with_capacity(1024);
        go_like
            .compress_vec(&block, &mut compressed, FlushCompress::Sync)
            .unwrap();
        let mut inflater = Inflater::default();
        let inflated = inflater.inflate(&compressed).unwrap();
        assert_eq!(
            decode_headers(&inflated).unwrap(),
            vec![
                ("content-type".to_string(), "text/plain".to_string()),
                ("streamtype".to_string(), "stdout".to_string())
            ]
        );
    }

    #[test]
    fn garbage_is_refused() {
        let mut inflater = Inflater::default();
        let mut buf = BytesMut::from(&[0x80u8, 0x02, 0x00, 0x01, 0, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf, &mut inflater),
            Err(SpdyError::Version(2))
        ));
        let mut buf = BytesMut::from(&[0x80u8, 0x03, 0x00, 0x06, 0, 0, 0, 1, 0][..]);
        assert!(decode(&mut buf, &mut inflater).is_err());
    }

    #[tokio::test]
    async fn a_server_accepts_streams_and_answers_pings() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut streams, _writer) = serve(server);
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut deflater = Deflater::default();
        let mut out = Vec::new();
        encode(
            &Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            &mut deflater,
            &mut out,
        )
        .unwrap();
        encode(
            &Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"in"),
            },
            &mut deflater,
            &mut out,
        )
        .unwrap();
        encode(&Frame::Ping(7), &mut deflater, &mut out).unwrap();
        wr.write_all(&out).await.unwrap();
        let mut stream = streams.recv().await.unwrap();
        assert_eq!(header(&stream.headers, "streamtype"), Some("stdin"));
        assert_eq!(stream.data.recv().await.unwrap(), Bytes::from_static(b"in"));
        assert!(stream.data.recv().await.is_none());
        stream
            .writer
            .data(1, Bytes::from_static(b"out"))
            .await
            .unwrap();
        let mut inflater = Inflater::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 3 {
            rd.read_buf(&mut buf).await.unwrap();
            while let Some(f) = decode(&mut buf, &mut inflater).unwrap() {
                got.push(f);
            }
        }
        assert!(matches!(got[0], Frame::SynReply { stream_id: 1, .. }));
        assert!(got.contains(&Frame::Ping(7)));
        assert!(got.contains(&Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"out")
        }));
    }
}
