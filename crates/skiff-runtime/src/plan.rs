//! The launch plan: everything `config.json` asks of the container's init, as plain data.
//!
//! `Plan::from_spec` reads an OCI spec (through `oci-spec`) and decides, without touching the
//! system, which namespaces to create or join, which mounts to make with which flags, which
//! device nodes to create and what the process looks like. The init executes the plan
//! (`init.rs`); everything here is tested without root.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Spec};
use skiff_sys::NamespaceKind;
use skiff_sys::mount::MountFlags;

/// Why a spec cannot be turned into a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A required field is missing.
    #[error("config.json: {field} is required")]
    Missing {
        /// The JSON path of the field, e.g. `process.args`.
        field: &'static str,
    },
    /// A field has a value the runtime cannot use.
    #[error("config.json: {field}: {detail}")]
    Invalid {
        /// The JSON path of the field.
        field: String,
        /// What is wrong and, where possible, what would be right.
        detail: String,
    },
    /// The root filesystem does not exist.
    #[error("rootfs {path} does not exist: unpack an image there or fix root.path in config.json")]
    NoRootfs {
        /// The resolved rootfs path.
        path: PathBuf,
    },
}

/// One uid or gid mapping of a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

/// What kind of mount a [`MountStep`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of `source` (recursive for `rbind`).
    Bind {
        /// `rbind` rather than `bind`.
        recursive: bool,
    },
    /// A filesystem of this type (`proc`, `tmpfs`, `sysfs`, `devpts`, `mqueue` ...).
    Filesystem(String),
    /// The cgroup hierarchy (`cgroup` or `cgroup2`): the container's own cgroups, read-only
    /// unless asked otherwise.
    Cgroup,
}

/// One entry of `mounts`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStep {
    /// The source (a path for binds, a name for filesystems).
    pub source: Option<PathBuf>,
    /// The target as the container sees it (absolute).
    pub destination: PathBuf,
    /// What to mount.
    pub kind: MountKind,
    /// `MS_*` flags from the options.
    pub flags: MountFlags,
    /// Propagation to apply afterwards (`MS_PRIVATE`, `MS_SLAVE|MS_REC` ...), if any.
    pub propagation: Option<MountFlags>,
    /// Options that are not flags, passed as mount data (e.g. `mode=755,size=65536k`).
    pub data: String,
}

/// A device node to create under `/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: PathBuf,
    /// Character, block or FIFO.
    pub kind: skiff_sys::mount::DeviceKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    /// argv; `args[0]` is looked up on the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, if set.
    pub umask: Option<u32>,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
    /// `(RLIMIT_NAME, soft, hard)`.
    pub rlimits: Vec<(String, u64, u64)>,
    /// `/proc/self/oom_score_adj`, if set.
    pub oom_score_adj: Option<i32>,
    /// Whether a terminal was asked for.
    pub terminal: bool,
    /// The terminal's initial size, `(width, height)` (`process.consoleSize`).
    pub console_size: Option<(u16, u16)>,
    /// The capability sets; `None` leaves the process with what it has (all, as root).
    pub capabilities: Option<skiff_sys::capabilities::CapabilitySets>,
    /// The container's seccomp filter (`linux.seccomp`, compiled), for the init and every
    /// exec'd process.
    pub seccomp: Option<crate::seccomp::Filter>,
    /// Where the listener of a filter with `SCMP_ACT_NOTIFY` rules goes
    /// (`linux.seccomp.listenerPath` and `listenerMetadata`); `None` without such rules.
    pub seccomp_listener: Option<crate::listener::ListenerTarget>,
}

