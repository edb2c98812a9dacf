//! Pod volumes, prepared on the host before the sandbox starts and bind-mounted into each
//! container per its `volumeMounts` (through the engine's `-v` binds): `emptyDir` (a directory
//! under `DATA/agent/pods/<uid>/volumes/<name>`, a tmpfs with `medium: Memory`), `hostPath`
//! (with the `type` checks), `configMap`, `secret`, `downwardAPI` and `projected` (those
//! three plus service account tokens from the TokenRequest API; files written with `items`,
//! modes and `optional`) and `persistentVolumeClaim` (the bound volume's path, [`claims`]).
//! Everything of a pod is unmounted and removed with the pod.
//!
//! API-data volumes are written as the kubelet's atomic writer does ([`atomic`]: a
//! timestamped directory, the `..data` symlink swapped to it, user-visible names linking
//! through `..data`) and rewritten by [`refresh`] when their sources change.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::Api;
use skiff_engine::record::BindMount;

use crate::container::{self, pod_ref};

pub mod atomic;
pub mod claims;
pub mod tokens;

/// Why a pod's volumes could not be set up (the `FailedMount` event's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError(pub String);

/// The host directory of a pod's volumes.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("agent").join("pods").join(uid)
}

/// A prepared volume: its host path and whether containers always see it read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The host path bound into containers.
    pub path: PathBuf,
    /// ConfigMap, Secret and downward API volumes are read-only in containers.
    pub read_only: bool,
}

/// What to do on the host for one volume (decided after the API reads, done while blocking).
#[derive(Debug)]
enum Plan {
    Dir(PathBuf),
    Tmpfs(PathBuf, Option<u64>),
    Host(PathBuf, String),
    Files(PathBuf, Files),
}

/// Sets up every volume of `pod` under `data_dir`; returns them by name.
pub async fn prepare(
    client: &kube::Client,
    data_dir: &Path,
    pod: &Pod,
) -> Result<BTreeMap<String, Prepared>, MountError> {
    let pref = pod_ref(pod);
    let base = pod_dir(data_dir, &pref.uid).join("volumes");
    let mut plans = Vec::new();
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = base.join(&v.name);
        let failed = |why: String| {
            MountError(format!(
                "MountVolume.SetUp failed for volume \"{}\" : {why}",
                v.name
            ))
        };
        if let Some(source) = &v.persistent_volume_claim {
            let (path, kind, read_only) = claims::resolve(client, data_dir, pod, source)
                .await
                .map_err(|why| MountError(claims::unmounted(&v.name, &why)))?;
            plans.push((v.name.clone(), Plan::Host(path.clone(), kind)));
            out.insert(v.name.clone(), Prepared { path, read_only });
            continue;
        }
        let (plan, read_only) = plan(client, pod, v, dir.clone()).await.map_err(failed)?;
        let path = match &plan {
            Plan::Host(p, _) => p.clone(),
            _ => dir,
        };
        plans.push((v.name.clone(), plan));
        out.insert(v.name.clone(), Prepared { path, read_only });
    }
    tokio::task::spawn_blocking(move || {
        for (name, plan) in plans {
            apply(plan).map_err(|why| {
                MountError(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : {why}"
                ))
            })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| MountError(e.to_string()))??;
    Ok(out)
}

async fn plan(
    client: &kube::Client,
    pod: &Pod,
    v: &Volume,
    dir: PathBuf,
) -> Result<(Plan, bool), String> {
    if let Some(e) = &v.empty_dir {
        if e.medium.as_deref() == Some("Memory") {
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| crate::quantity::bytes(&q.0));
            return Ok((Plan::Tmpfs(dir, size), false));
        }
        return Ok((Plan::Dir(dir), false));
    }
    if let Some(h) = &v.host_path {
        let kind = h.type_.clone().unwrap_or_default();
        return Ok((Plan::Host(PathBuf::from(&h.path), kind), false));
    }
    match files_of(client, pod, v).await? {
        Some(files) => Ok((Plan::Files(dir, files), true)),
        None => Err("unsupported volume type".into()),
    }
}

