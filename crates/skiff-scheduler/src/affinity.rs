//! Matching of node selector terms (required and preferred node affinity), tolerations against
//! taints, and pod affinity terms against the pods of a topology domain.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
use skiff_apimachinery::{LabelSelector, Requirement};

/// Whether a node-selector requirement holds for a label map (`matchExpressions`).
pub fn requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    let as_int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(|v| as_int(v)),
                values.first().and_then(|v| as_int(v)),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// Whether one node-selector term holds for a node: all its expressions and fields. An empty
/// term matches nothing (as in Kubernetes).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&EMPTY);
    let name = node.metadata.name.clone().unwrap_or_default();
    let field_labels = BTreeMap::from([("metadata.name".to_string(), name)]);
    exprs.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| requirement_matches(r, &field_labels))
}

/// Whether a pod's `nodeSelector` and required node affinity both admit the node.
pub fn node_matches_pod(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(selector) = spec.node_selector.as_ref() {
        let labels = node.metadata.labels.as_ref();
        let ok = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether a toleration tolerates a taint.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        // An empty key with Exists tolerates everything.
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The node's taints, plus the ones the node lifecycle controller would put on a node whose
/// `Ready` condition is not `True` (`node.kubernetes.io/not-ready` or `unreachable`).
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let implicit = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = implicit
        && !taints.iter().any(|t| t.key == key)
    {
        taints.push(Taint {
            key: key.to_string(),
            effect: "NoSchedule".to_string(),
            ..Taint::default()
        });
    }
    taints
}

fn tolerations_of(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// The first NoSchedule or NoExecute taint of the node the pod does not tolerate.
pub fn untolerated_taint(pod: &Pod, node: &Node) -> Option<Taint> {
    untolerated_among(pod, &effective_taints(node)).cloned()
}

/// The first NoSchedule or NoExecute taint of `taints` (a node's effective taints) the pod
/// does not tolerate.
pub fn untolerated_among<'a>(pod: &Pod, taints: &'a [Taint]) -> Option<&'a Taint> {
    let tolerations = tolerations_of(pod);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// How many PreferNoSchedule taints of the node the pod does not tolerate.
pub fn intolerable_preferred_taints(pod: &Pod, node: &Node) -> usize {
    intolerable_preferred_among(pod, &effective_taints(node))
}

/// How many PreferNoSchedule taints of `taints` (a node's effective taints) the pod does not
/// tolerate.
pub fn intolerable_preferred_among(pod: &Pod, taints: &[Taint]) -> usize {
    let tolerations = tolerations_of(pod);
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count()
}

/// A `metav1.LabelSelector` as a selector; `None` (a nil selector) matches nothing.
pub fn selector_of(selector: Option<&MetaSelector>) -> Option<LabelSelector> {
    let selector = selector?;
    let mut requirements = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        requirements.push(match e.operator.as_str() {
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
            _ => return None,
        });
    }
    Some(LabelSelector { requirements })
}

/// Whether `other` is a pod the affinity term of `owner` (a pod in namespace `owner_ns`) is
/// about: in the term's namespaces (the owner's own when none are named) and matching its
/// label selector.
pub fn term_selects(term: &PodAffinityTerm, owner_ns: &str, other: &Pod) -> bool {
    let other_ns = other.metadata.namespace.as_deref().unwrap_or_default();
    let namespaces = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = if namespaces.is_empty() && term.namespace_selector.is_none() {
        other_ns == owner_ns
    } else if term
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none())
    {
        // An empty namespace selector means every namespace.
        true
    } else {
        namespaces.iter().any(|n| n == other_ns)
    };
    if !ns_ok {
        return false;
    }
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let labels = other.metadata.labels.as_ref().unwrap_or(&EMPTY);
    selector_of(term.label_selector.as_ref()).is_some_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_affinity_operators_work_like_kubernetes() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "gpus": "4"}}}));
        let term = |exprs: serde_json::Value| -> NodeSelectorTerm {
            serde_json::from_value(json!({"matchExpressions": exprs})).unwrap()
        };
        assert!(term_matches(
            &term(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
            &n
        ));
        assert!(!term_matches(
            &term(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
            &n
        ));
        assert!(term_matches(
            &term(json!([{"key": "gpus", "operator": "Gt", "values": ["2"]}])),
            &n
        ));
        assert!(!term_matches(
            &term(json!([{"key": "gpus", "operator": "Lt", "values": ["2"]}])),
            &n
        ));
        assert!(term_matches(
            &term(json!([{"key": "ssd", "operator": "DoesNotExist"}])),
            &n
        ));
        assert!(
            !term_matches(&NodeSelectorTerm::default(), &n),
            "an empty term matches nothing"
        );
        let by_name: NodeSelectorTerm = serde_json::from_value(json!({
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
        }))
        .unwrap();
        assert!(term_matches(&by_name, &n));
    }

    #[test]
    fn tolerations_match_key_value_and_effect() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(
            &tol(json!({"key": "dedicated", "value": "db"})),
            &taint
        ));
        assert!(!tolerates(
            &tol(json!({"key": "dedicated", "value": "web"})),
            &taint
        ));
        assert!(tolerates(
            &tol(json!({"key": "dedicated", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(
            &tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }

    #[test]
    fn a_node_that_is_not_ready_carries_the_not_ready_taint() {
        let ready = node(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        let not_ready =
            node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let unknown =
            node(json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        assert!(effective_taints(&ready).is_empty());
        assert_eq!(
            effective_taints(&not_ready)[0].key,
            "node.kubernetes.io/not-ready"
        );
        assert_eq!(
            effective_taints(&unknown)[0].key,
            "node.kubernetes.io/unreachable"
        );
    }
}
