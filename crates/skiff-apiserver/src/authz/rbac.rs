//! RBAC evaluation over a snapshot of the roles and bindings: ClusterRoleBindings first, then
//! the RoleBindings of the request's namespace; subjects (User, Group, ServiceAccount) against
//! the user; rules (verbs, apiGroups, resources with `*`, `resource/subresource` and
//! `*/subresource`, resourceNames, nonResourceURLs with a trailing `*`) against the request.
//! Aggregated ClusterRoles get the rules of the ClusterRoles their selectors pick, as the
//! aggregation controller would fill them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_apimachinery::LabelSelector;

use super::attributes::{Attributes, ResourceAttributes, Target};

/// One rule of a role (`rbac.authorization.k8s.io/v1` PolicyRule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    /// Verbs, `*` for all.
    pub verbs: Vec<String>,
    /// API groups, `*` for all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `*`, `resource/subresource`, `*/subresource`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to (none: every object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths, with an optional trailing `*`.
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// A subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The ServiceAccount's namespace.
    pub namespace: String,
}

/// A binding's role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Its name.
    pub name: String,
    /// Its namespace (empty for a ClusterRoleBinding).
    pub namespace: String,
    /// The role it grants.
    pub role_ref: RoleRef,
    /// Who it grants it to.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// Reads a binding object.
    pub fn from_object(obj: &Value) -> Binding {
        let text = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Binding {
            name: text("/metadata/name"),
            namespace: text("/metadata/namespace"),
            role_ref: obj
                .get("roleRef")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default(),
            subjects: obj
                .get("subjects")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        }
    }
}

/// A Role or ClusterRole.
#[derive(Debug, Clone, Default)]
pub struct Role {
    /// Its rules as stored.
    pub rules: Vec<PolicyRule>,
    /// Its labels (for aggregation).
    pub labels: BTreeMap<String, String>,
    /// The `aggregationRule.clusterRoleSelectors`, when it aggregates.
    pub aggregation: Option<Vec<LabelSelector>>,
}

impl Role {
    /// Reads a role object.
    pub fn from_object(obj: &Value) -> Role {
        let aggregation = obj
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .map(|selectors| {
                selectors
                    .iter()
                    .filter_map(LabelSelector::from_json)
                    .collect()
            });
        Role {
            rules: obj
                .get("rules")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default(),
            labels: skiff_apimachinery::labels::labels_of(obj),
            aggregation,
        }
    }
}

/// The roles and bindings authorization reads, indexed.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// ClusterRoles by name, with aggregated rules filled in.
    pub cluster_roles: HashMap<String, Role>,
    /// Roles by (namespace, name).
    pub roles: HashMap<(String, String), Role>,
    /// Every ClusterRoleBinding.
    pub cluster_role_bindings: Vec<Binding>,
    /// RoleBindings by namespace.
    pub role_bindings: HashMap<String, Vec<Binding>>,
    /// Aggregated ClusterRoles whose stored rules differ from what their selectors pick, with
    /// the rules they should have (the aggregation controller writes them).
    pub stale_aggregations: Vec<(String, Vec<PolicyRule>)>,
}

/// Called with each rule's source and rule, or an error (a missing role); returns whether to
/// go on.
type RuleVisitor<'a> = dyn FnMut(&str, Option<&PolicyRule>, Option<String>) -> bool + 'a;

/// What RBAC says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether a rule allows it.
    pub allowed: bool,
    /// `RBAC: allowed by ...`, or the errors met on the way (bindings to missing roles).
    pub reason: String,
}

