//! The per-container monitor (`skiff shim`, hidden): one detached, single-threaded process per
//! running container.
//!
//! It starts in its own session, makes itself a child subreaper (the container's init, forked
//! behind a PID namespace, is re-parented to it), mounts the root filesystem and writes the
//! bundle, then creates and starts the container through `skiff-runtime` with the container's
//! stdout and stderr as pipes. One `poll(2)` loop over the two pipes and a signalfd
//! (SIGCHLD, SIGTERM) writes the output to the CRI log and reaps the init. The exit code and
//! finish time go to `state.json` (atomically); the restart policy may start the container
//! again after a back-off (100 ms doubling to 1 min, reset after 10 s of running). At the end
//! it deletes the runtime state, unmounts the root filesystem and exits; the record stays
//! until `rm` (or is removed at once with `--rm`).
//!
//! The process that started it reads one line per event from the monitor's stdout:
//! `started PID`, `error CODE MESSAGE` or `exited CODE`. Nothing here may start a thread: the
//! runtime forks.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use skiff_runtime::StateStore;

use crate::layout::{self, ContainerDir};
use crate::logs::{LogWriter, Stream};
use crate::record::{self, ContainerConfig, State, Status};
use crate::{EngineError, Result};

/// How long output is still read after the init exited.
const DRAIN: Duration = Duration::from_secs(2);
/// First restart delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long an `--rm` monitor waits for the foreground CLI to finish reading.
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// The line protocol to the process that started the monitor.
struct Report {
    pipe: Option<File>,
}

impl Report {
    fn send(&mut self, line: &str) {
        if let Some(pipe) = &mut self.pipe {
            if pipe.write_all(format!("{line}\n").as_bytes()).is_err() {
                // The reader is gone (a detached `run`): nobody to tell any more.
                self.pipe = None;
            }
        }
    }