impl ProcessPlan {
    /// Reads an OCI `process` object (from `config.json`, or `exec --process FILE`).
    pub fn from_oci(process: &oci_spec::runtime::Process) -> Result<ProcessPlan, PlanError> {
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(PlanError::Missing {
                field: "process.args",
            });
        }
        if !process.cwd().is_absolute() {
            return Err(PlanError::Invalid {
                field: "process.cwd".into(),
                detail: format!("{} is not an absolute path", process.cwd().display()),
            });
        }
        let user = process.user();
        let rlimits = process
            .rlimits()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|r| (rlimit_name(r.typ()), r.soft(), r.hard()))
            .collect();
        let capabilities = match process.capabilities() {
            Some(caps) => {
                let sets = capability_sets(caps);
                skiff_sys::capabilities::validate(&sets).map_err(|e| PlanError::Invalid {
                    field: "process.capabilities".into(),
                    detail: e.to_string(),
                })?;
                if let Some(extra) = sets
                    .effective
                    .iter()
                    .find(|cap| !sets.permitted.contains(cap))
                {
                    return Err(PlanError::Invalid {
                        field: "process.capabilities.effective".into(),
                        detail: format!("{extra} must also be in permitted"),
                    });
                }
                Some(sets)
            }
            None => None,
        };
        Ok(ProcessPlan {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            rlimits,
            oom_score_adj: process.oom_score_adj(),
            terminal: process.terminal().unwrap_or(false),
            console_size: process.console_size().map(|b| {
                (
                    u16::try_from(b.width()).unwrap_or(u16::MAX),
                    u16::try_from(b.height()).unwrap_or(u16::MAX),
                )
            }),
            capabilities,
            seccomp: None,
            seccomp_listener: None,
        })
    }

    /// Sets the container's seccomp filter from `linux.seccomp` of its spec.
    pub fn with_seccomp_of(mut self, spec: &Spec) -> Result<ProcessPlan, PlanError> {
        let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        self.seccomp_listener = profile.and_then(|p| {
            Some(crate::listener::ListenerTarget {
                path: p.listener_path().clone()?,
                metadata: p.listener_metadata().clone().unwrap_or_default(),
            })
        });
        self.seccomp = match profile {
            Some(profile) => {
                Some(
                    crate::seccomp::compile(profile).map_err(|e| PlanError::Invalid {
                        field: "linux.seccomp".into(),
                        detail: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        if !self.seccomp.as_ref().is_some_and(|f| f.notify) {
            self.seccomp_listener = None;
        }
        Ok(self)
    }
}

/// Everything the init does, decided up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
    /// Remount the root read-only at the end.
    pub readonly_root: bool,
    /// Propagation of `/` in the container's mount namespace (default `MS_SLAVE|MS_REC`).
    pub rootfs_propagation: MountFlags,
    /// Namespaces created new, in creation order (user first).
    pub new_namespaces: Vec<NamespaceKind>,
    /// Namespaces joined by path, in joining order (user first).
    pub join_namespaces: Vec<(NamespaceKind, PathBuf)>,
    /// uid mappings for a new user namespace.
    pub uid_mappings: Vec<IdMap>,
    /// gid mappings for a new user namespace.
    pub gid_mappings: Vec<IdMap>,
    /// Hostname to set (needs a new UTS namespace).
    pub hostname: Option<String>,
    /// Domain name to set (needs a new UTS namespace).
    pub domainname: Option<String>,
    /// Mounts, in order.
    pub mounts: Vec<MountStep>,
    /// Device nodes: the standard ones plus `linux.devices`.
    pub devices: Vec<DeviceNode>,
    /// Paths hidden from the container.
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only.
    pub readonly_paths: Vec<PathBuf>,
    /// `(key, value)` sysctls, e.g. `("net.ipv4.ip_forward", "1")`.
    pub sysctls: Vec<(String, String)>,
    /// The process.
    pub process: ProcessPlan,
    /// Lifecycle hooks.
    pub hooks: crate::hooks::Hooks,
}

impl Plan {
    /// Whether the init must fork again to be inside its PID namespace.
    pub fn needs_pid_fork(&self) -> bool {
        self.new_namespaces.contains(&NamespaceKind::Pid)
            || self
                .join_namespaces
                .iter()
                .any(|(kind, _)| *kind == NamespaceKind::Pid)
    }

    /// Whether the container gets a mount namespace of its own (and so a rootfs set up).
    pub fn has_own_mount_namespace(&self) -> bool {
        self.new_namespaces.contains(&NamespaceKind::Mount)
    }

    /// Reads the plan out of `spec` for the bundle at `bundle`.
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<Plan, PlanError> {
        let root = spec
            .root()
            .as_ref()
            .ok_or(PlanError::Missing { field: "root" })?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(PlanError::NoRootfs { path: rootfs });
        }
        let process = spec
            .process()
            .as_ref()
            .ok_or(PlanError::Missing { field: "process" })?;
        let linux = spec.linux().clone().unwrap_or_default();

        let mut new_namespaces = Vec::new();
        let mut join_namespaces = Vec::new();
        let mut seen = Vec::new();
        for (i, ns) in linux
            .namespaces()
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let kind = match ns.typ() {
                LinuxNamespaceType::Mount => NamespaceKind::Mount,
                LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
                LinuxNamespaceType::Uts => NamespaceKind::Uts,
                LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
                LinuxNamespaceType::User => NamespaceKind::User,
                LinuxNamespaceType::Pid => NamespaceKind::Pid,
                LinuxNamespaceType::Network => NamespaceKind::Network,
                LinuxNamespaceType::Time => {
                    return Err(PlanError::Invalid {
                        field: format!("linux.namespaces[{i}].type"),
                        detail: "time namespaces are not supported".into(),
                    });
                }
            };
            if seen.contains(&kind) {
                return Err(PlanError::Invalid {
                    field: format!("linux.namespaces[{i}].type"),
                    detail: format!("{} is listed twice", kind.oci_name()),
                });
            }
            seen.push(kind);
            match ns.path() {
                Some(path) => join_namespaces.push((kind, path.clone())),
                None => new_namespaces.push(kind),
            }
        }
        let order = |kind: &NamespaceKind| {
            NamespaceKind::ALL
                .iter()
                .position(|k| k == kind)
                .unwrap_or(usize::MAX)
        };
        new_namespaces.sort_by_key(order);
        join_namespaces.sort_by_key(|(kind, _)| order(kind));

        let id_maps = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMap> {
            maps.clone()
                .unwrap_or_default()
                .iter()
                .map(|m| IdMap {
                    container_id: m.container_id(),
                    host_id: m.host_id(),
                    size: m.size(),
                })
                .collect()
        };
        let uid_mappings = id_maps(linux.uid_mappings());
        let gid_mappings = id_maps(linux.gid_mappings());
        if new_namespaces.contains(&NamespaceKind::User)
            && (uid_mappings.is_empty() || gid_mappings.is_empty())
        {
            return Err(PlanError::Invalid {
                field: "linux.uidMappings".into(),
                detail: "a new user namespace needs uidMappings and gidMappings".into(),
            });
        }

        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        let domainname = spec.domainname().clone().filter(|d| !d.is_empty());
        if (hostname.is_some() || domainname.is_some())
            && !new_namespaces.contains(&NamespaceKind::Uts)
        {
            return Err(PlanError::Invalid {
                field: "hostname".into(),
                detail: "setting a hostname needs a new uts namespace in linux.namespaces".into(),
            });
        }

        let mut mounts = Vec::new();
        for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
            mounts.push(mount_step(i, m)?);
        }

        let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
            None | Some("") => MountFlags::MS_SLAVE | MountFlags::MS_REC,
            Some(name) => propagation_flag(name).ok_or_else(|| PlanError::Invalid {
                field: "linux.rootfsPropagation".into(),
                detail: format!("{name:?} is not one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable"),
            })?,
        };

        let mut devices = default_devices();
        for (i, d) in linux
            .devices()
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => skiff_sys::mount::DeviceKind::Char,
                LinuxDeviceType::B => skiff_sys::mount::DeviceKind::Block,
                LinuxDeviceType::P => skiff_sys::mount::DeviceKind::Fifo,
                LinuxDeviceType::A => {
                    return Err(PlanError::Invalid {
                        field: format!("linux.devices[{i}].type"),
                        detail: "must be c, b, u or p".into(),
                    });
                }
            };
            let number = |n: i64, what: &str| {
                u64::try_from(n).map_err(|_| PlanError::Invalid {
                    field: format!("linux.devices[{i}].{what}"),
                    detail: "must not be negative".into(),
                })
            };
            devices.retain(|existing| existing.path != *d.path());
            devices.push(DeviceNode {
                path: d.path().clone(),
                kind,
                major: number(d.major(), "major")?,
                minor: number(d.minor(), "minor")?,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            });
        }

        Ok(Plan {
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            rootfs_propagation,
            new_namespaces,
            join_namespaces,
            uid_mappings,
            gid_mappings,
            hostname,
            domainname,
            mounts,
            devices,
            masked_paths: linux
                .masked_paths()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            readonly_paths: linux
                .readonly_paths()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            sysctls: {
                let mut s: Vec<(String, String)> = linux
                    .sysctl()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                s.sort();
                s
            },
            process: ProcessPlan::from_oci(process)?.with_seccomp_of(spec)?,
            hooks: crate::hooks::Hooks::from_spec(spec.hooks().as_ref()),
        })
    }
}

