//! The options `skiff run` and `skiff create` share (Docker's container flags) and the
//! engine request they make, and the pull of a missing image both do first.

use clap::Args;
use skiff_engine::record::{
    ContainerJoin, MountFlag, NetworkMode, Resources, RestartPolicy, TmpfsMount,
};
use skiff_engine::{CreateRequest, Engine, EngineError};

use super::EngineRoot;

/// The options `run` and `create` share: what the container is made of.
#[derive(Debug, Args)]
pub struct ContainerOptions {
    #[command(flatten)]
    pub root: EngineRoot,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Name the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Set a label on the container (KEY=VALUE, or KEY for an empty value).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// User: name|uid[:group|gid].
    #[arg(short, long)]
    user: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Mount a host directory (/HOST:/CONTAINER[:ro]), a named volume (NAME:/CONTAINER[:ro],
    /// made if missing) or a new anonymous volume (/CONTAINER).
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount the volumes and host directories of another container: NAME[:ro|:rw].
    #[arg(long)]
    volumes_from: Vec<String>,
    /// Mount a tmpfs: /PATH[:OPTIONS].
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Process limit.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Keep the host's /proc/meminfo, cpuinfo, stat, uptime and loadavg (and CPU affinity)
    /// instead of the container's own figures.
    #[arg(long)]
    no_procfs: bool,
    /// Add a capability.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Security options: no-new-privileges, seccomp=unconfined, seccomp=PROFILE.json.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Every capability and host device, no seccomp, no masked paths.
    #[arg(long)]
    privileged: bool,
    /// Add a supplementary group (numeric id).
    #[arg(long)]
    group_add: Vec<u32>,
    /// Network: none (the default until pod networking exists), host, or container:NAME
    /// (another running container's network and hostname).
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// PID namespace: container:NAME shares another running container's processes.
    #[arg(long)]
    pid: Option<String>,
    /// IPC namespace: container:NAME shares another running container's IPC objects.
    #[arg(long)]
    ipc: Option<String>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Keep stdin open (attached here with `run` unless -d; `start -ai`, `skiff attach` later).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal (raw mode here with -it; the detach keys detach).
    #[arg(short, long)]
    pub tty: bool,
    /// The image.
    pub image: String,
    /// The command and its arguments (the image's default if none).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parses Docker's byte sizes: `64m`, `1g`, `512k`, `1024b`, `1024`.
pub fn parse_bytes(text: &str) -> Result<i64, EngineError> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    digits
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .map(|n| (n * scale as f64) as i64)
        .ok_or_else(|| EngineError::InvalidArgument(format!("invalid size: {text:?}")))
}

impl ContainerOptions {
    /// The engine's request; `detach` when no client stays attached from the start (`run -d`,
    /// `create`), so an open stdin is not closed when the first client lets go of it.
    pub fn request(&self, detach: bool) -> Result<CreateRequest, EngineError> {
        let mut join_containers = Vec::new();
        let network = match self.network.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => match container_mode("--network", other)? {
                Some(container) => {
                    join_containers.push(ContainerJoin {
                        kind: "network".into(),
                        container,
                    });
                    NetworkMode::None
                }
                None => {
                    return Err(EngineError::InvalidArgument(format!(
                        "network {other} not found (none, host and container:NAME exist until pod networking lands)"
                    )));
                }
            },
        };
        if !join_containers.is_empty() && self.hostname.is_some() {
            return Err(EngineError::InvalidArgument(
                "conflicting options: hostname and the network mode (a container:NAME network has that container's hostname)".into(),
            ));
        }
        for (flag, kind, value) in [("--pid", "pid", &self.pid), ("--ipc", "ipc", &self.ipc)] {
            let Some(value) = value else { continue };
            match container_mode(flag, value)? {
                Some(container) => join_containers.push(ContainerJoin {
                    kind: kind.into(),
                    container,
                }),
                None => {
                    return Err(EngineError::InvalidArgument(format!(
                        "invalid {flag} {value:?}: only container:NAME is supported"
                    )));
                }
            }
        }
        let mut binds = Vec::new();
        let mut volumes = Vec::new();
        for flag in &self.volume {
            match MountFlag::parse(flag)? {
                MountFlag::Bind(bind) => binds.push(bind),
                MountFlag::Volume(volume) => volumes.push(volume),
            }
        }
        let restart = RestartPolicy::parse(&self.restart)?;
        if self.rm && restart != RestartPolicy::No {
            return Err(EngineError::InvalidArgument(
                "conflicting options: cannot specify both --restart and --rm".into(),
            ));
        }
        let memory = self.memory.as_deref().map(parse_bytes).transpose()?;
        if memory.is_some_and(|m| m > 0 && m < 6 << 20) {
            return Err(EngineError::InvalidArgument(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
        Ok(CreateRequest {
            image: self.image.clone(),
            name: self.name.clone(),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            binds,
            volumes,
            volumes_from: self.volumes_from.clone(),
            image_volumes: true,
            join_containers,
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| TmpfsMount::parse(t))
                .collect::<Result<_, _>>()?,
            read_only: self.read_only,
            resources: Resources {
                memory: memory.unwrap_or(0),
                nano_cpus: self.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                cpu_shares: self.cpu_shares.unwrap_or(0),
                pids_limit: self.pids_limit.unwrap_or(0),
            },
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            security_opt: self.security_opt.clone(),
            privileged: self.privileged,
            group_add: self.group_add.clone(),
            network,
            restart,
            auto_remove: self.rm,
            stdin: self.interactive,
            // Docker closes an attached stdin when its client lets go of it, but never a
            // terminal's: a detached `-it` container keeps reading its terminal.
            stdin_once: self.interactive && !detach && !self.tty,
            tty: self.tty,
            no_procfs: self.no_procfs,
            quota_cpuset: true,
            labels: super::volume::parse_labels(&self.label),
            ..CreateRequest::default()
        })
    }
}

/// The NAME of `container:NAME` (none for another mode); an empty NAME is an error.
fn container_mode(flag: &str, value: &str) -> Result<Option<String>, EngineError> {
    match value.strip_prefix("container:") {
        Some("") => Err(EngineError::InvalidArgument(format!(
            "invalid {flag} {value:?}: name the container, as in container:NAME"
        ))),
        Some(name) => Ok(Some(name.to_string())),
        None => Ok(None),
    }
}

/// Pulls `image` when the store lacks it, as `docker run` does.
pub fn ensure_image(engine: &Engine, image: &str) -> Result<(), EngineError> {
    let store = engine.images()?;
    match store.find(image) {
        Ok(_) => return Ok(()),
        Err(skiff_image::ImageError::ImageNotFound(_)) => {}
        Err(err) => return Err(err.into()),
    }
    let reference = skiff_image::Reference::parse(image)
        .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
    eprintln!("Unable to find image '{}' locally", reference.familiar());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EngineError::io("start", "the async runtime"))?;
    let events: skiff_image::PullEvents = std::sync::Arc::new(|_event| {});
    let mut options = skiff_image::PullOptions::default();
    if let Ok(env) = std::env::var("SKIFF_INSECURE_REGISTRIES") {
        options.registry.insecure_registries = env
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    let record = runtime.block_on(store.pull(&reference, &options, &events))?;
    eprintln!("Digest: {}", record.target.digest);
    eprintln!(
        "Status: Downloaded newer image for {}",
        reference.familiar()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512k").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("2MB").unwrap(), 2 << 20);
        assert!(parse_bytes("lots").is_err());
    }
}
