//! `create`: set up the container and leave its init waiting for `start`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};
use skiff_cgroups::CgroupManager;
use skiff_sys::process::{self as sysproc, Forked};

use super::{ContainerError, cgroup_of};
use crate::init::{self, InitContext};
use crate::plan::{IdMap, Plan};
use crate::state::{ContainerState, ContainerStatus, Record, StateStore};
use crate::sync::{Channel, Message};

/// Options of `create` beyond the bundle.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Where to send the terminal's master (needed when `process.terminal` is true).
    pub console_socket: Option<PathBuf>,
    /// How many descriptors after stdio the process inherits.
    pub preserve_fds: u32,
}

/// Creates container `id` from the bundle at `bundle`; returns once its init waits for
/// `start`. A failure leaves nothing behind (no cgroup, no state, no process).
pub fn create(
    store: &StateStore,
    id: &str,
    bundle: &Path,
    options: &CreateOptions,
) -> Result<Record, ContainerError> {
    if store.exists(id) {
        return Err(ContainerError::Exists { id: id.to_string() });
    }
    let bundle = std::fs::canonicalize(bundle).map_err(|e| ContainerError::Config {
        path: bundle.to_path_buf(),
        detail: format!("the bundle directory is not there ({e})"),
    })?;
    let config_path = bundle.join("config.json");
    let spec = load_spec(&config_path)?;
    let plan = Plan::from_spec(&spec, &bundle)?;
    let cgroup_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("/skiff/{id}"));

    let dir = store.dir_of(id)?;
    std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Write {
        path: dir.clone(),
        source,
    })?;
    let mut record = Record {
        state: ContainerState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            pid: 0,
            status: ContainerStatus::Creating,
            bundle: bundle.clone(),
            rootfs: plan.rootfs.clone(),
            created: crate::clock::rfc3339_now(),
            owner: String::new(),
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        },
        init_start_time: 0,
        cgroup_path,
    };
    match launch(store, &mut record, &plan, &spec, options) {
        Ok(()) => Ok(record),
        Err(err) => {
            cleanup_failed(store, &record);
            Err(err)
        }
    }
}

