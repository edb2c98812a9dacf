//! Security contexts (the pod's, overridden field by field by the container's) as the engine's
//! create settings, the way the kubelet hands them to its runtime:
//!
//! - `runAsUser`/`runAsGroup` become the user (the image's user keeps its uid when only the
//!   group is given); `supplementalGroups` and `fsGroup` become supplementary groups;
//! - `runAsNonRoot` refuses a container whose uid would be 0, by `runAsUser` or by the
//!   image's `USER` (a non-numeric image user cannot be verified and is refused too), with
//!   the kubelet's `CreateContainerConfigError` messages;
//! - `readOnlyRootFilesystem`, `capabilities.add`/`drop` (with or without `CAP_`),
//!   `privileged` (all capabilities and devices, no seccomp, no masked paths),
//!   `allowPrivilegeEscalation: false` (`no_new_privs`);
//! - `seccompProfile`: `RuntimeDefault` is the engine's default profile, `Unconfined` none,
//!   `Localhost` a JSON profile under the agent's seccomp root (`DATA/agent/seccomp/`, the
//!   kubelet's `/var/lib/kubelet/seccomp`); no profile is `Unconfined`, the kubelet's default
//!   while its `SeccompDefault` feature is off;
//! - `fsGroup` also gives the pod's emptyDir, configMap, secret, downwardAPI and projected
//!   volume directories to that group (setgid directories, group-writable for emptyDir).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};
use skiff_engine::CreateRequest;

use crate::container::pod_ref;
use crate::volumes::Prepared;

/// Why a container's security settings cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The settings contradict the image or each other: the kubelet's
    /// `CreateContainerConfigError`.
    #[error("{0}")]
    Config(String),
    /// The runtime could not be given what was asked (a missing seccomp profile): the
    /// kubelet's `CreateContainerError`.
    #[error("{0}")]
    Create(String),
}

impl SecurityError {
    /// The container's waiting reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SecurityError::Config(_) => "CreateContainerConfigError",
            SecurityError::Create(_) => "CreateContainerError",
        }
    }
}

/// The directory holding `Localhost` seccomp profiles under the agent's data directory.
pub fn seccomp_root(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("seccomp")
}

fn pod_context(pod: &Pod) -> Option<&PodSecurityContext> {
    pod.spec.as_ref().and_then(|s| s.security_context.as_ref())
}

/// The uid of a `USER` string (`uid[:gid]` or `name[:group]`): `Ok(None)` for a name.
fn numeric_uid(user: &str) -> Option<i64> {
    let uid = user.split(':').next().unwrap_or_default();
    if uid.is_empty() {
        return Some(0);
    }
    uid.parse().ok()
}

/// The kubelet's `format.Pod`: `NAME_NAMESPACE(UID)`.
fn pod_name(pod: &Pod) -> String {
    let p = pod_ref(pod);
    format!("{}_{}({})", p.name, p.namespace, p.uid)
}