/// The files of a volume made of API data (configMap, secret, downwardAPI, projected);
/// `None` for other kinds of volume.
async fn files_of(client: &kube::Client, pod: &Pod, v: &Volume) -> Result<Option<Files>, String> {
    if let Some(c) = &v.config_map {
        let mode = mode_of(c.default_mode);
        return config_map_files(client, pod, &c.name, c.items.as_deref(), mode, c.optional)
            .await
            .map(Some);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = mode_of(s.default_mode);
        return secret_files(client, pod, &name, s.items.as_deref(), mode, s.optional)
            .await
            .map(Some);
    }
    if let Some(d) = &v.downward_api {
        let mode = mode_of(d.default_mode);
        return downward_files(pod, d.items.as_deref().unwrap_or_default(), mode).map(Some);
    }
    if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode);
        let mut files = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                files.extend(
                    config_map_files(client, pod, &c.name, c.items.as_deref(), mode, c.optional)
                        .await?,
                );
            }
            if let Some(s) = &source.secret {
                files.extend(
                    secret_files(client, pod, &s.name, s.items.as_deref(), mode, s.optional)
                        .await?,
                );
            }
            if let Some(d) = &source.downward_api {
                files.extend(downward_files(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                )?);
            }
            if let Some(t) = &source.service_account_token {
                check_relative(&t.path)?;
                let token = tokens::token(
                    client,
                    pod,
                    &v.name,
                    t.audience.as_deref().unwrap_or_default(),
                    t.expiration_seconds.unwrap_or(tokens::DEFAULT_EXPIRATION),
                )
                .await?;
                files.push((t.path.clone(), token.into_bytes(), mode));
            }
            if source.cluster_trust_bundle.is_some() {
                return Err("clusterTrustBundle projections are not supported".into());
            }
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// A volume's files: relative path, content, mode.
type Files = Vec<(String, Vec<u8>, u32)>;

async fn config_map_files(
    client: &kube::Client,
    pod: &Pod,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
) -> Result<Files, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &pod_ref(pod).namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            project(&data, items, mode, optional, "configmap")
        }
        None if optional.unwrap_or(false) => Ok(Vec::new()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

async fn secret_files(
    client: &kube::Client,
    pod: &Pod,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
) -> Result<Files, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &pod_ref(pod).namespace);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(secret) => {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            data.extend(
                secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            project(&data, items, mode, optional, "secret")
        }
        None if optional.unwrap_or(false) => Ok(Vec::new()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32) -> Result<Files, String> {
    let mut files = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            downward_field(pod, &f.field_path)
                .ok_or_else(|| format!("unsupported fieldRef {}", f.field_path))?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.clone().unwrap_or_default();
            let wanted = r.container_name.clone().unwrap_or_default();
            let c = spec
                .containers
                .iter()
                .find(|c| c.name == wanted)
                .or(spec.containers.first())
                .ok_or("the pod has no containers")?;
            container::resource_value(c, &r.resource)
                .ok_or_else(|| format!("unsupported resourceFieldRef {}", r.resource))?
        } else {
            String::new()
        };
        check_relative(&item.path)?;
        files.push((
            item.path.clone(),
            value.into_bytes(),
            item.mode.map_or(mode, |m| mode_of(Some(m))),
        ));
    }
    Ok(files)
}

/// How often [`refresh`] runs for a running pod (the kubelet's sync period is a minute; a
/// shorter one makes ConfigMap edits show up sooner).
pub const REFRESH_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Rewrites the files of `pod`'s configMap, secret, downwardAPI and projected volumes when
/// their sources changed (and service account tokens near the end of their life), through
/// the same atomic `..data` swap, as the kubelet does on its periodic sync. A volume whose
/// source cannot be read now keeps its files. Containers see the change at once, except
/// through `subPath` mounts (bound to the file of the time).
pub async fn refresh(client: &kube::Client, data_dir: &Path, pod: &Pod) {
    let pref = pod_ref(pod);
    let base = pod_dir(data_dir, &pref.uid).join("volumes");
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let files = match files_of(client, pod, v).await {
            Ok(Some(files)) => files,
            Ok(None) => continue,
            Err(why) => {
                tracing::debug!(pod = %pref.name, volume = %v.name, %why, "volume not refreshed");
                continue;
            }
        };
        let dir = base.join(&v.name);
        let name = v.name.clone();
        let written = tokio::task::spawn_blocking(move || atomic::write(&dir, &files)).await;
        match written {
            Ok(Ok(true)) => {
                tracing::info!(pod = %pref.name, volume = %name, "volume files updated")
            }
            Ok(Ok(false)) => {}
            Ok(Err(why)) => {
                tracing::warn!(pod = %pref.name, volume = %name, %why, "volume update failed")
            }
            Err(err) => tracing::warn!(error = %err, "volume update task failed"),
        }
    }
}

fn mode_of(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644) & 0o7777
}

