//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! JSON objects.
//!
//! client-go's typed clients send built-in objects as protobuf since 1.32, so kubectl 1.32+
//! does for `create namespace`, `create configmap`, `auth whoami` and the like. The body is
//! the magic `k8s\0` followed by a `runtime.Unknown` message carrying the object's type and
//! its encoded message. Messages are decoded with a table of every API message's fields
//! (`schema.txt`, written by `tools/gen-proto-schema.py` from the Kubernetes `.proto` files):
//! the proto field names are the JSON names, and a few well-known messages (Time, Quantity,
//! IntOrString, RawExtension ...) have JSON forms of their own. Answers stay JSON, which every
//! client accepts.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Map, Value, json};

/// The bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// The media type of Kubernetes protobuf.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("the protobuf body does not start with the Kubernetes magic bytes")]
    NoMagic,
    /// The bytes end inside a value.
    #[error("the protobuf body is truncated")]
    Truncated,
    /// A wire type the decoder does not know.
    #[error("the protobuf body has an unknown wire type {0}")]
    WireType(u64),
    /// No message is known for the object's type.
    #[error("no protobuf message is known for {api_version}, Kind={kind}: send JSON instead")]
    UnknownType {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Optional,
    Repeated,
    Map,
    Inline,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    label: Label,
    ty: String,
    value_ty: String,
}

type Messages = HashMap<String, HashMap<u64, Field>>;

static SCHEMA: LazyLock<Messages> = LazyLock::new(|| parse_schema(include_str!("schema.txt")));

fn parse_schema(text: &str) -> Messages {
    let mut messages: Messages = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["M", name] => {
                messages.entry(name.to_string()).or_default();
                current = Some(name.to_string());
            }
            [number, name, label, ty, rest @ ..] => {
                let (Some(message), Ok(number)) = (&current, number.parse::<u64>()) else {
                    continue;
                };
                let label = match *label {
                    "r" => Label::Repeated,
                    "m" => Label::Map,
                    "i" => Label::Inline,
                    _ => Label::Optional,
                };
                let field = Field {
                    name: name.to_string(),
                    label,
                    ty: ty.to_string(),
                    value_ty: rest.first().map(|s| s.to_string()).unwrap_or_default(),
                };
                messages
                    .entry(message.clone())
                    .or_default()
                    .insert(number, field);
            }
            _ => {}
        }
    }
    messages
}

/// Whether a content type is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// The proto message of a kind in an apiVersion (`apps/v1`, `Deployment`).
fn message_for(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = if group.is_empty() {
        format!("k8s.io.api.core.{version}")
    } else {
        let short = group.split('.').next().unwrap_or(group);
        format!("k8s.io.api.{short}.{version}")
    };
    [format!("{package}.{kind}"), format!("{META}.{kind}")]
        .into_iter()
        .find(|name| SCHEMA.contains_key(name))
}

/// Decodes a protobuf body into the JSON object it encodes (with `apiVersion` and `kind`).
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoMagic)?;
    let envelope = decode_message("k8s.io.apimachinery.pkg.runtime.Unknown", rest)?;
    let api_version = envelope
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = envelope
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let message = message_for(&api_version, &kind).ok_or_else(|| ProtoError::UnknownType {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let raw = envelope
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut object = decode_message(&message, &raw)?;
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or(ProtoError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn fixed(&mut self, n: usize) -> Result<u64, ProtoError> {
        let bytes = self.take(n)?;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(buf))
    }
}

/// One raw value read off the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u64),
    Bytes(&'a [u8]),
}

fn read_field<'a>(reader: &mut Reader<'a>) -> Result<(u64, Wire<'a>), ProtoError> {
    let key = reader.varint()?;
    let wire = match key & 7 {
        0 => Wire::Varint(reader.varint()?),
        1 => Wire::Fixed64(reader.fixed(8)?),
        2 => {
            let len = usize::try_from(reader.varint()?).map_err(|_| ProtoError::Truncated)?;
            Wire::Bytes(reader.take(len)?)
        }
        5 => Wire::Fixed32(reader.fixed(4)?),
        other => return Err(ProtoError::WireType(other)),
    };
    Ok((key >> 3, wire))
}

