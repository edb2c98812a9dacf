//! Field selectors in the string form of the Kubernetes API (`fieldSelector=` and
//! `kubectl get --field-selector`).
//!
//! Grammar (as in apimachinery's `fields.ParseSelector`): requirements separated by commas, each
//! `field=value`, `field==value` or `field!=value`. A backslash escapes `\`, `,` and `=` in a
//! value. An empty selector matches everything.
//!
//! kube-apiserver only accepts a few fields per kind (its field label conversion functions);
//! [`FieldSelector::validate_for`] refuses the others with the same message
//! (`field label not supported: X`). Matching walks the dotted path through the JSON object; a
//! missing field reads as `""` (or `false`/`0` for the boolean and counter fields Kubernetes
//! exposes).

use serde_json::Value;

/// Why a field selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A requirement had no operator, or no field.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Syntax {
        /// The whole selector.
        selector: String,
        /// The requirement that could not be read.
        term: String,
    },
    /// A value held a backslash followed by something other than `\`, `,` or `=`.
    #[error("invalid field selector {selector:?}: invalid escape sequence in {value:?}")]
    BadEscape {
        /// The whole selector.
        selector: String,
        /// The value as written.
        value: String,
    },
    /// The field is not one the kind can be selected by (kube-apiserver's wording).
    #[error("field label not supported: {field}")]
    UnsupportedField {
        /// The field, e.g. `spec.foo`.
        field: String,
    },
}

/// The comparison of one requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field=value` or `field!=value` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The dotted field, e.g. `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub op: FieldOp,
    /// The value, unescaped.
    pub value: String,
}

impl FieldRequirement {
    /// Whether `obj` satisfies this requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let actual = field_value(obj, &self.field);
        match self.op {
            FieldOp::Equals => actual == self.value,
            FieldOp::NotEquals => actual != self.value,
        }
    }
}

/// A parsed field selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parses `a=b,c!=d`.
    ///
    /// ```
    /// use skiff_apimachinery::FieldSelector;
    /// let s = FieldSelector::parse("metadata.name=web,status.phase!=Failed").unwrap();
    /// assert!(s.matches(&serde_json::json!({"metadata": {"name": "web"}})));
    /// ```
    pub fn parse(selector: &str) -> Result<FieldSelector, FieldSelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(selector, ',') {
            if term.is_empty() {
                continue;
            }
            let syntax = || FieldSelectorError::Syntax {
                selector: selector.to_string(),
                term: term.to_string(),
            };
            let (field, op, raw) = split_operator(term).ok_or_else(syntax)?;
            let field = field.trim();
            if field.is_empty() {
                return Err(syntax());
            }
            let value = unescape(raw).ok_or_else(|| FieldSelectorError::BadEscape {
                selector: selector.to_string(),
                value: raw.to_string(),
            })?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| r.matches(obj))
    }

    /// The name when the selector pins one (`metadata.name=X`), as watches by name do.
    pub fn single_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == "metadata.name" && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }

    /// Refuses fields that `kind` cannot be selected by, as kube-apiserver does.
    pub fn validate_for(&self, kind: &str) -> Result<(), FieldSelectorError> {
        let supported = supported_fields(kind);
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(r) => Err(FieldSelectorError::UnsupportedField {
                field: r.field.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            let value = r
                .value
                .replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=");
            write!(f, "{}{op}{value}", r.field)?;
        }
        Ok(())
    }
}

const META: &[&str] = &["metadata.name", "metadata.namespace"];

/// The fields a kind can be selected by (kube-apiserver's field label conversions); every
/// other kind, custom resources included, takes `metadata.name` and `metadata.namespace`.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            "spec.host",
        ],
        "Node" => &["metadata.name", "spec.unschedulable"],
        "Namespace" => &["metadata.name", "status.phase"],
        "ReplicationController" | "ReplicaSet" => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        "Job" => &["metadata.name", "metadata.namespace", "status.successful"],
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "Service" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        "Event" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "CertificateSigningRequest" => &["metadata.name", "spec.signerName"],
        _ => META,
    }
}

