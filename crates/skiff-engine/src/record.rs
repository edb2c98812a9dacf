//! What the engine remembers of a container, as files under `DATA/containers/<id>/`:
//! `config.json` (what was asked for: written once at create) and `state.json` (what happened:
//! written atomically by the container's monitor, `skiff shim`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// A bind mount from the host (`-v /host:/ctr[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container.
    pub destination: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A named or anonymous volume mounted into a container (`-v NAME:/ctr[:ro]`, `-v /ctr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Its data directory on the host (`DATA/volumes/<name>/_data`).
    pub source: String,
    /// Absolute path in the container.
    pub destination: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Made for this container (`-v /ctr`): `rm -v` and `--rm` remove it with the container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// `nocopy`: an empty volume is not filled from the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
}

/// A volume `run` asks for, before the engine made or found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    /// The volume's name; none for an anonymous volume.
    pub name: Option<String>,
    /// Absolute path in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// `nocopy`.
    pub no_copy: bool,
}

/// What one `-v` flag asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFlag {
    /// `-v /host:/ctr[:ro]`.
    Bind(BindMount),
    /// `-v NAME:/ctr[:ro]` or `-v /ctr`.
    Volume(VolumeRequest),
}

impl MountFlag {
    /// Parses Docker's `-v`: `/HOST:/CTR[:MODE]` (a bind mount), `NAME:/CTR[:MODE]` (a named
    /// volume) or `/CTR` (an anonymous volume); MODE is a comma list of `ro`, `rw`, `nocopy`
    /// (and the SELinux `z`/`Z`, ignored).
    pub fn parse(text: &str) -> Result<MountFlag, EngineError> {
        let bad =
            |why: &str| EngineError::InvalidArgument(format!("invalid volume {text:?}: {why}"));
        let parts: Vec<&str> = text.split(':').collect();
        let (source, destination, mode) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            _ => {
                return Err(bad(
                    "use /HOST:/CONTAINER[:ro], NAME:/CONTAINER[:ro] or /CONTAINER",
                ));
            }
        };
        if !destination.starts_with('/') {
            return Err(bad("the container path must be absolute"));
        }
        if destination == "/" {
            return Err(bad("the container path cannot be /"));
        }
        let (mut read_only, mut no_copy) = (false, false);
        for option in mode.split(',').filter(|o| !o.is_empty()) {
            match option {
                "rw" => read_only = false,
                "ro" => read_only = true,
                "nocopy" => no_copy = true,
                "z" | "Z" => {}
                other => return Err(bad(&format!("unknown mode {other:?} (ro, rw, nocopy)"))),
            }
        }
        if source.starts_with('/') {
            if no_copy {
                return Err(bad("nocopy applies to volumes, not to host directories"));
            }
            return Ok(MountFlag::Bind(BindMount {
                source: source.to_string(),
                destination: destination.to_string(),
                read_only,
            }));
        }
        if !source.is_empty() {
            crate::volume::validate_name(source)?;
        }
        Ok(MountFlag::Volume(VolumeRequest {
            name: (!source.is_empty()).then(|| source.to_string()),
            destination: destination.to_string(),
            read_only,
            no_copy,
        }))
    }
}

/// A namespace shared with another container (`--network|--pid|--ipc container:NAME`),
/// entered by the path of that container's init when this one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerJoin {
    /// The OCI namespace type (`network`, `uts`, `pid`, `ipc`).
    pub kind: String,
    /// The other container's full id.
    pub container: String,
}

/// A tmpfs mount (`--tmpfs /path[:options]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Path in the container.
    pub destination: String,
    /// Extra mount options (`size=64m,mode=1777`).
    #[serde(default)]
    pub options: Vec<String>,
}

impl TmpfsMount {
    /// Parses `--tmpfs /path[:opt,opt]`.
    pub fn parse(text: &str) -> Result<TmpfsMount, EngineError> {
        let (destination, options) = text.split_once(':').unwrap_or((text, ""));
        if !destination.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "invalid tmpfs {text:?}: the path must be absolute"
            )));
        }
        Ok(TmpfsMount {
            destination: destination.to_string(),
            options: options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// `--restart`: what the monitor does when the container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "Name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure {
        /// The limit (0 = none).
        #[serde(rename = "MaximumRetryCount")]
        max_retries: u32,
    },
    /// Always restart (unless stopped by the user).
    Always,
    /// Like always, but not after a user's stop (the same here: a stop is never undone).
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(text: &str) -> Result<RestartPolicy, EngineError> {
        let bad = || EngineError::InvalidArgument(format!("invalid restart policy {text:?}"));
        match text.split_once(':') {
            None => match text {
                "" | "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
                "always" => Ok(RestartPolicy::Always),
                "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
                _ => Err(bad()),
            },
            Some(("on-failure", n)) => Ok(RestartPolicy::OnFailure {
                max_retries: n.parse().map_err(|_| bad())?,
            }),
            Some(_) => Err(EngineError::InvalidArgument(format!(
                "invalid restart policy {text:?}: maximum retry count cannot be used with this policy"
            ))),
        }
    }

    /// Docker's name of the policy (`HostConfig.RestartPolicy.Name`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a container that exited with `code` after `restarts` restarts is started again
    /// (a user's stop always wins and is checked by the caller).
    pub fn should_restart(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || restarts < max_retries)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// Resource limits (`--memory`, `--cpus`, `--cpu-shares`, `--pids-limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// Memory limit in bytes (0: none).
    #[serde(default)]
    pub memory: i64,
    /// CPUs in billionths (`--cpus 1.5` = 1_500_000_000; 0: none).
    #[serde(default)]
    pub nano_cpus: i64,
    /// Relative CPU weight (0: default).
    #[serde(default)]
    pub cpu_shares: i64,
    /// Maximum number of processes (0: none).
    #[serde(default)]
    pub pids_limit: i64,
}