fn capability_sets(
    caps: &oci_spec::runtime::LinuxCapabilities,
) -> skiff_sys::capabilities::CapabilitySets {
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut names: Vec<String> = set
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|cap| {
                serde_json::to_value(cap)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            })
            .collect();
        names.sort();
        names
    };
    skiff_sys::capabilities::CapabilitySets {
        bounding: names(caps.bounding()),
        effective: names(caps.effective()),
        inheritable: names(caps.inheritable()),
        permitted: names(caps.permitted()),
        ambient: names(caps.ambient()),
    }
}

fn rlimit_name(typ: oci_spec::runtime::PosixRlimitType) -> String {
    // The serde name is the RLIMIT_* constant's name.
    serde_json::to_value(typ)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The device nodes every container gets (the runtime spec's default devices).
pub fn default_devices() -> Vec<DeviceNode> {
    use skiff_sys::mount::DeviceKind::Char;
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DeviceNode {
        path: path.into(),
        kind: Char,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

fn propagation_flag(name: &str) -> Option<MountFlags> {
    Some(match name {
        "private" => MountFlags::MS_PRIVATE,
        "rprivate" => MountFlags::MS_PRIVATE | MountFlags::MS_REC,
        "shared" => MountFlags::MS_SHARED,
        "rshared" => MountFlags::MS_SHARED | MountFlags::MS_REC,
        "slave" => MountFlags::MS_SLAVE,
        "rslave" => MountFlags::MS_SLAVE | MountFlags::MS_REC,
        "unbindable" => MountFlags::MS_UNBINDABLE,
        "runbindable" => MountFlags::MS_UNBINDABLE | MountFlags::MS_REC,
        _ => return None,
    })
}

/// Decodes one `mounts[i]` entry.
fn mount_step(i: usize, m: &oci_spec::runtime::Mount) -> Result<MountStep, PlanError> {
    if !m.destination().is_absolute() {
        return Err(PlanError::Invalid {
            field: format!("mounts[{i}].destination"),
            detail: format!("{} is not an absolute path", m.destination().display()),
        });
    }
    let mut flags = MountFlags::empty();
    let mut propagation = None;
    let mut data = Vec::new();
    let mut bind = None;
    for option in m.options().clone().unwrap_or_default() {
        let (set, clear) = match option.as_str() {
            "bind" => {
                bind = Some(false);
                continue;
            }
            "rbind" => {
                bind = Some(true);
                continue;
            }
            "ro" => (MountFlags::MS_RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::MS_RDONLY),
            "nosuid" => (MountFlags::MS_NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::MS_NOSUID),
            "nodev" => (MountFlags::MS_NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::MS_NODEV),
            "noexec" => (MountFlags::MS_NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::MS_NOEXEC),
            "sync" => (MountFlags::MS_SYNCHRONOUS, MountFlags::empty()),
            "async" => (MountFlags::empty(), MountFlags::MS_SYNCHRONOUS),
            "dirsync" => (MountFlags::MS_DIRSYNC, MountFlags::empty()),
            "remount" => (MountFlags::MS_REMOUNT, MountFlags::empty()),
            "mand" => (MountFlags::MS_MANDLOCK, MountFlags::empty()),
            "nomand" => (MountFlags::empty(), MountFlags::MS_MANDLOCK),
            "atime" => (MountFlags::empty(), MountFlags::MS_NOATIME),
            "noatime" => (MountFlags::MS_NOATIME, MountFlags::empty()),
            "diratime" => (MountFlags::empty(), MountFlags::MS_NODIRATIME),
            "nodiratime" => (MountFlags::MS_NODIRATIME, MountFlags::empty()),
            "relatime" => (MountFlags::MS_RELATIME, MountFlags::empty()),
            "norelatime" => (MountFlags::empty(), MountFlags::MS_RELATIME),
            "strictatime" => (MountFlags::MS_STRICTATIME, MountFlags::empty()),
            "nostrictatime" => (MountFlags::empty(), MountFlags::MS_STRICTATIME),
            other => {
                if let Some(p) = propagation_flag(other) {
                    propagation = Some(p);
                } else {
                    data.push(other.to_string());
                }
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    let fstype = m.typ().clone().unwrap_or_default();
    let kind = match (bind, fstype.as_str()) {
        (Some(recursive), _) => MountKind::Bind { recursive },
        (None, "bind") => MountKind::Bind { recursive: false },
        (None, "cgroup" | "cgroup2") => MountKind::Cgroup,
        (None, "") => {
            return Err(PlanError::Invalid {
                field: format!("mounts[{i}].type"),
                detail: "a mount needs a type or a bind/rbind option".into(),
            });
        }
        (None, fs) => MountKind::Filesystem(fs.to_string()),
    };
    if matches!(kind, MountKind::Bind { .. }) && m.source().is_none() {
        return Err(PlanError::Invalid {
            field: format!("mounts[{i}].source"),
            detail: "a bind mount needs a source".into(),
        });
    }
    Ok(MountStep {
        source: m.source().clone(),
        destination: m.destination().clone(),
        kind,
        flags,
        propagation,
        data: data.join(","),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: serde_json::Value) -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let spec: Spec = serde_json::from_value(config).unwrap();
        (dir, spec)
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "hostname": "c1",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/data", "source": "/srv", "options": ["rbind", "ro", "rprivate"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]}
            ],
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "uts"}, {"type": "network", "path": "/run/netns/x"}, {"type": "user"}],
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "sysctl": {"net.ipv4.ip_forward": "1"}
            }
        })
    }

    #[test]
    fn namespaces_split_into_new_and_joined_with_user_first() {
        let (dir, spec) = bundle_with(minimal());
        let plan = Plan::from_spec(&spec, dir.path()).unwrap();
        assert_eq!(
            plan.new_namespaces,
            vec![
                NamespaceKind::User,
                NamespaceKind::Pid,
                NamespaceKind::Uts,
                NamespaceKind::Mount
            ]
        );
        assert_eq!(
            plan.join_namespaces,
            vec![(NamespaceKind::Network, PathBuf::from("/run/netns/x"))]
        );
        assert!(plan.needs_pid_fork());
        assert_eq!(
            plan.uid_mappings[0],
            IdMap {
                container_id: 0,
                host_id: 100000,
                size: 65536
            }
        );
    }

    #[test]
    fn mount_options_become_flags_propagation_and_data() {
        let (dir, spec) = bundle_with(minimal());
        let plan = Plan::from_spec(&spec, dir.path()).unwrap();
        let dev = &plan.mounts[1];
        assert_eq!(dev.kind, MountKind::Filesystem("tmpfs".into()));
        assert_eq!(
            dev.flags,
            MountFlags::MS_NOSUID | MountFlags::MS_STRICTATIME
        );
        assert_eq!(dev.data, "mode=755,size=65536k");
        let data = &plan.mounts[2];
        assert_eq!(data.kind, MountKind::Bind { recursive: true });
        assert_eq!(data.flags, MountFlags::MS_RDONLY);
        assert_eq!(
            data.propagation,
            Some(MountFlags::MS_PRIVATE | MountFlags::MS_REC)
        );
        assert_eq!(plan.mounts[3].kind, MountKind::Cgroup);
    }

    #[test]
    fn the_rest_of_the_spec_is_carried_over() {
        let (dir, spec) = bundle_with(minimal());
        let plan = Plan::from_spec(&spec, dir.path()).unwrap();
        assert_eq!(plan.rootfs, dir.path().join("rootfs"));
        assert_eq!(plan.hostname.as_deref(), Some("c1"));
        assert_eq!(plan.masked_paths, vec![PathBuf::from("/proc/kcore")]);
        assert_eq!(
            plan.sysctls,
            vec![("net.ipv4.ip_forward".to_string(), "1".to_string())]
        );
        assert_eq!(
            plan.rootfs_propagation,
            MountFlags::MS_SLAVE | MountFlags::MS_REC
        );
        assert!(
            plan.devices
                .iter()
                .any(|d| d.path == Path::new("/dev/null"))
        );
    }

    #[test]
    fn a_missing_rootfs_says_so() {
        let (dir, spec) = bundle_with(minimal());
        std::fs::remove_dir(dir.path().join("rootfs")).unwrap();
        let err = Plan::from_spec(&spec, dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut config = minimal();
        config["process"]["cwd"] = "relative".into();
        let (dir, spec) = bundle_with(config);
        assert!(
            Plan::from_spec(&spec, dir.path())
                .unwrap_err()
                .to_string()
                .contains("process.cwd")
        );

        let mut config = minimal();
        config["mounts"][0] = serde_json::json!({"destination": "/x", "source": "y"});
        let (dir, spec) = bundle_with(config);
        assert!(
            Plan::from_spec(&spec, dir.path())
                .unwrap_err()
                .to_string()
                .contains("mounts[0].type")
        );

        let mut config = minimal();
        config["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        let (dir, spec) = bundle_with(config);
        assert!(
            Plan::from_spec(&spec, dir.path())
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );

        let mut config = minimal();
        config["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
        let (dir, spec) = bundle_with(config);
        assert!(
            Plan::from_spec(&spec, dir.path())
                .unwrap_err()
                .to_string()
                .contains("uts")
        );
    }
}
