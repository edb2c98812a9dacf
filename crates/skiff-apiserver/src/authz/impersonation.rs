//! Impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`,
//! `Impersonate-Extra-*` headers, as `kubectl --as` and `--as-group` send them): the
//! requester must be allowed the `impersonate` verb on each of `users` (or `serviceaccounts`
//! for a ServiceAccount's user name), `groups`, `uids` and `userextras/{key}`; the request
//! then goes on as the impersonated user, in `system:authenticated`.

use axum::http::HeaderMap;

use super::attributes::{Attributes, ResourceAttributes};
use crate::state::{AppState, Identity};
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether the request asks for impersonation.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

/// The identity a request acts as: the requester's own, or, when it asks to impersonate and
/// is allowed to, the impersonated one. A refusal is a 403 Forbidden naming what could not
/// be impersonated.
pub async fn acting_as(
    state: &AppState,
    requester: Identity,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    if !requested(headers) {
        return Ok(requester);
    }
    let text = |v: &axum::http::HeaderValue| v.to_str().map(str::to_string).ok();
    let user = headers.get(USER).and_then(text).unwrap_or_default();
    let groups: Vec<String> = headers.get_all(GROUP).iter().filter_map(text).collect();
    let uid = headers.get(UID).and_then(text);
    let mut extras: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA)
            && let Some(value) = text(value)
        {
            extras.push((key.to_string(), value));
        }
    }
    if user.is_empty() {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        ));
    }
    let mut checks: Vec<ResourceAttributes> = Vec::new();
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => checks.push(ResourceAttributes {
            resource: "serviceaccounts".into(),
            namespace: namespace.into(),
            name: name.into(),
            ..ResourceAttributes::default()
        }),
        None => checks.push(ResourceAttributes {
            resource: "users".into(),
            name: user.clone(),
            ..ResourceAttributes::default()
        }),
    }
    for group in &groups {
        checks.push(ResourceAttributes {
            resource: "groups".into(),
            name: group.clone(),
            ..ResourceAttributes::default()
        });
    }
    if let Some(uid) = &uid {
        checks.push(ResourceAttributes {
            group: "authentication.k8s.io".into(),
            version: "v1".into(),
            resource: "uids".into(),
            name: uid.clone(),
            ..ResourceAttributes::default()
        });
    }
    for (key, value) in &extras {
        checks.push(ResourceAttributes {
            group: "authentication.k8s.io".into(),
            version: "v1".into(),
            resource: "userextras".into(),
            subresource: key.clone(),
            name: value.clone(),
            ..ResourceAttributes::default()
        });
    }
    for check in checks {
        let attrs = Attributes::resource(&requester, "impersonate", check);
        super::authorize(state, &attrs).await?;
    }
    Ok(impersonated(&user, groups))
}

/// The impersonated identity: the groups asked for (a ServiceAccount's own groups when none
/// were), plus `system:authenticated` (`system:unauthenticated` for `system:anonymous`).
pub fn impersonated(user: &str, mut groups: Vec<String>) -> Identity {
    if groups.is_empty()
        && let Some((namespace, name)) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
    {
        groups = crate::serviceaccount::identity(namespace, name).groups;
    }
    let everyone = if user == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !groups.iter().any(|g| g == everyone) {
        groups.push(everyone.to_string());
    }
    Identity {
        username: user.to_string(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonated_users_get_the_groups_kube_gives_them() {
        assert_eq!(
            impersonated("system:serviceaccount:a:b", Vec::new()),
            crate::serviceaccount::identity("a", "b")
        );
        assert_eq!(
            impersonated("jane", vec!["devs".into()]).groups,
            vec!["devs".to_string(), "system:authenticated".to_string()]
        );
        assert_eq!(
            impersonated("system:anonymous", Vec::new()).groups,
            vec!["system:unauthenticated".to_string()]
        );
    }
}