/// The network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace with only loopback (the default until networking exists).
    #[default]
    None,
    /// The host's network (and UTS) namespace.
    Host,
}

/// The engine's `config.json` of one container: everything `run` was asked for, resolved
/// against the image. Written once, at create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The full id.
    pub id: String,
    /// The name (without Docker's leading `/`).
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image id (config digest, `sha256:...`).
    pub image_id: String,
    /// The ChainIDs of the image's layers, bottom first (kept from garbage collection).
    #[serde(default)]
    pub chain: Vec<String>,
    /// The entrypoint in effect (image's or `--entrypoint`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The command in effect (the run arguments, or the image's `Cmd`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The environment: image's `Env` overridden by `-e`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (empty: `/`).
    #[serde(default)]
    pub working_dir: String,
    /// `--user` or the image's `User` (empty: root).
    #[serde(default)]
    pub user: String,
    /// The hostname.
    pub hostname: String,
    /// Host bind mounts.
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// Volumes (named and anonymous).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// tmpfs mounts.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
    /// Root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
    /// Capabilities added (`CAP_` names).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`CAP_` names, or `ALL`).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--security-opt` values as given.
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// `--privileged`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Supplementary group ids added to the user's (`--group-add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<u32>,
    /// Network mode.
    #[serde(default)]
    pub network: NetworkMode,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--rm`: remove when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// Labels of the image (shown by inspect).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Signal that stops it (image's `StopSignal`, default SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
    /// A prepared directory bind-mounted as the root filesystem instead of an image's layers
    /// (the node agent's pod sandbox); empty for image-based containers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rootfs_dir: String,
    /// Namespaces joined by path instead of created (a pod's containers join the network, IPC
    /// and UTS namespaces of its sandbox).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_namespaces: Vec<NamespaceJoin>,
    /// Namespaces shared with other containers, resolved to `/proc/PID/ns/*` at each start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_containers: Vec<ContainerJoin>,
    /// `-i` / a pod's `stdin`: the container's stdin is a pipe the monitor keeps open, fed
    /// through the attach socket (otherwise `/dev/null`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// `stdinOnce`: the stdin closes when the first client attached to it detaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_once: bool,
    /// `-t` / a pod's `tty`: the process runs on a terminal whose master the monitor holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The cgroup the container's cgroup is made under (empty: `/skiff`); a pod's containers
    /// go under the pod cgroup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_parent: String,
    /// `--no-procfs`: the host's `/proc/meminfo`, `cpuinfo`, `stat`, `uptime`, `loadavg`
    /// and CPU affinity instead of the container's own ([`crate::procview`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_procfs: bool,
    /// A CPU quota also pins `ceil(quota)` CPUs (`skiff run`; never pods).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_cpuset: bool,
}

/// A namespace a container joins instead of creating its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceJoin {
    /// The OCI namespace type (`network`, `ipc`, `uts`, ...).
    pub kind: String,
    /// The namespace file (`/proc/PID/ns/net`); empty: the host's own namespace of that kind
    /// (none is created; what `hostPID`/`hostIPC` pods ask for).
    pub path: String,
}

impl ContainerConfig {
    /// The full argv: entrypoint then command.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// Whether the default seccomp profile applies (`seccomp=unconfined` turns it off).
    pub fn seccomp_confined(&self) -> bool {
        !self
            .security_opt
            .iter()
            .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined")
    }

    /// The seccomp profile file of `seccomp=PATH` (a JSON profile), if one was given.
    pub fn seccomp_profile_path(&self) -> Option<&str> {
        self.security_opt.iter().find_map(|o| {
            let value = o
                .strip_prefix("seccomp=")
                .or_else(|| o.strip_prefix("seccomp:"))?;
            (value != "unconfined" && !value.is_empty()).then_some(value)
        })
    }

    /// Whether `no-new-privileges` was asked for.
    pub fn no_new_privileges(&self) -> bool {
        self.security_opt.iter().any(|o| {
            matches!(
                o.as_str(),
                "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true"
            )
        })
    }
}

/// Docker's container statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    Created,
    /// Its init runs.
    Running,
    /// Waiting to be started again by its restart policy.
    Restarting,
    /// Its init ended (or its monitor died).
    Exited,
    /// Being removed.
    Removing,
}

impl Status {
    /// The lower-case name (`{{.State.Status}}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Removing => "removing",
        }
    }
}

/// The engine's `state.json`: what happened to the container (written by its monitor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The status as last recorded (see [`crate::Container::status`] for the live view).
    pub status: Status,
    /// Host pid of the container's init while it runs (0 otherwise).
    #[serde(default)]
    pub pid: i32,
    /// The monitor's pid (0: none).
    #[serde(default)]
    pub shim_pid: i32,
    /// The monitor's start time (clock ticks since boot), to tell it from a reused pid.
    #[serde(default)]
    pub shim_start_time: u64,
    /// The last exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// Why it could not start, if so.
    #[serde(default)]
    pub error: String,
    /// Whether the memory limit killed it.
    #[serde(default)]
    pub oom_killed: bool,
    /// When it last started (RFC 3339, or the zero time).
    pub started_at: String,
    /// When it last ended (RFC 3339, or the zero time).
    pub finished_at: String,
    /// How many times the restart policy started it again.
    #[serde(default)]
    pub restart_count: u32,
}

impl State {
    /// The state of a container just created.
    pub fn created() -> State {
        State {
            status: Status::Created,
            pid: 0,
            shim_pid: 0,
            shim_start_time: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: crate::time::ZERO_TIME.to_string(),
            finished_at: crate::time::ZERO_TIME.to_string(),
            restart_count: 0,
        }
    }

    /// Whether the recorded monitor process is still this container's monitor.
    pub fn shim_alive(&self) -> bool {
        self.shim_pid > 0
            && skiff_sys::fifo::process_start_time(self.shim_pid) == Some(self.shim_start_time)
            && skiff_sys::fifo::process_state(self.shim_pid) != Some('Z')
    }
}

/// Writes `data` to `path` atomically (a temp file in the same directory, then rename).
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), EngineError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, data).map_err(EngineError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(EngineError::io("rename to", path))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), EngineError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| EngineError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    write_atomically(path, &data)
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EngineError> {
    let data = std::fs::read(path).map_err(EngineError::io("read", path))?;
    serde_json::from_slice(&data).map_err(|e| EngineError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_tell_binds_from_named_and_anonymous_volumes() {
        assert!(matches!(
            MountFlag::parse("/srv:/data:ro").unwrap(),
            MountFlag::Bind(BindMount {
                read_only: true,
                ..
            })
        ));
        match MountFlag::parse("cache:/data:ro,nocopy").unwrap() {
            MountFlag::Volume(v) => {
                assert_eq!(v.name.as_deref(), Some("cache"));
                assert_eq!(v.destination, "/data");
                assert!(v.read_only && v.no_copy);
            }
            other => panic!("{other:?}"),
        }
        match MountFlag::parse("/data").unwrap() {
            MountFlag::Volume(v) => assert!(v.name.is_none() && !v.read_only),
            other => panic!("{other:?}"),
        }
        assert!(MountFlag::parse("x:/data").is_err(), "one character");
        assert!(MountFlag::parse("./rel:/data").is_err());
        assert!(MountFlag::parse("cache:data").is_err());
        assert!(MountFlag::parse("cache:/data:zz").is_err());
        assert!(MountFlag::parse("/srv:/data:nocopy").is_err());
        assert!(MountFlag::parse("a:/b:ro:x").is_err());
    }

    #[test]
    fn restart_policies_parse_and_decide() {
        let p = RestartPolicy::parse("on-failure:2").unwrap();
        assert_eq!(p, RestartPolicy::OnFailure { max_retries: 2 });
        assert!(p.should_restart(1, 0));
        assert!(p.should_restart(1, 1));
        assert!(!p.should_restart(1, 2));
        assert!(!p.should_restart(0, 0));
        assert!(
            RestartPolicy::parse("always")
                .unwrap()
                .should_restart(0, 99)
        );
        assert!(!RestartPolicy::parse("no").unwrap().should_restart(1, 0));
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
    }

    #[test]
    fn tmpfs_options_split() {
        let t = TmpfsMount::parse("/run:size=1m,mode=1777").unwrap();
        assert_eq!(t.options, vec!["size=1m", "mode=1777"]);
        assert!(TmpfsMount::parse("run").is_err());
    }
}
