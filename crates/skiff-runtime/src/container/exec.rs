//! `exec`: run another process inside a running container, by joining its init's namespaces
//! and cgroup.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use skiff_cgroups::CgroupManager;
use skiff_sys::process::{self as sysproc, Forked};
use skiff_sys::{NamespaceId, NamespaceKind};

use super::{ContainerError, cgroup_of, load};
use crate::init::{self, InitError};
use crate::plan::ProcessPlan;
use crate::state::StateStore;
use crate::sync::{Channel, Message};

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The process to run.
    pub process: ProcessPlan,
    /// Return once it started instead of waiting for it.
    pub detach: bool,
    /// Where to write its pid.
    pub pid_file: Option<PathBuf>,
    /// Where to send the terminal's master when `process.terminal` is true.
    pub console_socket: Option<PathBuf>,
}

/// What `exec` ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Detached: the process's host pid.
    Started(i32),
    /// Waited: its exit status.
    Exited(sysproc::ExitStatus),
}

/// Runs `options.process` in container `id`. The caller must be a child subreaper when it does
/// not detach (the process is a grandchild behind a PID namespace fork).
pub fn exec(
    store: &StateStore,
    id: &str,
    options: &ExecOptions,
) -> Result<ExecOutcome, ContainerError> {
    let record = load(store, id)?;
    if !record.state.status.can_exec() {
        return Err(ContainerError::WrongStatus {
            verb: "exec in",
            id: id.to_string(),
            status: record.state.status,
        });
    }
    let init_pid = record.state.pid;
    // Open every namespace of the init that differs from ours before forking.
    let mut joins: Vec<(NamespaceKind, OwnedFd)> = Vec::new();
    for kind in NamespaceKind::ALL {
        let theirs = NamespaceId::of(Some(init_pid as u32), kind);
        let ours = NamespaceId::of(None, kind);
        if let (Ok(theirs), Ok(ours)) = (theirs, ours) {
            if theirs != ours {
                let path = PathBuf::from(format!("/proc/{init_pid}/ns/{}", kind.proc_name()));
                joins.push((kind, skiff_sys::namespace::open(&path)?));
            }
        }
    }
    let cgroup = cgroup_of(&record)?;
    let (mut channel, child_channel) = Channel::pair()?;
    let console = match (&options.console_socket, options.process.terminal) {
        (Some(path), true) => Some(skiff_sys::pty::connect_console_socket(path)?),
        (None, true) => {
            return Err(ContainerError::Init(
                "a terminal needs --console-socket".into(),
            ));
        }
        (_, false) => None,
    };
    let child = match sysproc::fork_single_threaded()? {
        Forked::Child => {
            drop(channel);
            run_child(&joins, child_channel, &options.process, console)
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_channel);
    drop(joins);
    // The process's pid once reported, and whether it (or the first child) reported a failure.
    let (mut pid, mut failed) = (None, false);
    let result = (|| -> Result<i32, ContainerError> {
        cgroup.add_process(child)?;
        channel.send(&Message::Go)?;
        // The pid (from the first child) and Ready (from the process itself, its child) may
        // arrive in either order.
        let (mut ready, mut listener) = (false, None);
        while pid.is_none() || !ready {
            match channel.recv()? {
                Message::InitPid { pid: p } => pid = Some(p),
                Message::Ready => ready = true,
                Message::SeccompListener { fd } => listener = Some(fd),
                Message::Failed { message } => {
                    failed = true;
                    return Err(ContainerError::Init(message));
                }
                other => {
                    return Err(ContainerError::Init(format!(
                        "unexpected message from exec: {other:?}"
                    )));
                }
            }
            // The listener may overtake the pid (they come from two processes).
            if let Some(p) = pid
                && let Some(fd) = listener.take()
            {
                hand_listener_to_agent(&mut channel, &options.process, &record, p, fd)?;
            }
        }
        pid.ok_or_else(|| ContainerError::Init("exec reported no pid".into()))
    })();
    // Behind a PID namespace the first child only forked the process and exits: reap it. In
    // the host's PID namespace (hostPID pods) the child is the process itself, waited below.
    if !matches!(&result, Ok(pid) if *pid == child) {
        let _ = sysproc::wait_for_exit(child);
    }
    if failed {
        // The process that failed is exiting: nothing of a failed exec may be left in the
        // container when we return (`ps` would list it). Its pid may still be unread; both
        // children close the channel when they exit, so reading to the end is bounded.
        while pid.is_none() {
            match channel.recv() {
                Ok(Message::InitPid { pid: p }) => pid = Some(p),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if let Some(process) = pid.filter(|p| *p != child) {
            // Ours to reap as the caller is a child subreaper; otherwise nothing to wait for.
            let _ = sysproc::wait_for_exit(process);
        }
    }
    let pid = result?;
    if let Some(pid_file) = &options.pid_file {
        std::fs::write(pid_file, pid.to_string()).map_err(|source| ContainerError::Write {
            path: pid_file.clone(),
            source,
        })?;
    }
    if options.detach {
        return Ok(ExecOutcome::Started(pid));
    }
    Ok(ExecOutcome::Exited(sysproc::wait_for_exit(pid)?))
}

/// Copies the process's seccomp listener, lets it go on and sends the listener with the
/// container's state (status `running`) to `linux.seccomp.listenerPath`.
fn hand_listener_to_agent(
    channel: &mut Channel,
    process: &ProcessPlan,
    record: &crate::state::Record,
    pid: i32,
    fd: i32,
) -> Result<(), ContainerError> {
    let target = process.seccomp_listener.as_ref().ok_or_else(|| {
        ContainerError::Init(
            "exec sent a seccomp listener but linux.seccomp has no listenerPath".into(),
        )
    })?;
    let listener = crate::listener::take(pid, fd)?;
    channel.send(&Message::SeccompDone)?;
    let state = serde_json::from_str(&super::create::hook_state(
        record,
        record.state.pid,
        "running",
    ))
    .unwrap_or_default();
    let message =
        crate::listener::process_state(&record.state.oci_version, pid, &target.metadata, state);
    crate::listener::send(target, &message, &listener)?;
    Ok(())
}

/// The forked child: joins the namespaces, forks into the PID namespace, and execs.
fn run_child(
    joins: &[(NamespaceKind, OwnedFd)],
    mut channel: Channel,
    process: &ProcessPlan,
    console: Option<std::os::unix::net::UnixStream>,
) -> ! {
    let result = (|| -> Result<std::convert::Infallible, InitError> {
        // Nothing in the container may open our /proc files while we are the runtime binary.
        sysproc::set_non_dumpable()?;
        channel.expect(&Message::Go, "go")?;
        // The mount namespace comes last, after the fork into the PID namespace: inside it only
        // the container's /proc is mounted, where a process outside its PID namespace has no
        // /proc/self.
        for (kind, fd) in joins
            .iter()
            .filter(|(kind, _)| *kind != NamespaceKind::Mount)
        {
            skiff_sys::namespace::join_fd(*kind, fd)?;
        }
        let in_pid_namespace = joins.iter().any(|(kind, _)| *kind == NamespaceKind::Pid);
        if in_pid_namespace {
            match sysproc::fork_single_threaded()? {
                Forked::Parent(grandchild) => {
                    channel.send(&Message::InitPid { pid: grandchild })?;
                    sysproc::exit_now(0);
                }
                Forked::Child => {}
            }
        } else {
            channel.send(&Message::InitPid {
                pid: std::process::id() as i32,
            })?;
        }
        for (kind, fd) in joins
            .iter()
            .filter(|(kind, _)| *kind == NamespaceKind::Mount)
        {
            skiff_sys::namespace::join_fd(*kind, fd)?;
        }
        sysproc::set_non_dumpable()?;
        let program = init::resolve_program(&process.args[0], &process.env)?;
        init::refuse_runtime_binary(&program)?;
        if let Some(console) = &console {
            sysproc::new_session()?;
            init::attach_terminal(console, process.console_size)?;
        }
        std::env::set_current_dir(&process.cwd).map_err(|source| InitError::Cwd {
            cwd: process.cwd.clone(),
            source,
        })?;
        skiff_sys::fd::cloexec_all_except(&[])?;
        if let Some(mask) = process.umask {
            sysproc::set_umask(mask);
        }
        for (name, soft, hard) in &process.rlimits {
            sysproc::set_rlimit(name, *soft, *hard)?;
        }
        sysproc::reset_signals()?;
        let listener = init::become_process(process)?;
        init::hand_over_listener(&mut channel, listener)?;
        channel.send(&Message::Ready)?;
        Err(sysproc::exec(&program, &process.args, &process.env).into())
    })();
    let Err(err) = result;
    let _ = channel.send(&Message::Failed {
        message: err.to_string(),
    });
    sysproc::exit_now(1)
}
