//! `commit`: a container's writable layer as a new image, Docker's way. The new image's
//! runtime defaults are the container's (its command, entrypoint, environment, working
//! directory, user), then the `--change` instructions; the layer is the upper directory
//! without the container's mount points (volumes, tmpfs, the kernel file systems and the
//! bind-mounted `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`). A running container is
//! frozen (the runtime's `pause`) while its upper directory is read, and thawed after.

use std::path::PathBuf;

use skiff_image::{CommitRequest, Committed, ContainerConfig, Reference};

use crate::engine::{Container, Engine};
use crate::record::Status;
use crate::{EngineError, Result};

/// Mount points every container has (the runtime's defaults and the engine's host files).
const STANDARD_MOUNT_POINTS: [&str; 9] = [
    "/proc",
    "/sys",
    "/dev",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// What `commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `REPOSITORY[:TAG]`; none makes a dangling image.
    pub reference: Option<String>,
    /// `-m`: the commit message.
    pub message: Option<String>,
    /// `-a`: the author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the new image's config.
    pub changes: Vec<String>,
    /// `--pause`: freeze a running container while its layer is read.
    pub pause: bool,
}

/// What a commit made.
#[derive(Debug, Clone)]
pub struct CommitOutcome {
    /// The new image.
    pub committed: Committed,
    /// Why a running container could not be frozen (it was committed while it ran).
    pub pause_failed: Option<String>,
}

impl Engine {
    /// Commits the container's writable layer as a new image.
    pub fn commit(&self, container: &Container, options: &CommitOptions) -> Result<CommitOutcome> {
        let reference = options
            .reference
            .as_deref()
            .map(|name| {
                let reference = Reference::parse(name).map_err(skiff_image::ImageError::from)?;
                if reference.digest.is_some() {
                    return Err(EngineError::InvalidArgument(format!(
                        "invalid reference format {name:?}: a commit is named by a tag, not a digest"
                    )));
                }
                Ok(reference)
            })
            .transpose()?;
        let images = self.images()?;
        let parent = images.resolve(&container.config.image_id).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "the image of container {} ({}) is gone: {e}",
                container.config.name, container.config.image_id
            ))
        })?;
        let mut runtime = runtime_config(container, parent.config.config.clone());
        for change in &options.changes {
            skiff_image::commit::apply_change(&mut runtime, change)?;
        }
        let request = CommitRequest {
            reference,
            container_config: Some(runtime),
            created: crate::time::now_rfc3339(),
            author: options.author.clone().filter(|a| !a.is_empty()),
            comment: options.message.clone().filter(|m| !m.is_empty()),
            created_by: container.config.cmd.join(" "),
            exclude: self.mount_points(container),
        };
        let upper = self.dir(container.id()).upper();
        let store = self.runtime();
        let id = container.id();
        let mut pause_failed = None;
        let mut paused = false;
        if options.pause && container.status() == Status::Running {
            match skiff_runtime::container::pause(&store, id) {
                Ok(()) => paused = true,
                Err(e) => pause_failed = Some(e.to_string()),
            }
        }
        let committed = images.commit(&parent, &upper, &request);
        if paused {
            skiff_runtime::container::resume(&store, id)?;
        }
        Ok(CommitOutcome {
            committed: committed?,
            pause_failed,
        })
    }

    /// Every mount point of the container: the standard ones, its volumes and tmpfs, and
    /// whatever else its bundle mounts.
    fn mount_points(&self, container: &Container) -> Vec<PathBuf> {
        let mut points: Vec<PathBuf> = STANDARD_MOUNT_POINTS.iter().map(PathBuf::from).collect();
        points.extend(
            container
                .config
                .binds
                .iter()
                .map(|b| b.destination.clone().into()),
        );
        points.extend(
            container
                .config
                .volumes
                .iter()
                .map(|v| v.destination.clone().into()),
        );
        points.extend(
            container
                .config
                .tmpfs
                .iter()
                .map(|t| t.destination.clone().into()),
        );
        let spec = self.dir(container.id()).bundle().join("config.json");
        if let Ok(text) = std::fs::read_to_string(&spec) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                let mounts = value["mounts"].as_array().cloned().unwrap_or_default();
                points.extend(
                    mounts
                        .iter()
                        .filter_map(|m| m["destination"].as_str())
                        .map(PathBuf::from),
                );
            }
        }
        points.sort();
        points.dedup();
        points
    }
}

/// The container's runtime defaults over the parent image's (Docker's commit keeps what the
/// container ran with).
fn runtime_config(container: &Container, parent: Option<ContainerConfig>) -> ContainerConfig {
    let config = &container.config;
    let mut out = parent.unwrap_or_default();
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    out.cmd = some(&config.cmd);
    out.entrypoint = some(&config.entrypoint);
    out.env = some(&config.env).or(out.env);
    out.working_dir = (!config.working_dir.is_empty())
        .then(|| config.working_dir.clone())
        .or(out.working_dir);
    out.user = (!config.user.is_empty())
        .then(|| config.user.clone())
        .or(out.user);
    out
}