    /// Waits until the reader closed its end (or the grace period ended).
    fn wait_closed(&mut self) {
        let Some(pipe) = self.pipe.take() else {
            return;
        };
        let deadline = Instant::now() + REPORT_GRACE;
        while Instant::now() < deadline {
            let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::empty())];
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {
                    if fds[0]
                        .revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
                    {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
}

/// A container whose init runs.
struct Running {
    pid: i32,
    stdout: File,
    stderr: File,
}

/// What a run ended with.
struct Ended {
    code: i32,
    stop_requested: bool,
}

/// Runs the monitor of container `id` until the container ended for good. Call it in a fresh,
/// single-threaded process whose stdout is the report pipe and stderr its diagnostics file.
pub fn run(data_root: &Path, id: &str) -> Result<()> {
    let _ = nix::unistd::setsid();
    skiff_sys::set_child_subreaper(true)?;
    let stdout_copy = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(EngineError::io("duplicate", "stdout"))?;
    let diagnostics = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(EngineError::io("duplicate", "stderr"))?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(EngineError::io("open", "/dev/null"))?;
    nix::unistd::dup2_stdout(&devnull).map_err(sys("dup2 /dev/null to stdout"))?;
    let mut report = Report {
        pipe: Some(File::from(stdout_copy)),
    };

    let dir = ContainerDir::new(data_root, id);
    let config: ContainerConfig = record::read_json(&dir.config())?;
    let mut state: State = record::read_json(&dir.state()).unwrap_or_else(|_| State::created());
    let me = std::process::id() as i32;
    state.shim_pid = me;
    state.shim_start_time = skiff_sys::fifo::process_start_time(me).unwrap_or(0);
    state.error.clear();

    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    mask.thread_block().map_err(sys("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;

    let store = StateStore::new(layout::runtime_root(data_root));
    let io = StdioSwap {
        devnull: &devnull,
        diagnostics: &diagnostics,
        mask: &mask,
    };
    if let Err(err) = prepare(data_root, &dir, &config) {
        return fail(&dir, &mut state, &mut report, &err);
    }
    let mut logs = LogWriter::open(&dir.log())?;
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        let running = match launch(&store, id, &dir, &io) {
            Ok(running) => running,
            Err(err) => {
                let _ = crate::rootfs::unmount(&dir.rootfs());
                if first {
                    return fail(&dir, &mut state, &mut report, &err);
                }
                state.error = err.to_string();
                state.exit_code = 128;
                break;
            }
        };
        let started = Instant::now();
        state.status = Status::Running;
        state.pid = running.pid;
        state.started_at = crate::time::now_rfc3339();
        state.oom_killed = false;
        record::write_json(&dir.state(), &state)?;
        if first {
            report.send(&format!("started {}", running.pid));
            first = false;
        }
        let ended = monitor(running, &signals, &mut logs)?;
        state.oom_killed = ended.code == 137 && oom_killed(&store, id);
        let _ = skiff_runtime::container::delete(&store, id, true);
        state.pid = 0;
        state.exit_code = ended.code;
        state.finished_at = crate::time::now_rfc3339();
        let stop = ended.stop_requested || dir.stop_marker().exists();
        if stop
            || !config
                .restart
                .should_restart(ended.code, state.restart_count)
        {
            break;
        }
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        state.status = Status::Restarting;
        record::write_json(&dir.state(), &state)?;
        if wait_backoff(&signals, backoff) || dir.stop_marker().exists() {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        state.restart_count += 1;
    }
    crate::rootfs::unmount(&dir.rootfs())?;
    state.status = Status::Exited;
    state.pid = 0;
    record::write_json(&dir.state(), &state)?;
    report.send(&format!("exited {}", state.exit_code));
    if config.auto_remove {
        report.wait_closed();
        crate::engine::remove_files(data_root, &config)?;
    }
    Ok(())
}

fn sys(op: &'static str) -> impl Fn(nix::errno::Errno) -> EngineError {
    move |errno| EngineError::Shim(format!("{op}: {errno}"))
}

/// Records a failure to start and tells the waiting CLI.
fn fail(
    dir: &ContainerDir,
    state: &mut State,
    report: &mut Report,
    err: &EngineError,
) -> Result<()> {
    let _ = crate::rootfs::unmount(&dir.rootfs());
    let code = err.run_exit_code();
    state.status = Status::Exited;
    state.pid = 0;
    state.exit_code = code;
    state.error = err.to_string();
    state.finished_at = crate::time::now_rfc3339();
    record::write_json(&dir.state(), state)?;
    report.send(&format!(
        "error {code} {}",
        err.to_string().replace('\n', " ")
    ));
    eprintln!("{err}");
    Ok(())
}

/// Mounts the root filesystem and writes the bundle's `config.json`.
fn prepare(data_root: &Path, dir: &ContainerDir, config: &ContainerConfig) -> Result<()> {
    let mounts = if config.rootfs_dir.is_empty() {
        let images = skiff_image::ImageStore::open(data_root)?;
        let chain = config
            .chain
            .iter()
            .map(|c| skiff_image::Digest::parse(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mounts = images.snapshots().prepare_rootfs(&chain, dir.path())?;
        crate::rootfs::with_init_layer(mounts, &dir.init_layer())
    } else {
        vec![skiff_image::Mount {
            kind: "bind".into(),
            source: config.rootfs_dir.clone(),
            options: vec!["rbind".into()],
        }]
    };
    let rootfs = dir.rootfs();
    crate::rootfs::mount(&mounts, &rootfs)?;
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_default();
    let user = crate::users::resolve(&config.user, &read("etc/passwd"), &read("etc/group"))
        .map_err(|e| EngineError::StartFailed {
            message: e.to_string(),
            exit_code: 125,
        })?;
    if !config.working_dir.is_empty() {
        // Docker creates a missing working directory.
        let cwd = rootfs.join(config.working_dir.trim_start_matches('/'));
        if !cwd.exists() && !config.read_only {
            std::fs::create_dir_all(&cwd).map_err(EngineError::io("create dir", &cwd))?;
        }
    }
    let hostname = dir.hostname_file();
    let hosts = dir.hosts_file();
    let resolv = dir.resolv_conf_file();
    let files = crate::spec::InitFiles {
        hostname: &hostname,
        hosts: &hosts,
        resolv_conf: &resolv,
    };
    let spec = crate::spec::build(config, &user, &files)?;
    record::write_json(&dir.bundle().join("config.json"), &spec)
}

/// Swaps the monitor's stdio for the container's pipes around `create`, and unblocks the
/// monitor's signals there (the init inherits the mask).
struct StdioSwap<'a> {
    devnull: &'a File,
    diagnostics: &'a OwnedFd,
    mask: &'a SigSet,
}

/// Creates and starts the container with fresh output pipes.
fn launch(store: &StateStore, id: &str, dir: &ContainerDir, io: &StdioSwap<'_>) -> Result<Running> {
    if store.exists(id) {
        let _ = skiff_runtime::container::delete(store, id, true);
    }
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"));
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    nix::unistd::dup2_stdout(&out_write).map_err(sys("dup2 stdout"))?;
    nix::unistd::dup2_stderr(&err_write).map_err(sys("dup2 stderr"))?;
    let _ = io.mask.thread_unblock();
    let created = skiff_runtime::container::create(
        store,
        id,
        &dir.bundle(),
        &skiff_runtime::CreateOptions::default(),
    );
    let _ = io.mask.thread_block();
    nix::unistd::dup2_stdout(io.devnull).map_err(sys("dup2 stdout"))?;
    nix::unistd::dup2_stderr(io.diagnostics).map_err(sys("dup2 stderr"))?;
    drop(out_write);
    drop(err_write);
    let record = created.map_err(start_error)?;
    if let Err(err) = skiff_runtime::container::start(store, id) {
        let _ = skiff_runtime::container::delete(store, id, true);
        return Err(start_error(err));
    }
    Ok(Running {
        pid: record.state.pid,
        stdout: File::from(out_read),
        stderr: File::from(err_read),
    })
}

/// The runtime's failure as Docker reports it, with Docker's exit code.
fn start_error(err: skiff_runtime::ContainerError) -> EngineError {
    let message = err.to_string();
    let exit_code = if message.contains("not found") {
        127
    } else if message.contains("ermission denied") {
        126
    } else {
        125
    };
    EngineError::StartFailed {
        message: format!("failed to create task for container: {message}"),
        exit_code,
    }
}

/// Copies output to the log and reaps children until the init ended and its output is read.
fn monitor(mut running: Running, signals: &SignalFd, logs: &mut LogWriter) -> Result<Ended> {
    let mut open = [true, true];
    let mut code: Option<i32> = None;
    let mut stop_requested = false;
    let mut drain_until: Option<Instant> = None;
    let mut buffer = vec![0u8; 64 * 1024];
    // A SIGCHLD may have come and gone while signals were unblocked around create.
    reap(running.pid, &mut code);
    loop {
        if code.is_some() && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        if code.is_some() && !open[0] && !open[1] {
            break;
        }
        let timeout = match drain_until {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let streams: Vec<(usize, Stream)> = [(0, Stream::Stdout), (1, Stream::Stderr)]
            .into_iter()
            .filter(|(i, _)| open[*i])
            .collect();
        for (i, _) in &streams {
            let file = if *i == 0 {
                &running.stdout
            } else {
                &running.stderr
            };
            fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(sys("poll")(errno)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (slot, (i, stream)) in streams.iter().enumerate() {
            if !ready[slot + 1] {
                continue;
            }
            let file = if *i == 0 {
                &mut running.stdout
            } else {
                &mut running.stderr
            };
            match file.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    open[*i] = false;
                    let _ = logs.finish(*stream);
                }
                Ok(n) => {
                    let _ = logs.feed(*stream, &buffer[..n]);
                }
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    stop_requested = true;
                }
            }
            reap(running.pid, &mut code);
        }
    }
    for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
        if open[i] {
            let _ = logs.finish(stream);
        }
    }
    Ok(Ended {
        code: code.unwrap_or(255),
        stop_requested,
    })
}

/// Reaps every ended child; records the init's exit code.
fn reap(init: i32, code: &mut Option<i32>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if pid.as_raw() == init => *code = Some(status),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid.as_raw() == init => {
                *code = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Waits out a restart delay; true when a stop was asked for meanwhile.
fn wait_backoff(signals: &SignalFd, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    return true;
                }
            }
        }
    }
}

/// Whether the container's memory limit killed a process (read before the cgroup goes).
fn oom_killed(store: &StateStore, id: &str) -> bool {
    use skiff_cgroups::CgroupManager;
    let Ok(record) = store.load(id) else {
        return false;
    };
    let Ok(mounts) = skiff_cgroups::Mounts::of_this_process() else {
        return false;
    };
    skiff_cgroups::Manager::new(&mounts, &record.cgroup_path)
        .and_then(|m| m.stats())
        .is_ok_and(|s| s.memory.oom_kills.unwrap_or(0) > 0)
}