impl Snapshot {
    /// Builds the index from the stored objects.
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_role_bindings: &[Value],
        role_bindings: &[Value],
    ) -> Snapshot {
        let name = |o: &Value| crate::object::meta_str(o, "name").to_string();
        let mut snapshot = Snapshot {
            cluster_roles: cluster_roles
                .iter()
                .map(|o| (name(o), Role::from_object(o)))
                .collect(),
            roles: roles
                .iter()
                .map(|o| {
                    let ns = crate::object::meta_str(o, "namespace").to_string();
                    ((ns, name(o)), Role::from_object(o))
                })
                .collect(),
            cluster_role_bindings: cluster_role_bindings
                .iter()
                .map(Binding::from_object)
                .collect(),
            role_bindings: HashMap::new(),
            stale_aggregations: Vec::new(),
        };
        for binding in role_bindings.iter().map(Binding::from_object) {
            snapshot
                .role_bindings
                .entry(binding.namespace.clone())
                .or_default()
                .push(binding);
        }
        let aggregated: Vec<String> = snapshot
            .cluster_roles
            .iter()
            .filter(|(_, r)| r.aggregation.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let filled: Vec<(String, Vec<PolicyRule>)> = aggregated
            .into_iter()
            .map(|n| {
                let rules = snapshot.aggregate(&n, &mut HashSet::new());
                (n, rules)
            })
            .collect();
        for (n, rules) in filled {
            if let Some(role) = snapshot.cluster_roles.get_mut(&n) {
                if role.rules != rules {
                    snapshot.stale_aggregations.push((n.clone(), rules.clone()));
                }
                role.rules = rules;
            }
        }
        snapshot.stale_aggregations.sort_by(|a, b| a.0.cmp(&b.0));
        snapshot
    }

    /// The rules of an aggregated ClusterRole: the union (in name order, without repeats) of
    /// the rules of every other ClusterRole one of its selectors picks, themselves aggregated.
    pub fn aggregate(&self, name: &str, seen: &mut HashSet<String>) -> Vec<PolicyRule> {
        let Some(role) = self.cluster_roles.get(name) else {
            return Vec::new();
        };
        let Some(selectors) = &role.aggregation else {
            return role.rules.clone();
        };
        seen.insert(name.to_string());
        let mut names: Vec<&String> = self
            .cluster_roles
            .iter()
            .filter(|(n, r)| {
                *n != name && selectors.iter().any(|s| s.matches(&r.labels)) && !seen.contains(*n)
            })
            .map(|(n, _)| n)
            .collect();
        names.sort();
        let mut rules: Vec<PolicyRule> = Vec::new();
        for n in names {
            for rule in self.aggregate(n, seen) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        rules
    }

    /// Decides a request: the first rule of a binding that applies to the user and allows
    /// the request wins.
    pub fn authorize(&self, attrs: &Attributes) -> Verdict {
        let mut errors = Vec::new();
        let mut found = None;
        self.visit(
            &attrs.user,
            &attrs.groups,
            namespace_of(attrs),
            &mut |source, rule, err| {
                if let Some(err) = err {
                    errors.push(err);
                    return true;
                }
                if let Some(rule) = rule
                    && rule_allows(attrs, rule)
                {
                    found = Some(source.to_string());
                    return false;
                }
                true
            },
        );
        match found {
            Some(source) => Verdict {
                allowed: true,
                reason: format!("RBAC: allowed by {source}"),
            },
            None if errors.is_empty() => Verdict {
                allowed: false,
                reason: String::new(),
            },
            None => Verdict {
                allowed: false,
                reason: format!("RBAC: {}", join_errors(&errors)),
            },
        }
    }

    /// Every rule that applies to the user in `namespace` (the cluster's for `""`), and
    /// whether some binding pointed at a missing role.
    pub fn rules_for(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
    ) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, groups, namespace, &mut |_, rule, err| {
            if let Some(err) = err {
                errors.push(err);
            }
            if let Some(rule) = rule {
                rules.push(rule.clone());
            }
            true
        });
        (rules, errors)
    }

    /// Visits the rules of the bindings that apply to the user, ClusterRoleBindings first;
    /// stops when `visitor` returns false.
    fn visit(&self, user: &str, groups: &[String], namespace: &str, visitor: &mut RuleVisitor<'_>) {
        for binding in &self.cluster_role_bindings {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| applies_to(s, user, groups, ""))
            else {
                continue;
            };
            let rules = match self.role_rules(&binding.role_ref, "") {
                Ok(rules) => rules,
                Err(err) => {
                    if !visitor("", None, Some(err)) {
                        return;
                    }
                    continue;
                }
            };
            let source = format!(
                "ClusterRoleBinding \"{}\" of {} \"{}\" to {}",
                binding.name,
                binding.role_ref.kind,
                binding.role_ref.name,
                describe(subject, "")
            );
            for rule in rules {
                if !visitor(&source, Some(rule), None) {
                    return;
                }
            }
        }
        if namespace.is_empty() {
            return;
        }
        for binding in self.role_bindings.get(namespace).into_iter().flatten() {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| applies_to(s, user, groups, namespace))
            else {
                continue;
            };
            let rules = match self.role_rules(&binding.role_ref, namespace) {
                Ok(rules) => rules,
                Err(err) => {
                    if !visitor("", None, Some(err)) {
                        return;
                    }
                    continue;
                }
            };
            let source = format!(
                "RoleBinding \"{}/{}\" of {} \"{}\" to {}",
                binding.name,
                binding.namespace,
                binding.role_ref.kind,
                binding.role_ref.name,
                describe(subject, &binding.namespace)
            );
            for rule in rules {
                if !visitor(&source, Some(rule), None) {
                    return;
                }
            }
        }
    }

    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            "Role" if !namespace.is_empty() => self
                .roles
                .get(&(namespace.to_string(), role_ref.name.clone()))
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