/// The files of a ConfigMap or Secret volume: every key, or the listed `items`.
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
    what: &str,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let Some(items) = items else {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode))
            .collect());
    };
    let mut out = Vec::new();
    for item in items {
        check_relative(&item.path)?;
        match data.get(&item.key) {
            Some(v) => out.push((
                item.path.clone(),
                v.clone(),
                item.mode.map_or(mode, |m| mode_of(Some(m))),
            )),
            None if optional.unwrap_or(false) => {}
            None => {
                return Err(format!(
                    "{what} references non-existent config key: {}",
                    item.key
                ));
            }
        }
    }
    Ok(out)
}

/// A downward API file's content: single fields as `field_value` gives them, whole label and
/// annotation maps as `key="value"` lines.
fn downward_field(pod: &Pod, path: &str) -> Option<String> {
    let map = match path {
        "metadata.labels" => &pod.metadata.labels,
        "metadata.annotations" => &pod.metadata.annotations,
        _ => return container::field_value(pod, path, "", ""),
    };
    Some(
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Refuses absolute paths and `..` in a volume's relative path.
fn check_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!(
            "invalid path {path:?}: must be relative without '..'"
        ));
    }
    Ok(())
}

fn apply(plan: Plan) -> Result<(), String> {
    let io = |what: &str, p: &Path| {
        let what = what.to_string();
        let p = p.display().to_string();
        move |e: std::io::Error| format!("{what} {p}: {e}")
    };
    match plan {
        Plan::Dir(dir) => {
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io("chmod", &dir))
        }
        Plan::Tmpfs(dir, size) => {
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            if is_mount_point(&dir) {
                return Ok(());
            }
            let mut options = "mode=0777".to_string();
            if let Some(size) = size {
                options.push_str(&format!(",size={size}"));
            }
            nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))
        }
        Plan::Host(path, kind) => host_path(&path, &kind),
        Plan::Files(dir, files) => atomic::write(&dir, &files).map(|_| ()),
    }
}

/// The `hostPath` type checks (and creations) of the kubelet.
fn host_path(path: &Path, kind: &str) -> Result<(), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {shown} is not a {what}"
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(|e| format!("create {shown}: {e}"))?;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
            }
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => fail("directory"),
            }
        }
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("create {shown}: {e}"))?;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
            }
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(()),
                _ => fail("file"),
            }
        }
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

fn is_mount_point(dir: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    me.dev() != parent.dev()
}

/// The engine binds of `container`'s `volumeMounts` (`subPath` directories are created).
pub fn binds(
    container: &Container,
    volumes: &BTreeMap<String, Prepared>,
) -> Result<Vec<BindMount>, String> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&m.name)
            .ok_or_else(|| format!("volume {:?} not found", m.name))?;
        let mut source = v.path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            check_relative(sub).map_err(|e| format!("subPath: {e}"))?;
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(|e| format!("create subPath {}: {e}", source.display()))?;
            }
        }
        out.push(BindMount {
            source: source.display().to_string(),
            destination: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false) || v.read_only,
        });
    }
    Ok(out)
}

/// Unmounts and removes everything of pod `uid` (blocking); a directory already gone is
/// fine. A volume that cannot be unmounted is logged and then fails the removal.
pub fn cleanup(data_dir: &Path, uid: &str) -> std::io::Result<()> {
    tokens::forget(uid);
    let dir = pod_dir(data_dir, uid);
    if let Ok(entries) = std::fs::read_dir(dir.join("volumes")) {
        for e in entries.flatten() {
            let path = e.path();
            if is_mount_point(&path)
                && let Err(err) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
            {
                tracing::warn!(path = %path.display(), error = %err, "cannot unmount a pod volume");
            }
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_project_keys_and_refuse_missing_ones() {
        let data = BTreeMap::from([("a".to_string(), b"1".to_vec())]);
        let items = [KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: Some(0o600),
        }];
        let files = project(&data, Some(&items), 0o644, None, "configmap").unwrap();
        assert_eq!(files, vec![("sub/x".to_string(), b"1".to_vec(), 0o600)]);
        let missing = [KeyToPath {
            key: "b".into(),
            path: "y".into(),
            mode: None,
        }];
        assert!(project(&data, Some(&missing), 0o644, None, "configmap").is_err());
        assert!(
            project(&data, Some(&missing), 0o644, Some(true), "configmap")
                .unwrap()
                .is_empty()
        );
        assert!(check_relative("../x").is_err());
        assert!(check_relative("/x").is_err());
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        assert!(host_path(&f, "File").is_err());
        host_path(&f, "FileOrCreate").unwrap();
        assert!(f.is_file());
        assert!(host_path(&f, "Directory").is_err());
        let d = dir.path().join("d/e");
        host_path(&d, "DirectoryOrCreate").unwrap();
        host_path(&d, "Directory").unwrap();
        assert!(host_path(&d, "Socket").is_err());
    }
}
