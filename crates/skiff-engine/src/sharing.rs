//! What a new container takes from other containers and from its image, checked before its
//! record is written: `--volumes-from NAME[:ro|:rw]` (the other container's bind mounts and
//! volumes; a mount point the request mounts itself wins), `--network|--pid|--ipc
//! container:NAME` (the other container must run; a network join takes its UTS namespace
//! along, so the hostname is the owner's), the image's `VOLUME` paths (anonymous volumes where
//! nothing else is mounted), and Docker's refusal of two mounts at one path.

use crate::engine::{CreateRequest, Engine};
use crate::record::{BindMount, ContainerJoin, Status, TmpfsMount, VolumeMount, VolumeRequest};
use crate::{EngineError, Result};

impl Engine {
    /// The containers of `--network|--pid|--ipc container:NAME`, by full id; each must run.
    pub(crate) fn resolve_joins(&self, joins: &[ContainerJoin]) -> Result<Vec<ContainerJoin>> {
        let mut out = Vec::new();
        for join in joins {
            let other = self.find(&join.container)?;
            if other.status() != Status::Running {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot join {} of a non running container: {} (start it first)",
                    namespace_title(&join.kind),
                    join.container
                )));
            }
            out.push(ContainerJoin {
                kind: join.kind.clone(),
                container: other.config.id.clone(),
            });
            if join.kind == "network" {
                // The network's owner names it: its hostname comes along.
                out.push(ContainerJoin {
                    kind: "uts".into(),
                    container: other.config.id.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The request's bind mounts plus those of `--volumes-from` containers, and the volumes
    /// of those containers; a mount point the request mounts itself is not inherited.
    pub(crate) fn volumes_from(
        &self,
        request: &CreateRequest,
    ) -> Result<(Vec<BindMount>, Vec<VolumeMount>)> {
        let mut binds = request.binds.clone();
        let mut volumes: Vec<VolumeMount> = Vec::new();
        let own = |dest: &str| {
            request.binds.iter().any(|b| b.destination == dest)
                || request.volumes.iter().any(|v| v.destination == dest)
                || request.tmpfs.iter().any(|t| t.destination == dest)
        };
        for spec in &request.volumes_from {
            let (name, mode) = match spec.rsplit_once(':') {
                Some((name, mode @ ("ro" | "rw"))) => (name, Some(mode == "ro")),
                Some((_, mode)) => {
                    return Err(EngineError::InvalidArgument(format!(
                        "invalid --volumes-from {spec:?}: unknown mode {mode:?} (ro or rw)"
                    )));
                }
                None => (spec.as_str(), None),
            };
            let other = self.find(name)?;
            for bind in &other.config.binds {
                if own(&bind.destination) || binds.iter().any(|b| b.destination == bind.destination)
                {
                    continue;
                }
                let mut bind = bind.clone();
                bind.read_only = mode.unwrap_or(bind.read_only);
                binds.push(bind);
            }
            for volume in &other.config.volumes {
                if own(&volume.destination)
                    || volumes.iter().any(|v| v.destination == volume.destination)
                {
                    continue;
                }
                let mut volume = volume.clone();
                volume.read_only = mode.unwrap_or(volume.read_only);
                // It belongs to the other container: this one's removal leaves it.
                volume.anonymous = false;
                volumes.push(volume);
            }
        }
        Ok((binds, volumes))
    }
}

/// Anonymous volume requests for the image's `VOLUME` paths that no other mount covers.
pub(crate) fn image_volumes<'a>(
    image_paths: impl Iterator<Item = &'a String>,
    binds: &[BindMount],
    volumes: &[VolumeRequest],
    inherited: &[VolumeMount],
    tmpfs: &[TmpfsMount],
) -> Vec<VolumeRequest> {
    let taken: std::collections::BTreeSet<&str> = binds
        .iter()
        .map(|b| normal(&b.destination))
        .chain(volumes.iter().map(|v| normal(&v.destination)))
        .chain(inherited.iter().map(|v| normal(&v.destination)))
        .chain(tmpfs.iter().map(|t| normal(&t.destination)))
        .collect();
    image_paths
        .filter(|path| path.starts_with('/') && !taken.contains(normal(path)))
        .map(|path| VolumeRequest {
            name: None,
            destination: path.clone(),
            read_only: false,
            no_copy: false,
        })
        .collect()
}

/// A container path without trailing slashes (`/data/` is `/data`).
fn normal(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Docker's word for a namespace kind in its "cannot join" message.
fn namespace_title(kind: &str) -> &str {
    match kind {
        "network" => "network",
        "pid" => "PID",
        "ipc" => "IPC",
        other => other,
    }
}

/// Refuses two mounts at one container path, as Docker does.
pub(crate) fn check_mount_points(
    binds: &[BindMount],
    volumes: &[VolumeRequest],
    inherited: &[VolumeMount],
    tmpfs: &[TmpfsMount],
) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let points = binds
        .iter()
        .map(|b| &b.destination)
        .chain(volumes.iter().map(|v| &v.destination))
        .chain(inherited.iter().map(|v| &v.destination))
        .chain(tmpfs.iter().map(|t| &t.destination));
    for point in points {
        let normal = point.trim_end_matches('/');
        if !seen.insert(normal.to_string()) {
            return Err(EngineError::InvalidArgument(format!(
                "Duplicate mount point: {point}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(destination: &str) -> VolumeRequest {
        VolumeRequest {
            name: None,
            destination: destination.into(),
            read_only: false,
            no_copy: false,
        }
    }

    #[test]
    fn image_volumes_fill_only_free_paths_and_duplicates_are_refused() {
        let binds = vec![BindMount {
            source: "/srv".into(),
            destination: "/data/".into(),
            read_only: false,
        }];
        let paths = ["/data".to_string(), "/cache".to_string(), "rel".to_string()];
        let made = image_volumes(paths.iter(), &binds, &[], &[], &[]);
        assert_eq!(made, vec![volume("/cache")]);
        assert!(check_mount_points(&binds, &made, &[], &[]).is_ok());
        let err = check_mount_points(&binds, &[volume("/data")], &[], &[]).unwrap_err();
        assert_eq!(err.to_string(), "Duplicate mount point: /data");
    }
}