fn join_errors(errors: &[String]) -> String {
    if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

/// The namespace whose RoleBindings count for a request (none for non-resource requests).
fn namespace_of(attrs: &Attributes) -> &str {
    match &attrs.target {
        Target::Resource(r) => &r.namespace,
        Target::NonResource { .. } => "",
    }
}

/// Whether a subject names the user (a ServiceAccount without a namespace is one of the
/// binding's namespace).
pub fn applies_to(subject: &Subject, user: &str, groups: &[String], namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            !ns.is_empty() && user == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

fn describe(subject: &Subject, namespace: &str) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                &subject.namespace
            };
            format!("{} \"{}/{}\"", subject.kind, subject.name, ns)
        }
        _ => format!("{} \"{}\"", subject.kind, subject.name),
    }
}

/// Whether a rule allows the request.
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    match &attrs.target {
        Target::Resource(r) => resource_rule_allows(&attrs.verb, r, rule),
        Target::NonResource { path } => {
            verb_matches(rule, &attrs.verb) && non_resource_url_matches(rule, path)
        }
    }
}

fn resource_rule_allows(verb: &str, r: &ResourceAttributes, rule: &PolicyRule) -> bool {
    let combined = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    verb_matches(rule, verb)
        && rule.api_groups.iter().any(|g| g == "*" || *g == r.group)
        && resource_matches(rule, &combined, &r.subresource)
        && (rule.resource_names.is_empty()
            || (!r.name.is_empty() && rule.resource_names.contains(&r.name)))
}

fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

/// `*`, the exact `resource[/subresource]`, or `*/subresource` for a subresource request.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|res| {
        res == "*"
            || res == combined
            || (!subresource.is_empty() && res.strip_prefix("*/") == Some(subresource))
    })
}