fn is_scalar(ty: &str) -> bool {
    !ty.contains('.')
}

/// Decodes one scalar or message value of type `ty`.
fn decode_value(ty: &str, wire: &Wire<'_>) -> Result<Value, ProtoError> {
    Ok(match (ty, wire) {
        ("string", Wire::Bytes(b)) => json!(String::from_utf8_lossy(b)),
        ("bytes", Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ("bool", Wire::Varint(v)) => json!(*v != 0),
        ("int32", Wire::Varint(v)) => json!(*v as i64 as i32),
        ("int64", Wire::Varint(v)) => json!(*v as i64),
        ("uint32" | "uint64", Wire::Varint(v)) => json!(*v),
        ("sint32" | "sint64", Wire::Varint(v)) => json!(((*v >> 1) as i64) ^ -((*v & 1) as i64)),
        ("double", Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        ("float", Wire::Fixed32(v)) => json!(f32::from_bits(*v as u32)),
        ("fixed64", Wire::Fixed64(v)) | ("fixed32", Wire::Fixed32(v)) => json!(*v),
        (message, Wire::Bytes(b)) if !is_scalar(message) => decode_message(message, b)?,
        _ => Value::Null,
    })
}

/// Decodes a packed repeated scalar field.
fn decode_packed(ty: &str, bytes: &[u8]) -> Result<Vec<Value>, ProtoError> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut out = Vec::new();
    while !reader.done() {
        let wire = match ty {
            "double" | "fixed64" => Wire::Fixed64(reader.fixed(8)?),
            "float" | "fixed32" => Wire::Fixed32(reader.fixed(4)?),
            _ => Wire::Varint(reader.varint()?),
        };
        out.push(decode_value(ty, &wire)?);
    }
    Ok(out)
}

/// Decodes a message into its JSON form.
fn decode_message(message: &str, bytes: &[u8]) -> Result<Value, ProtoError> {
    let fields = SCHEMA.get(message);
    let mut out = Map::new();
    let mut reader = Reader { bytes, pos: 0 };
    while !reader.done() {
        let (number, wire) = read_field(&mut reader)?;
        let Some(field) = fields.and_then(|f| f.get(&number)) else {
            continue;
        };
        match field.label {
            Label::Optional => {
                let value = decode_value(&field.ty, &wire)?;
                out.insert(field.name.clone(), value);
            }
            Label::Inline => {
                if let Value::Object(inner) = decode_value(&field.ty, &wire)? {
                    out.extend(inner);
                }
            }
            Label::Repeated => {
                let values = match &wire {
                    Wire::Bytes(b)
                        if is_scalar(&field.ty) && field.ty != "string" && field.ty != "bytes" =>
                    {
                        decode_packed(&field.ty, b)?
                    }
                    _ => vec![decode_value(&field.ty, &wire)?],
                };
                let entry = out
                    .entry(field.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = entry {
                    list.extend(values);
                }
            }
            Label::Map => {
                let Wire::Bytes(entry_bytes) = wire else {
                    continue;
                };
                let mut entry = Reader {
                    bytes: entry_bytes,
                    pos: 0,
                };
                let mut key = Value::Null;
                let mut value = Value::Null;
                while !entry.done() {
                    match read_field(&mut entry)? {
                        (1, w) => key = decode_value(&field.ty, &w)?,
                        (2, w) => value = decode_value(&field.value_ty, &w)?,
                        _ => {}
                    }
                }
                if value.is_null() && field.value_ty == "string" {
                    value = json!("");
                }
                let key = match key {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                let map = out
                    .entry(field.name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(well_known(message, out))
}

/// The JSON form of messages that are not plain objects in JSON.
fn well_known(message: &str, mut fields: Map<String, Value>) -> Value {
    let int = |fields: &Map<String, Value>, name: &str| {
        fields.get(name).and_then(Value::as_i64).unwrap_or(0)
    };
    match message.rsplit('.').next().unwrap_or_default() {
        "Time" | "MicroTime" if message.starts_with(META) => {
            let seconds = int(&fields, "seconds");
            let nanos = int(&fields, "nanos");
            if seconds == 0 && nanos == 0 {
                return Value::Null;
            }
            let time = UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
            let text = crate::object::rfc3339(time);
            if message.ends_with("MicroTime") {
                json!(format!(
                    "{}.{:06}Z",
                    text.trim_end_matches('Z'),
                    nanos / 1000
                ))
            } else {
                json!(text)
            }
        }
        "Duration" if message.starts_with(META) => {
            json!(go_duration(int(&fields, "duration")))
        }
        "Quantity" => fields.remove("string").unwrap_or(json!("0")),
        "IntOrString" => {
            if int(&fields, "type") == 1 {
                fields.remove("strVal").unwrap_or(json!(""))
            } else {
                json!(int(&fields, "intVal"))
            }
        }
        "RawExtension" | "FieldsV1" | "JSON" => {
            let raw = fields
                .get("raw")
                .or_else(|| fields.get("Raw"))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        }
        "ExtraValue" | "Verbs" | "OptionalNames" => {
            fields.remove("items").unwrap_or(Value::Array(Vec::new()))
        }
        _ => {
            // Zero-valued scalars are on the wire for non-pointer fields; JSON leaves empty
            // strings and unset times out.
            fields.retain(|_, v| !(v.is_null() || v.as_str() == Some("")));
            Value::Object(fields)
        }
    }
}

/// A duration in nanoseconds the way Go prints it (`1h2m3s`, `1.5s`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
    let s = (n % 60_000_000_000) as f64 / 1e9;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut unknown = Vec::new();
        bytes_field(1, &type_meta, &mut unknown);
        bytes_field(2, raw, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        body
    }

    #[test]
    fn a_configmap_decodes_to_its_json() {
        let mut meta = Vec::new();
        bytes_field(1, b"cm", &mut meta); // name
        bytes_field(3, b"default", &mut meta); // namespace
        let mut creation = Vec::new();
        bytes_field(8, &creation, &mut meta); // zero creationTimestamp
        creation.clear();
        let mut entry = Vec::new();
        bytes_field(1, b"a", &mut entry);
        bytes_field(2, b"1", &mut entry);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry, &mut cm); // data
        varint(4 << 3, &mut cm); // immutable
        varint(1, &mut cm);
        let obj = decode_object(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "immutable": true,
                   "metadata": {"name": "cm", "namespace": "default"}, "data": {"a": "1"}})
        );
    }

    #[test]
    fn well_known_messages_take_their_json_forms() {
        let mut port = Vec::new();
        varint(1 << 3, &mut port); // type = string
        varint(1, &mut port);
        bytes_field(3, b"http", &mut port);
        let value =
            decode_message("k8s.io.apimachinery.pkg.util.intstr.IntOrString", &port).unwrap();
        assert_eq!(value, json!("http"));
        let mut time = Vec::new();
        varint(1 << 3, &mut time);
        varint(1_709_210_096, &mut time);
        let value = decode_message(&format!("{META}.Time"), &time).unwrap();
        assert_eq!(value, json!("2024-02-29T12:34:56Z"));
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
    }

    #[test]
    fn inline_structs_flatten_and_unknown_types_are_refused() {
        // Volume{name, VolumeSource{emptyDir{}}}: the volume source is inlined in JSON.
        let mut source = Vec::new();
        bytes_field(2, &[], &mut source); // emptyDir
        let mut volume = Vec::new();
        bytes_field(1, b"data", &mut volume);
        bytes_field(2, &source, &mut volume);
        let value = decode_message("k8s.io.api.core.v1.Volume", &volume).unwrap();
        assert_eq!(value, json!({"name": "data", "emptyDir": {}}));
        let err = decode_object(&envelope("example.com/v1", "Widget", &[])).unwrap_err();
        assert!(matches!(err, ProtoError::UnknownType { .. }));
        assert_eq!(decode_object(b"{}"), Err(ProtoError::NoMagic));
    }
}
