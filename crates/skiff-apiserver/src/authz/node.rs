//! The Node authorizer: what a node identity (user `system:node:NAME` in group
//! `system:nodes`, the client certificate a node agent gets) may do, as kube-apiserver's
//! `--authorization-mode=Node` decides it. A node reads the cluster's shape (nodes, pods,
//! services, endpoints, endpoint slices, and, because Skiff's node agent is also the service
//! proxy, the ingress proxy and the network policy enforcer: namespaces, network policies,
//! ingresses, ingress classes and persistent volumes); it writes only its own Node, its own
//! Lease, events, and the pods bound to it; and it reads a Secret, ConfigMap,
//! PersistentVolumeClaim or ServiceAccount, one at a time by name, only when a pod bound to it
//! names that object (volumes, projected sources, env, envFrom, imagePullSecrets, its service
//! account and that account's imagePullSecrets). Skiff's own rule on top: a Secret some
//! Ingress names in `spec.tls[].secretName` is readable by every node, because every node's
//! agent runs the L7 ingress proxy that terminates TLS with it. [`classify`] is the pure part
//! of the decision; [`decide`] answers the rest from the [`super::graph`], never the store.

use serde_json::Value;

use super::AuthzError;
use super::attributes::{Attributes, ResourceAttributes, Target};
use super::rbac::Verdict;
use crate::certificates::{NODE_USER_PREFIX, NODES};
use crate::state::AppState;

/// The ConfigMap every node reads: the cluster's network settings.
pub const CLUSTER_NETWORK_CONFIG_MAP: (&str, &str) = ("kube-system", "skiff-cluster-network");
/// The annotation naming the node of a local-path PersistentVolume.
pub const ANN_VOLUME_NODE: &str = "local.path.provisioner/selected-node";
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a request comes from, if its user is a node identity.
pub fn node_of(attrs: &Attributes) -> Option<&str> {
    if !attrs.groups.iter().any(|g| g == NODES) {
        return None;
    }
    attrs
        .user
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// An object a pod may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Referenced {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
    /// A PersistentVolumeClaim.
    Claim,
    /// A ServiceAccount.
    ServiceAccount,
}

/// What the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed whatever the objects say.
    Allow,
    /// Refused whatever the objects say.
    Deny,
    /// Allowed when the pod `namespace/name` is bound to the node.
    PodOnNode,
    /// Allowed when a pod bound to the node in the namespace names the object.
    UsedByPodOnNode(Referenced),
    /// Allowed when the PersistentVolume is a local volume of the node.
    LocalVolumeOfNode,
}

const READ: &[&str] = &["get", "list", "watch"];

fn one_of(verb: &str, verbs: &[&str]) -> bool {
    verbs.contains(&verb)
}