/// Applies the security context of `container` of `pod` to `request`; `image_user` is the
/// image's `USER` (empty: root), `seccomp_root` where `Localhost` profiles live.
pub fn apply(
    pod: &Pod,
    container: &Container,
    image_user: &str,
    seccomp_root: &Path,
    request: &mut CreateRequest,
) -> Result<(), SecurityError> {
    let pod_ctx = pod_context(pod);
    let ctx: Option<&SecurityContext> = container.security_context.as_ref();
    let run_as_user = ctx
        .and_then(|c| c.run_as_user)
        .or(pod_ctx.and_then(|c| c.run_as_user));
    let run_as_group = ctx
        .and_then(|c| c.run_as_group)
        .or(pod_ctx.and_then(|c| c.run_as_group));
    let non_root = ctx
        .and_then(|c| c.run_as_non_root)
        .or(pod_ctx.and_then(|c| c.run_as_non_root))
        .unwrap_or(false);
    if non_root {
        match run_as_user {
            Some(0) => {
                return Err(SecurityError::Config(format!(
                    "container's runAsUser breaks non-root policy (pod: \"{}\", container: {})",
                    pod_name(pod),
                    container.name
                )));
            }
            Some(_) => {}
            None => match numeric_uid(image_user) {
                Some(0) => {
                    return Err(SecurityError::Config(format!(
                        "container has runAsNonRoot and image will run as root (pod: \"{}\", container: {})",
                        pod_name(pod),
                        container.name
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(SecurityError::Config(format!(
                        "container has runAsNonRoot and image has non-numeric user ({image_user}), cannot verify user is non-root (pod: \"{}\", container: {})",
                        pod_name(pod),
                        container.name
                    )));
                }
            },
        }
    }
    request.user = match (run_as_user, run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => {
            let image_uid = image_user.split(':').next().unwrap_or_default();
            let uid = if image_uid.is_empty() { "0" } else { image_uid };
            Some(format!("{uid}:{g}"))
        }
        (None, None) => request.user.take(),
    };
    let mut groups: Vec<u32> = Vec::new();
    let extra = pod_ctx
        .and_then(|c| c.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(pod_ctx.and_then(|c| c.fs_group));
    for g in extra {
        if let Ok(g) = u32::try_from(g)
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    request.group_add = groups;
    let privileged = ctx.and_then(|c| c.privileged).unwrap_or(false);
    request.privileged = privileged;
    request.read_only = ctx
        .and_then(|c| c.read_only_root_filesystem)
        .unwrap_or(false);
    if let Some(caps) = ctx.and_then(|c| c.capabilities.as_ref()) {
        request.cap_add = caps.add.clone().unwrap_or_default();
        request.cap_drop = caps.drop.clone().unwrap_or_default();
    }
    let mut opts = Vec::new();
    if ctx.and_then(|c| c.allow_privilege_escalation) == Some(false) {
        opts.push("no-new-privileges".to_string());
    }
    let profile: Option<&SeccompProfile> = ctx
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(pod_ctx.and_then(|c| c.seccomp_profile.as_ref()));
    if !privileged {
        opts.extend(seccomp_option(profile, seccomp_root)?);
    }
    request.security_opt = opts;
    Ok(())
}

/// The engine's `seccomp=` option for a profile (none for `RuntimeDefault`: the engine's
/// default profile applies).
fn seccomp_option(
    profile: Option<&SeccompProfile>,
    seccomp_root: &Path,
) -> Result<Option<String>, SecurityError> {
    let Some(profile) = profile else {
        return Ok(Some("seccomp=unconfined".into()));
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(None),
        "Unconfined" => Ok(Some("seccomp=unconfined".into())),
        "Localhost" => {
            let relative = profile.localhost_profile.clone().unwrap_or_default();
            if relative.is_empty() {
                return Err(SecurityError::Config(
                    "localhostProfile must be set when seccomp profile type is Localhost".into(),
                ));
            }
            let path = seccomp_root.join(relative.trim_start_matches('/'));
            if !path.is_file() {
                return Err(SecurityError::Create(format!(
                    "failed to create containerd container: cannot load seccomp profile \"{}\": open {}: no such file or directory",
                    path.display(),
                    path.display()
                )));
            }
            Ok(Some(format!("seccomp={}", path.display())))
        }
        other => Err(SecurityError::Config(format!(
            "unsupported seccomp profile type {other:?}"
        ))),
    }
}

/// The image's `USER` (empty when it sets none or cannot be read).
pub fn image_user(engine: &skiff_engine::Engine, image: &str) -> String {
    engine
        .images()
        .ok()
        .and_then(|store| store.resolve(image).ok())
        .and_then(|i| i.config.config.and_then(|c| c.user))
        .unwrap_or_default()
}

/// Gives the pod's writable and API-data volume directories to its `fsGroup` (a no-op
/// without one). Failures are logged: the container still starts, as the kubelet's
/// ownership errors are only logged too.
pub fn own_volumes(pod: &Pod, prepared: &BTreeMap<String, Prepared>) {
    let Some(gid) = pod_context(pod)
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    else {
        return;
    };
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let writable = volume.empty_dir.is_some();
        let api_data = volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.downward_api.is_some()
            || volume.projected.is_some();
        if !writable && !api_data {
            continue;
        }
        let Some(p) = prepared.get(&volume.name) else {
            continue;
        };
        if let Err(err) = own_tree(&p.path, gid, writable) {
            tracing::warn!(volume = %volume.name, error = %err, "cannot apply fsGroup to the volume");
        }
    }
}

/// `chown :gid` over a tree (links not followed), directories setgid and group-accessible,
/// files group-readable (and writable when `writable`).
fn own_tree(root: &Path, gid: u32, writable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, None, Some(gid))?;
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
            mode | 0o2050 | if writable { 0o020 } else { 0 }
        } else {
            mode | 0o040 | if writable { 0o020 } else { 0 }
        };
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn applied(p: &Pod, image_user: &str) -> Result<CreateRequest, SecurityError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut r = CreateRequest::default();
        apply(p, c, image_user, Path::new("/nonexistent"), &mut r)?;
        Ok(r)
    }

    #[test]
    fn the_container_wins_over_the_pod() {
        let p = pod(serde_json::json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "supplementalGroups": [3000], "fsGroup": 4000,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"runAsUser": 1001, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}],
        }));
        let r = applied(&p, "").unwrap();
        assert_eq!(r.user.as_deref(), Some("1001:2000"));
        assert_eq!(r.group_add, vec![3000, 4000]);
        assert!(r.read_only);
        assert_eq!(r.cap_add, vec!["NET_ADMIN"]);
        assert_eq!(r.cap_drop, vec!["ALL"]);
        assert_eq!(r.security_opt, vec!["no-new-privileges"]);
    }

    #[test]
    fn run_as_non_root_checks_the_image_user() {
        let p = pod(serde_json::json!({
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c"}],
        }));
        let err = applied(&p, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_ns(u1)\", container: c)"
        );
        assert_eq!(err.reason(), "CreateContainerConfigError");
        assert!(applied(&p, "1000:1000").is_ok());
        assert!(
            applied(&p, "nobody")
                .unwrap_err()
                .to_string()
                .contains("non-numeric")
        );
    }

    #[test]
    fn seccomp_defaults_to_unconfined_and_localhost_must_exist() {
        let p = pod(serde_json::json!({"containers": [{"name": "c"}]}));
        assert_eq!(
            applied(&p, "").unwrap().security_opt,
            vec!["seccomp=unconfined"]
        );
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "securityContext": {
            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}]}),
        );
        let err = applied(&p, "").unwrap_err();
        assert_eq!(err.reason(), "CreateContainerError");
        assert!(err.to_string().contains("/nonexistent/p.json"), "{err}");
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "securityContext": {"privileged": true}}]}),
        );
        let r = applied(&p, "").unwrap();
        assert!(r.privileged);
        assert!(r.security_opt.is_empty());
    }

    #[test]
    fn fs_group_owns_the_volume_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"x").unwrap();
        own_tree(dir.path(), 4321, true).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join("sub/f")).unwrap();
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o060, 0o060);
        let meta = std::fs::metadata(dir.path().join("sub")).unwrap();
        assert_eq!(meta.mode() & 0o2000, 0o2000);
    }
}
