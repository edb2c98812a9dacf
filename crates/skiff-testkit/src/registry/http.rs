//! Just enough HTTP/1.1 over `std::net` for the registry fixture: a client for one-shot `GET`s
//! (readiness checks, tests) and request parsing for the token server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Result, TestkitError};

/// How long a connect, a write or a read may stall.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head the token server reads.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP response as [`http_get`] returns it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 401.
    pub status: u16,
    /// The header fields in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET http://ADDR/PATH` (`addr` is `host:port`, `path` starts with `/`), with HTTP Basic
/// `credentials` when given. Any status is returned; only connection or protocol failures
/// are errors.
pub fn http_get(addr: &str, path: &str, credentials: Option<(&str, &str)>) -> Result<HttpResponse> {
    http_get_within(addr, path, credentials, IO_TIMEOUT)
}

/// [`http_get`] where a connect, write or read may stall at most `timeout`.
pub(crate) fn http_get_within(
    addr: &str,
    path: &str,
    credentials: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let fail = |detail: String| TestkitError::Invalid {
        fixture: "http",
        detail: format!("GET http://{addr}{path}: {detail}"),
    };
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|error| fail(error.to_string()))?
        .next()
        .ok_or_else(|| fail("address resolves to nothing".to_string()))?;
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|error| fail(error.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| fail(error.to_string()))?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(header) = credentials.map(basic_authorization) {
        request.push_str(&format!("Authorization: {header}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|error| fail(error.to_string()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|error| fail(error.to_string()))?;
    parse_response(&raw).ok_or_else(|| {
        fail(format!(
            "malformed response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

/// The `Authorization` header value for HTTP Basic auth.
pub(crate) fn basic_authorization((user, password): (&str, &str)) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Decodes a `Basic` `Authorization` header value into user and password.
pub(crate) fn parse_basic_authorization(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[head_end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    response.body = if chunked {
        dechunk(rest)?
    } else {
        match response
            .header("content-length")
            .and_then(|len| len.parse::<usize>().ok())
        {
            Some(len) => rest.get(..len)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(response)
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_field = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A request the token server received: method, path, query parameters and headers.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// Reads a request head from `stream` (a body, if any, is ignored).
    pub(crate) fn read(stream: &mut TcpStream) -> Option<Request> {
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while find(&head, b"\r\n\r\n").is_none() {
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 || head.len() > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        let head = String::from_utf8_lossy(&head[..find(&head, b"\r\n\r\n")?]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split_whitespace();
        let method = request_line.next()?.to_string();
        let target = request_line.next()?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        Some(Request {
            method,
            path: percent_decode(path),
            query,
            headers,
        })
    }

    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the query parameter `name`, in order.
    pub(crate) fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Writes a complete response with a JSON body and closes the exchange.
pub(crate) fn respond(
    stream: &mut TcpStream,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &str,
) {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    // The client may have gone away; there is no one to report that to.
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// Decodes `%XX` escapes and `+` (as a space) in a URL component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_and_plus_signs_are_decoded() {
        assert_eq!(
            percent_decode("repository%3Abusybox%3Apull%2Cpush"),
            "repository:busybox:pull,push"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "abcde");
    }

    #[test]
    fn basic_credentials_round_trip() {
        let header = basic_authorization(("user", "pa:ss"));
        assert_eq!(
            parse_basic_authorization(&header),
            Some(("user".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(parse_basic_authorization("Bearer abc"), None);
    }
}