/// The part of the decision that needs no object. Secrets, ConfigMaps, claims and service
/// accounts are read one at a time, by name (a list or watch names its object with
/// `fieldSelector=metadata.name=NAME`), as kube-apiserver's node authorizer allows.
pub fn classify(node: &str, verb: &str, r: &ResourceAttributes) -> Decision {
    let own = r.name == node;
    let allow = |yes: bool| if yes { Decision::Allow } else { Decision::Deny };
    match (
        r.group.as_str(),
        r.resource.as_str(),
        r.subresource.as_str(),
    ) {
        ("", "nodes", "") => allow(
            one_of(verb, READ)
                || verb == "create"
                || (own && one_of(verb, &["update", "patch", "delete"])),
        ),
        ("", "nodes", "status") => allow(own && one_of(verb, &["get", "update", "patch"])),
        ("", "pods", "") if one_of(verb, READ) => Decision::Allow,
        ("", "pods", "") if verb == "delete" => Decision::PodOnNode,
        ("", "pods", "status") if one_of(verb, &["get", "update", "patch"]) => Decision::PodOnNode,
        ("", "pods", "eviction") if verb == "create" => Decision::PodOnNode,
        ("", "services" | "endpoints" | "namespaces", "")
        | ("discovery.k8s.io", "endpointslices", "")
        | ("networking.k8s.io", "networkpolicies" | "ingresses" | "ingressclasses", "")
        | ("", "persistentvolumes", "") => {
            if one_of(verb, READ) {
                Decision::Allow
            } else if r.resource == "persistentvolumes" && verb == "delete" {
                Decision::LocalVolumeOfNode
            } else {
                Decision::Deny
            }
        }
        ("" | "events.k8s.io", "events", "") => allow(one_of(verb, &["create", "update", "patch"])),
        ("coordination.k8s.io", "leases", "") => allow(
            r.namespace == NODE_LEASE_NAMESPACE
                && ((verb == "create" && r.name.is_empty())
                    || (own && one_of(verb, &["get", "update", "patch", "delete"]))),
        ),
        ("", "secrets", "") if one_of(verb, READ) && !r.name.is_empty() => {
            Decision::UsedByPodOnNode(Referenced::Secret)
        }
        ("", "configmaps", "") if one_of(verb, READ) && !r.name.is_empty() => {
            if (r.namespace.as_str(), r.name.as_str()) == CLUSTER_NETWORK_CONFIG_MAP {
                Decision::Allow
            } else {
                Decision::UsedByPodOnNode(Referenced::ConfigMap)
            }
        }
        ("", "persistentvolumeclaims", "") if one_of(verb, READ) && !r.name.is_empty() => {
            Decision::UsedByPodOnNode(Referenced::Claim)
        }
        ("", "serviceaccounts", "") if one_of(verb, READ) && !r.name.is_empty() => {
            Decision::UsedByPodOnNode(Referenced::ServiceAccount)
        }
        ("", "serviceaccounts", "token") if verb == "create" => {
            Decision::UsedByPodOnNode(Referenced::ServiceAccount)
        }
        ("certificates.k8s.io", "certificatesigningrequests", "") => {
            allow(one_of(verb, &["create", "get"]))
        }
        ("authentication.k8s.io", "tokenreviews" | "selfsubjectreviews", "")
        | ("authorization.k8s.io", "selfsubjectaccessreviews" | "selfsubjectrulesreviews", "")
        | ("authorization.k8s.io", "subjectaccessreviews" | "localsubjectaccessreviews", "") => {
            allow(verb == "create")
        }
        _ => Decision::Deny,
    }
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The service account a pod runs as.
pub fn service_account_of(pod: &Value) -> &str {
    str_at(pod, "/spec/serviceAccountName")
        .or_else(|| str_at(pod, "/spec/serviceAccount"))
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Every object of kind `kind` pod names.
pub fn names_in_pod(pod: &Value, kind: Referenced) -> Vec<String> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut out: Vec<String> = Vec::new();
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(|field| strs(spec.get(field)));
    match kind {
        Referenced::ServiceAccount => out.push(service_account_of(pod).to_string()),
        Referenced::Claim => {
            let pod_name = crate::object::name(pod);
            for volume in strs(spec.get("volumes")) {
                out.extend(str_at(volume, "/persistentVolumeClaim/claimName").map(str::to_string));
                if volume.get("ephemeral").is_some()
                    && let Some(name) = str_at(volume, "/name")
                {
                    // The claim of a generic ephemeral volume is named POD-VOLUME.
                    out.push(format!("{pod_name}-{name}"));
                }
            }
        }
        Referenced::Secret | Referenced::ConfigMap => {
            let secret = kind == Referenced::Secret;
            let (volume_key, projected_key, env_key, env_from_key) = if secret {
                (
                    "/secret/secretName",
                    "/secret/name",
                    "/valueFrom/secretKeyRef/name",
                    "/secretRef/name",
                )
            } else {
                (
                    "/configMap/name",
                    "/configMap/name",
                    "/valueFrom/configMapKeyRef/name",
                    "/configMapRef/name",
                )
            };
            for volume in strs(spec.get("volumes")) {
                out.extend(str_at(volume, volume_key).map(str::to_string));
                for source in strs(volume.pointer("/projected/sources")) {
                    out.extend(str_at(source, projected_key).map(str::to_string));
                }
            }
            for container in containers {
                for env in strs(container.get("env")) {
                    out.extend(str_at(env, env_key).map(str::to_string));
                }
                for from in strs(container.get("envFrom")) {
                    out.extend(str_at(from, env_from_key).map(str::to_string));
                }
            }
            if secret {
                for pull in strs(spec.get("imagePullSecrets")) {
                    out.extend(str_at(pull, "/name").map(str::to_string));
                }
            }
        }
    }
    out
}

/// Decides a resource request of node `node` from the graph ([`super::graph`]); a refusal
/// that depends on the graph is decided again once the graph has caught up with the watch
/// caches.
pub async fn decide(
    state: &AppState,
    node: &str,
    attrs: &Attributes,
) -> Result<Verdict, AuthzError> {
    let Target::Resource(r) = &attrs.target else {
        return Ok(verdict(false, ""));
    };
    let decision = classify(node, &attrs.verb, r);
    let mut allowed = allowed_by_graph(state, node, r, &decision);
    if !allowed && decision != Decision::Deny && state.node_graph.catch_up(state).await {
        allowed = allowed_by_graph(state, node, r, &decision);
    }
    if !allowed {
        // Worth seeing: a node agent refused something it asked for is a broken node.
        tracing::info!(%node, verb = %attrs.verb, group = %r.group, resource = %r.resource, subresource = %r.subresource, namespace = %r.namespace, name = %r.name, "refused a node's request");
    }
    let reason = if allowed || decision == Decision::Deny {
        String::new()
    } else {
        format!("no relationship found between node '{node}' and this object")
    };
    Ok(verdict(allowed, &reason))
}

fn allowed_by_graph(
    state: &AppState,
    node: &str,
    r: &ResourceAttributes,
    decision: &Decision,
) -> bool {
    let graph = &state.node_graph;
    match decision {
        Decision::Allow => true,
        Decision::Deny => false,
        Decision::PodOnNode => graph
            .read(|g| g.pod_on_node(&r.namespace, &r.name, node))
            .unwrap_or(false),
        Decision::LocalVolumeOfNode => graph
            .read(|g| g.local_volume_of(&r.name, node))
            .unwrap_or(false),
        Decision::UsedByPodOnNode(kind) => graph
            .read(|g| {
                g.used_by_pod_on_node(node, *kind, &r.namespace, &r.name)
                    || (*kind == Referenced::Secret && g.ingress_tls_secret(&r.namespace, &r.name))
            })
            .unwrap_or(false),
    }
}

fn verdict(allowed: bool, reason: &str) -> Verdict {
    Verdict {
        allowed,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn res(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> ResourceAttributes {
        ResourceAttributes {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn decide(verb: &str, r: ResourceAttributes) -> Decision {
        classify("n1", verb, &r)
    }

    #[test]
    fn only_node_identities_are_nodes() {
        let node = crate::state::Identity {
            username: "system:node:n1".into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        };
        let attrs = Attributes::non_resource(&node, "get", "/api");
        assert_eq!(node_of(&attrs), Some("n1"));
        let impostor = crate::state::Identity {
            username: "system:node:n1".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert_eq!(
            node_of(&Attributes::non_resource(&impostor, "get", "/api")),
            None
        );
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        assert_eq!(
            decide("list", res("", "nodes", "", "", "")),
            Decision::Allow
        );
        assert_eq!(
            decide("create", res("", "nodes", "", "", "")),
            Decision::Allow
        );
        assert_eq!(
            decide("patch", res("", "nodes", "status", "", "n1")),
            Decision::Allow
        );
        assert_eq!(
            decide("patch", res("", "nodes", "", "", "n1")),
            Decision::Allow
        );
        assert_eq!(
            decide("patch", res("", "nodes", "status", "", "n2")),
            Decision::Deny
        );
        assert_eq!(
            decide("delete", res("", "nodes", "", "", "n2")),
            Decision::Deny
        );
        let lease = |verb, name| {
            decide(
                verb,
                res(
                    "coordination.k8s.io",
                    "leases",
                    "",
                    NODE_LEASE_NAMESPACE,
                    name,
                ),
            )
        };
        assert_eq!(lease("patch", "n1"), Decision::Allow);
        assert_eq!(lease("create", ""), Decision::Allow);
        assert_eq!(lease("patch", "n2"), Decision::Deny);
        assert_eq!(
            decide(
                "get",
                res("coordination.k8s.io", "leases", "", "kube-system", "n1")
            ),
            Decision::Deny
        );
    }

    #[test]
    fn pods_are_read_freely_but_written_only_when_bound_here() {
        assert_eq!(
            decide("watch", res("", "pods", "", "", "")),
            Decision::Allow
        );
        assert_eq!(
            decide("patch", res("", "pods", "status", "a", "p")),
            Decision::PodOnNode
        );
        assert_eq!(
            decide("delete", res("", "pods", "", "a", "p")),
            Decision::PodOnNode
        );
        assert_eq!(
            decide("create", res("", "pods", "", "a", "")),
            Decision::Deny
        );
        assert_eq!(
            decide("update", res("", "pods", "", "a", "p")),
            Decision::Deny
        );
        assert_eq!(
            decide("create", res("", "pods", "exec", "a", "p")),
            Decision::Deny
        );
    }

    #[test]
    fn secrets_are_read_one_by_one_through_pods() {
        assert_eq!(
            decide("get", res("", "secrets", "", "a", "s")),
            Decision::UsedByPodOnNode(Referenced::Secret)
        );
        assert_eq!(
            decide("list", res("", "secrets", "", "a", "")),
            Decision::Deny
        );
        assert_eq!(
            decide("watch", res("", "secrets", "", "", "")),
            Decision::Deny
        );
        assert_eq!(
            decide("watch", res("", "secrets", "", "a", "s")),
            Decision::UsedByPodOnNode(Referenced::Secret)
        );
        assert_eq!(
            decide("update", res("", "secrets", "", "a", "s")),
            Decision::Deny
        );
        assert_eq!(
            decide(
                "get",
                res("", "configmaps", "", "kube-system", "skiff-cluster-network")
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                "create",
                res("", "serviceaccounts", "token", "a", "default")
            ),
            Decision::UsedByPodOnNode(Referenced::ServiceAccount)
        );
        assert_eq!(
            decide("delete", res("", "persistentvolumes", "", "", "v")),
            Decision::LocalVolumeOfNode
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for (verb, r) in [
            ("list", res("apps", "deployments", "", "a", "")),
            (
                "create",
                res(
                    "rbac.authorization.k8s.io",
                    "clusterrolebindings",
                    "",
                    "",
                    "",
                ),
            ),
            ("update", res("", "services", "", "a", "s")),
            ("list", res("", "configmaps", "", "a", "")),
            (
                "delete",
                res(
                    "certificates.k8s.io",
                    "certificatesigningrequests",
                    "",
                    "",
                    "x",
                ),
            ),
        ] {
            assert_eq!(decide(verb, r.clone()), Decision::Deny, "{verb} {r:?}");
        }
    }

    #[test]
    fn pods_name_their_secrets_configmaps_claims_and_account() {
        let pod = json!({
            "metadata": {"name": "web"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [
                        {"configMap": {"name": "kube-root-ca.crt"}},
                        {"secret": {"name": "proj-secret"}},
                    ]}},
                    {"name": "scratch", "ephemeral": {}},
                ],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    ],
                    "envFrom": [{"secretRef": {"name": "from-secret"}}, {"configMapRef": {"name": "from-cm"}}],
                }],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
            },
        });
        let mut secrets = names_in_pod(&pod, Referenced::Secret);
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "env-secret",
                "from-secret",
                "init-secret",
                "proj-secret",
                "pull",
                "vol-secret"
            ]
        );
        let mut maps = names_in_pod(&pod, Referenced::ConfigMap);
        maps.sort();
        assert_eq!(maps, ["env-cm", "from-cm", "kube-root-ca.crt", "vol-cm"]);
        assert_eq!(
            names_in_pod(&pod, Referenced::Claim),
            ["data", "web-scratch"]
        );
        assert_eq!(names_in_pod(&pod, Referenced::ServiceAccount), ["builder"]);
        assert_eq!(
            names_in_pod(&json!({"spec": {}}), Referenced::ServiceAccount),
            ["default"]
        );
    }
}
