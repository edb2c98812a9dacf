//! EndpointSlices grouped by the Service they belong to (the `kubernetes.io/service-name`
//! label, within the slice's namespace), as the proxy, the DNS and the Ingress proxy read them.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The slices of each `(namespace, service)` whose address type is one of `families`
/// (`IPv4`, `IPv6`, `FQDN`; empty: every type); slices without the label are left out.
/// `slices` may hold the objects or anything borrowing them (the agent's `Arc`s from its
/// reflector stores, which need no deep copy).
pub fn by_service<'a, E: Borrow<EndpointSlice>>(
    slices: &'a [E],
    families: &[&str],
) -> BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
    let mut out: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let slice: &EndpointSlice = slice.borrow();
        if !families.is_empty() && !families.contains(&slice.address_type.as_str()) {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        out.entry((namespace, service.as_str()))
            .or_default()
            .push(slice);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slice(ns: &str, svc: Option<&str>, family: &str) -> EndpointSlice {
        let labels = svc.map(|s| serde_json::json!({ SERVICE_NAME_LABEL: s }));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": ns, "labels": labels},
            "addressType": family,
            "endpoints": [],
        }))
        .unwrap()
    }

    #[test]
    fn slices_group_by_namespace_and_service_label() {
        let all = [
            slice("a", Some("web"), "IPv4"),
            slice("a", Some("web"), "IPv6"),
            slice("b", Some("web"), "IPv4"),
            slice("a", None, "IPv4"),
        ];
        let v4 = by_service(&all, &["IPv4"]);
        assert_eq!(v4.len(), 2);
        assert_eq!(v4[&("a", "web")].len(), 1);
        let any = by_service(&all, &[]);
        assert_eq!(any[&("a", "web")].len(), 2);
    }
}