/// `*`, the exact path, or a prefix ending in `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::Identity;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            resource_names: s(names),
            non_resource_urls: Vec::new(),
        }
    }

    fn sa() -> Identity {
        crate::serviceaccount::identity("default", "default")
    }

    fn req(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::resource(
            &sa(),
            verb,
            ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            },
        )
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let r = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(rule_allows(&req("list", "", "pods", "", "a", ""), &r));
        assert!(!rule_allows(&req("delete", "", "pods", "", "a", "x"), &r));
        assert!(!rule_allows(&req("get", "apps", "pods", "", "a", "x"), &r));
        assert!(!rule_allows(&req("get", "", "pods", "log", "a", "x"), &r));
        let all = rule(&["*"], &["*"], &["*"], &[]);
        assert!(rule_allows(
            &req("delete", "apps", "deployments", "scale", "a", "x"),
            &all
        ));
        let scale = rule(&["update"], &["apps"], &["*/scale"], &[]);
        assert!(rule_allows(
            &req("update", "apps", "deployments", "scale", "a", "x"),
            &scale
        ));
        assert!(!rule_allows(
            &req("update", "apps", "deployments", "", "a", "x"),
            &scale
        ));
        assert!(!rule_allows(
            &req("update", "apps", "deployments", "status", "a", "x"),
            &scale
        ));
        let log = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(rule_allows(&req("get", "", "pods", "log", "a", "x"), &log));
        let named = rule(&["get", "list"], &[""], &["configmaps"], &["one"]);
        assert!(rule_allows(
            &req("get", "", "configmaps", "", "a", "one"),
            &named
        ));
        assert!(!rule_allows(
            &req("get", "", "configmaps", "", "a", "two"),
            &named
        ));
        assert!(!rule_allows(
            &req("list", "", "configmaps", "", "a", ""),
            &named
        ));
        assert!(!rule_allows(
            &req("create", "", "configmaps", "", "a", ""),
            &named
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let mut r = rule(&["get"], &[], &[], &[]);
        r.non_resource_urls = vec!["/healthz".into(), "/apis/*".into()];
        let at = |verb: &str, path: &str| Attributes::non_resource(&sa(), verb, path);
        assert!(rule_allows(&at("get", "/healthz"), &r));
        assert!(rule_allows(&at("get", "/apis/apps/v1"), &r));
        assert!(!rule_allows(&at("get", "/apis"), &r));
        assert!(!rule_allows(&at("post", "/healthz"), &r));
        assert!(!rule_allows(&at("get", "/metrics"), &r));
        assert!(!rule_allows(&req("get", "", "pods", "", "a", "x"), &r));
    }

    fn snapshot() -> Snapshot {
        Snapshot::build(
            &[
                json!({"metadata": {"name": "view", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                       "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
                json!({"metadata": {"name": "to-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                       "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
                json!({"metadata": {"name": "edit"},
                       "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]}}),
                json!({"metadata": {"name": "deleter"},
                       "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]}),
            ],
            &[json!({"metadata": {"name": "reader", "namespace": "a"},
                     "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}]})],
            &[
                json!({"metadata": {"name": "viewers"}, "roleRef": {"kind": "ClusterRole", "name": "edit"},
                     "subjects": [{"kind": "Group", "name": "viewers"}]}),
            ],
            &[
                json!({"metadata": {"name": "r", "namespace": "a"}, "roleRef": {"kind": "Role", "name": "reader"},
                       "subjects": [{"kind": "ServiceAccount", "name": "default"}]}),
                json!({"metadata": {"name": "d", "namespace": "b"}, "roleRef": {"kind": "ClusterRole", "name": "deleter"},
                       "subjects": [{"kind": "User", "name": "system:serviceaccount:default:default"}]}),
                json!({"metadata": {"name": "gone", "namespace": "c"}, "roleRef": {"kind": "Role", "name": "missing"},
                       "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}),
            ],
        )
    }

    #[test]
    fn bindings_grant_their_roles_in_their_scope() {
        let s = snapshot();
        // The ServiceAccount subject without a namespace is one of namespace "a" only.
        assert!(
            !s.authorize(&req("list", "", "secrets", "", "a", ""))
                .allowed
        );
        let mut in_a = crate::serviceaccount::identity("a", "default");
        let attrs = |id: &Identity, verb: &str, ns: &str| {
            Attributes::resource(
                id,
                verb,
                ResourceAttributes {
                    resource: "secrets".into(),
                    namespace: ns.into(),
                    ..ResourceAttributes::default()
                },
            )
        };
        let verdict = s.authorize(&attrs(&in_a, "list", "a"));
        assert_eq!(
            verdict,
            Verdict {
                allowed: true,
                reason: "RBAC: allowed by RoleBinding \"r/a\" of Role \"reader\" to ServiceAccount \"default/a\"".into()
            }
        );
        assert!(!s.authorize(&attrs(&in_a, "list", "b")).allowed);
        assert!(
            s.authorize(&req("delete", "", "pods", "", "b", "x"))
                .allowed
        );
        assert!(
            !s.authorize(&req("delete", "", "pods", "", "a", "x"))
                .allowed
        );
        // Aggregation is transitive: edit picks view, which picks to-view.
        in_a.groups.push("viewers".into());
        let mut list_pods = req("list", "", "pods", "", "z", "");
        list_pods.groups = in_a.groups.clone();
        assert!(s.authorize(&list_pods).allowed);
        let missing = s.authorize(&req("get", "", "pods", "", "c", "x"));
        assert_eq!(
            missing.reason,
            "RBAC: role.rbac.authorization.k8s.io \"missing\" not found"
        );
        let (rules, _) = s.rules_for("u", &["viewers".into()], "");
        assert_eq!(rules, vec![rule(&["get", "list"], &[""], &["pods"], &[])]);
    }
}