fn load_spec(path: &Path) -> Result<Spec, ContainerError> {
    let text = std::fs::read_to_string(path).map_err(|e| ContainerError::Config {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    // Name the field that is wrong (`process.args: invalid type ...`), not just a column.
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| ContainerError::Config {
        path: path.to_path_buf(),
        detail: match e.path().to_string().as_str() {
            "." => e.inner().to_string(),
            field => format!("{field}: {}", e.inner()),
        },
    })
}

fn launch(
    store: &StateStore,
    record: &mut Record,
    plan: &Plan,
    spec: &Spec,
    options: &CreateOptions,
) -> Result<(), ContainerError> {
    store.save(record)?;
    let cgroup = cgroup_of(record)?;
    cgroup.create()?;
    if let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        cgroup.apply(&with_device_rules(resources, plan))?;
    }
    let fifo_path = store.dir_of(&record.state.id)?.join("exec.fifo");
    skiff_sys::fifo::create(&fifo_path)?;
    let fifo = skiff_sys::fifo::open_handle(&fifo_path)?;
    let (mut channel, child_channel) = Channel::pair()?;
    let console = match (&options.console_socket, plan.process.terminal) {
        (Some(path), true) => Some(skiff_sys::pty::connect_console_socket(path)?),
        (None, true) => {
            return Err(ContainerError::Init(
                "process.terminal is true: pass --console-socket to receive the terminal".into(),
            ));
        }
        (_, false) => None,
    };

    let child = match sysproc::fork_single_threaded()? {
        Forked::Child => {
            drop(channel);
            init::run(
                plan,
                InitContext {
                    channel: child_channel,
                    fifo,
                    no_pivot: options.no_pivot,
                    ready_sent: false,
                    console,
                    preserve_fds: options.preserve_fds,
                },
            )
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_channel);
    drop(fifo);
    let result = talk_to_init(&mut channel, &cgroup, child, plan, &*record);
    if plan.needs_pid_fork() || result.is_err() {
        if result.is_err() {
            let _ = sysproc::send_signal(child, 9);
        }
        let _ = sysproc::wait_for_exit(child);
    }
    let init_pid = result?;
    record.state.pid = init_pid;
    record.state.status = ContainerStatus::Created;
    record.init_start_time = skiff_sys::fifo::process_start_time(init_pid).unwrap_or(0);
    store.save(record)?;
    if let Some(pid_file) = &options.pid_file {
        write_pid_file(pid_file, init_pid)?;
    }
    Ok(())
}

/// Drives the init through its set-up; returns the init's pid once it is ready.
fn talk_to_init(
    channel: &mut Channel,
    cgroup: &skiff_cgroups::Manager,
    child: i32,
    plan: &Plan,
    record: &Record,
) -> Result<i32, ContainerError> {
    cgroup.add_process(child)?;
    channel.send(&Message::Go)?;
    let mut init_pid = None;
    // Stage one reports the init's pid and the init (stage two, its child) reports its own
    // progress over the same socket: the init's messages may overtake the pid. Hold them back
    // until the pid is known.
    let mut deferred = std::collections::VecDeque::new();
    loop {
        let message = match init_pid.and_then(|_| deferred.pop_front()) {
            Some(message) => message,
            None => channel.recv()?,
        };
        match message {
            Message::NeedIdMaps => {
                write_id_maps(child, &plan.uid_mappings, &plan.gid_mappings)?;
                channel.send(&Message::IdMapsWritten)?;
            }
            Message::InitPid { pid } => init_pid = Some(pid),
            message @ (Message::NeedHooks | Message::Ready | Message::SeccompListener { .. })
                if init_pid.is_none() =>
            {
                deferred.push_back(message)
            }
            Message::SeccompListener { fd } => {
                let pid = init_pid.ok_or_else(|| {
                    ContainerError::Init("the init sent a listener before reporting its pid".into())
                })?;
                hand_listener_to_agent(channel, plan, record, pid, fd)?;
            }
            Message::NeedHooks => {
                let pid = init_pid.ok_or_else(|| {
                    ContainerError::Init("the init asked for hooks before reporting its pid".into())
                })?;
                let state = hook_state(record, pid, "creating");
                crate::hooks::run("prestart", &plan.hooks.prestart, &state)?;
                crate::hooks::run("createRuntime", &plan.hooks.create_runtime, &state)?;
                channel.send(&Message::HooksDone {
                    state: hook_state(record, pid, "created"),
                })?;
            }
            Message::Ready => {
                return init_pid.ok_or_else(|| {
                    ContainerError::Init("the init reported ready before its pid".into())
                });
            }
            Message::Failed { message } => {
                if let Some(pid) = init_pid {
                    let _ = sysproc::send_signal(pid, 9);
                }
                return Err(ContainerError::Init(message));
            }
            other => {
                return Err(ContainerError::Init(format!(
                    "unexpected message from the init: {other:?}"
                )));
            }
        }
    }
}

/// Copies the init's seccomp listener, lets the init go on and sends the listener with the
/// container's state (status `creating`, as runc sends it) to `linux.seccomp.listenerPath`.
fn hand_listener_to_agent(
    channel: &mut Channel,
    plan: &Plan,
    record: &Record,
    pid: i32,
    fd: i32,
) -> Result<(), ContainerError> {
    let target = plan.process.seccomp_listener.as_ref().ok_or_else(|| {
        ContainerError::Init(
            "the init sent a seccomp listener but linux.seccomp has no listenerPath".into(),
        )
    })?;
    let listener = crate::listener::take(pid, fd)?;
    channel.send(&Message::SeccompDone)?;
    let state = serde_json::from_str(&hook_state(record, pid, "creating")).unwrap_or_default();
    let message =
        crate::listener::process_state(&record.state.oci_version, pid, &target.metadata, state);
    crate::listener::send(target, &message, &listener)?;
    Ok(())
}

/// The spec's device rules followed by allow rules for every device the container gets (the
/// default nodes, `linux.devices`, `/dev/pts/*` and `/dev/ptmx`), as runc adds them: a
/// "deny all" rule alone would leave the container unable to open `/dev/null`.
fn with_device_rules(resources: &LinuxResources, plan: &Plan) -> LinuxResources {
    let mut rules = resources.devices().clone().unwrap_or_default();
    let allow = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>| {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(typ));
        rule.set_major(major);
        rule.set_minor(minor);
        rule.set_access(Some("rwm".to_string()));
        rule
    };
    for device in &plan.devices {
        let typ = match device.kind {
            skiff_sys::mount::DeviceKind::Char => LinuxDeviceType::C,
            skiff_sys::mount::DeviceKind::Block => LinuxDeviceType::B,
            skiff_sys::mount::DeviceKind::Fifo => continue,
        };
        let number = |n: u64| i64::try_from(n).ok();
        rules.push(allow(typ, number(device.major), number(device.minor)));
    }
    rules.push(allow(LinuxDeviceType::C, Some(136), None)); // /dev/pts/*
    rules.push(allow(LinuxDeviceType::C, Some(5), Some(2))); // /dev/ptmx
    let mut resources = resources.clone();
    resources.set_devices(Some(rules));
    resources
}

/// The state JSON hooks read on stdin.
pub(crate) fn hook_state(record: &Record, pid: i32, status: &str) -> String {
    serde_json::json!({
        "ociVersion": record.state.oci_version,
        "id": record.state.id,
        "status": status,
        "pid": pid,
        "bundle": record.state.bundle,
        "annotations": record.state.annotations,
    })
    .to_string()
}

fn write_id_maps(pid: i32, uids: &[IdMap], gids: &[IdMap]) -> Result<(), ContainerError> {
    let render = |maps: &[IdMap]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect::<String>()
    };
    for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, render(maps))
            .map_err(|source| ContainerError::Write { path, source })?;
    }
    Ok(())
}

fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(|source| ContainerError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ContainerError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes whatever a failed create left: the processes and cgroup, then the state.
fn cleanup_failed(store: &StateStore, record: &Record) {
    if let Ok(cgroup) = cgroup_of(record) {
        let _ = cgroup.kill_all(skiff_cgroups::Signal::SIGKILL);
        let _ = cgroup.destroy();
    }
    let _ = store.remove(&record.state.id);
}
