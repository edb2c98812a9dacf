//! Label selectors in the string form of the Kubernetes API (`labelSelector=` and `kubectl -l`).
//!
//! Grammar (as in apimachinery's `labels.Parse`): requirements separated by commas; each is
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (v1,v2)` or
//! `key notin (v1,v2)`. An empty selector matches everything.

use std::collections::BTreeMap;

/// Why a selector string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement had no key.
    #[error("invalid label selector {selector:?}: a requirement has no key")]
    EmptyKey {
        /// The whole selector.
        selector: String,
    },
    /// A set (`in`/`notin`) was not closed with `)` or was not opened with `(`.
    #[error(
        "invalid label selector {selector:?}: expected a parenthesised value set after `{operator}`"
    )]
    BadSet {
        /// The whole selector.
        selector: String,
        /// `in` or `notin`.
        operator: &'static str,
    },
    /// A key or value holds characters labels may not contain.
    #[error("invalid label selector {selector:?}: {part:?} is not a valid label key or value")]
    BadToken {
        /// The whole selector.
        selector: String,
        /// The offending key or value.
        part: String,
    },
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    DoesNotExist(String),
    /// `key=value` or `key in (...)`: the label exists with one of the values.
    In(String, Vec<String>),
    /// `key!=value` or `key notin (...)`: the label is absent or has none of the values.
    NotIn(String, Vec<String>),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        }
    }
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// let selector = skiff_apimachinery::LabelSelector::parse("app=web,tier notin (db)").unwrap();
    /// let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    /// assert!(selector.matches(&labels));
    /// ```
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(selector) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(selector, part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Reads a `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`); `None` when
    /// an expression has an unknown operator or a malformed shape.
    ///
    /// ```
    /// let selector = skiff_apimachinery::LabelSelector::from_json(&serde_json::json!({
    ///     "matchLabels": {"app": "web"},
    ///     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
    /// })).unwrap();
    /// assert_eq!(selector.requirements.len(), 2);
    /// ```
    pub fn from_json(selector: &serde_json::Value) -> Option<LabelSelector> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels") {
            requirements.extend(LabelSelector::from_map(labels)?.requirements);
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr.get("key")?.as_str()?.to_string();
            let values: Vec<String> = expr
                .get("values")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            requirements.push(match expr.get("operator")?.as_str()? {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => return None,
            });
        }
        Some(LabelSelector { requirements })
    }

    /// Reads a plain `key: value` map (a Service's or ReplicationController's selector); `None`
    /// when it is not a map of strings.
    pub fn from_map(map: &serde_json::Value) -> Option<LabelSelector> {
        let requirements = map
            .as_object()?
            .iter()
            .map(|(k, v)| Some(Requirement::In(k.clone(), vec![v.as_str()?.to_string()])))
            .collect::<Option<Vec<_>>>()?;
        Some(LabelSelector { requirements })
    }
}

/// The labels of an object (`metadata.labels`), or of a template, as a map.
pub fn labels_of(obj: &serde_json::Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Splits at commas that are not inside parentheses.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

fn parse_requirement(selector: &str, part: &str) -> Result<Requirement, SelectorError> {
    let token = |s: &str| -> Result<String, SelectorError> {
        let s = s.trim();
        if valid_token(s) {
            Ok(s.to_string())
        } else {
            Err(SelectorError::BadToken {
                selector: selector.to_string(),
                part: s.to_string(),
            })
        }
    };
    let key = |s: &str| -> Result<String, SelectorError> {
        if s.trim().is_empty() {
            return Err(SelectorError::EmptyKey {
                selector: selector.to_string(),
            });
        }
        token(s)
    };
    if let Some(rest) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(rest)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(key(k)?, vec![token(v)?]));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(key(k)?, vec![token(v)?]));
    }
    for (word, operator) in [(" notin ", "notin"), (" in ", "in")] {
        if let Some((k, set)) = part.split_once(word) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| SelectorError::BadSet {
                    selector: selector.to_string(),
                    operator,
                })?;
            let values = inner.split(',').map(token).collect::<Result<Vec<_>, _>>()?;
            let key = key(k)?;
            return Ok(if operator == "in" {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            });
        }
    }
    Ok(Requirement::Exists(key(part)?))
}

/// Label keys (with an optional `prefix/`) and values: alphanumerics, `-`, `_`, `.`; empty
/// values are allowed.
fn valid_token(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_parses_and_matches() {
        let s = LabelSelector::parse(
            "app=web, tier!=db, env in (prod,staging), !legacy, team, zone notin (z1)",
        )
        .unwrap();
        assert_eq!(s.requirements.len(), 6);
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("zone", "z2")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("tier", "db")
        ])));
    }

    #[test]
    fn an_empty_selector_matches_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn double_equals_and_prefixed_keys_work() {
        let s = LabelSelector::parse("app.kubernetes.io/name==skiff").unwrap();
        assert!(s.matches(&labels(&[("app.kubernetes.io/name", "skiff")])));
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_reason() {
        assert!(matches!(
            LabelSelector::parse("=x"),
            Err(SelectorError::EmptyKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("env in prod"),
            Err(SelectorError::BadSet { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=b c"),
            Err(SelectorError::BadToken { .. })
        ));
    }
}