/// The value of `field` in `obj` as a field selector compares it: strings as they are, numbers
/// and booleans printed, a missing field as `""` (`"false"` or `"0"` for the boolean and counter
/// fields Kubernetes exposes). Aliases kube-apiserver keeps are resolved (`spec.host` is
/// `spec.nodeName`, an event's `source` is `source.component`, a pod's `status.podIPs` is its
/// first IP).
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = match field {
        "spec.host" => "spec.nodeName",
        "source" => "source.component",
        "status.podIPs" => "status.podIPs.0.ip",
        other => other,
    };
    let mut current = obj;
    for segment in path.split('.') {
        let next = match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return missing_value(field).to_string(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => missing_value(field).to_string(),
        other => other.to_string(),
    }
}

fn missing_value(field: &str) -> &'static str {
    match field {
        "spec.hostNetwork" | "spec.unschedulable" => "false",
        "status.replicas" | "status.successful" => "0",
        _ => "",
    }
}

/// Splits on `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Finds the first unescaped operator (`!=`, `==`, `=`) and splits around it.
fn split_operator(term: &str) -> Option<(&str, FieldOp, &str)> {
    let bytes = term.as_bytes();
    let mut escaped = false;
    for i in 0..bytes.len() {
        if escaped {
            escaped = false;
            continue;
        }
        match bytes[i] {
            b'\\' => escaped = true,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], FieldOp::NotEquals, &term[i + 2..]));
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], FieldOp::Equals, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], FieldOp::Equals, &term[i + 1..])),
            _ => {}
        }
    }
    None
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
        })
    }

    #[test]
    fn equals_double_equals_and_not_equals_are_parsed() {
        let s = FieldSelector::parse("a=b,c==d,e!=f").unwrap();
        let ops: Vec<_> = s.requirements().iter().map(|r| r.op).collect();
        assert_eq!(
            ops,
            vec![FieldOp::Equals, FieldOp::Equals, FieldOp::NotEquals]
        );
        assert_eq!(s.requirements()[1].value, "d");
        assert_eq!(s.to_string(), "a=b,c=d,e!=f");
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        let s = FieldSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&pod()));
    }

    #[test]
    fn a_term_without_operator_is_refused_like_kubernetes() {
        let err = FieldSelector::parse("metadata.name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
    }

    #[test]
    fn escaped_commas_and_equals_stay_in_the_value() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c,type=x").unwrap();
        assert_eq!(s.requirements()[0].value, "a,b=c");
        assert_eq!(s.requirements().len(), 2);
        assert!(FieldSelector::parse(r"a=b\q").is_err());
    }

    #[test]
    fn matching_walks_dotted_paths_and_missing_fields_equal_empty() {
        let p = pod();
        assert!(
            FieldSelector::parse("spec.nodeName=node-a,status.phase=Running")
                .unwrap()
                .matches(&p)
        );
        assert!(
            !FieldSelector::parse("status.phase!=Running")
                .unwrap()
                .matches(&p)
        );
        assert!(
            FieldSelector::parse("spec.schedulerName=")
                .unwrap()
                .matches(&p)
        );
        assert!(
            FieldSelector::parse("spec.hostNetwork=false")
                .unwrap()
                .matches(&p)
        );
        assert!(
            FieldSelector::parse("status.podIPs=10.0.0.5")
                .unwrap()
                .matches(&p)
        );
        assert!(
            FieldSelector::parse("spec.host=node-a")
                .unwrap()
                .matches(&p)
        );
    }

    #[test]
    fn event_source_reads_the_source_component() {
        let ev = json!({"involvedObject": {"name": "web"}, "source": {"component": "kubelet"}});
        assert!(
            FieldSelector::parse("involvedObject.name=web,source=kubelet")
                .unwrap()
                .matches(&ev)
        );
    }

    #[test]
    fn unsupported_fields_are_refused_with_the_apiserver_message() {
        let s = FieldSelector::parse("status.hostIP=1.2.3.4").unwrap();
        let err = s.validate_for("Pod").unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: status.hostIP");
        assert!(
            FieldSelector::parse("spec.nodeName=a")
                .unwrap()
                .validate_for("Pod")
                .is_ok()
        );
        assert!(
            FieldSelector::parse("metadata.namespace=a")
                .unwrap()
                .validate_for("Node")
                .is_err()
        );
        assert!(
            FieldSelector::parse("metadata.namespace=a")
                .unwrap()
                .validate_for("Widget")
                .is_ok()
        );
    }

    #[test]
    fn a_name_selector_is_recognised_for_watches() {
        let s = FieldSelector::parse("metadata.name=web").unwrap();
        assert_eq!(s.single_name(), Some("web"));
        assert_eq!(
            FieldSelector::parse("metadata.name!=web")
                .unwrap()
                .single_name(),
            None
        );
    }
}
