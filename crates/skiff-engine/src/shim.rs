//! The per-container monitor (`skiff shim`, hidden): one detached, single-threaded process per
//! running container.
//!
//! It starts in its own session, makes itself a child subreaper (the container's init, forked
//! behind a PID namespace, is re-parented to it), mounts the root filesystem and writes the
//! bundle (after filling the container's empty volumes from the image and resolving the
//! namespaces it shares with other containers to their inits' `/proc/PID/ns/*` files), then
//! creates and starts the container through `skiff-runtime` with the container's
//! stdout and stderr as pipes. One `poll(2)` loop over the two pipes and a signalfd
//! (SIGCHLD, SIGTERM) writes the output to the CRI log and reaps the init. The exit code and
//! finish time go to `state.json` (atomically); the restart policy may start the container
//! again after a back-off (100 ms doubling to 1 min, reset after 10 s of running). At the end
//! it deletes the runtime state, unmounts the root filesystem and exits; the record stays
//! until `rm` (or is removed at once with `--rm`).
//!
//! The process that started it reads one line per event from the monitor's stdout:
//! `listening` (with `--wait-attach`), `started PID`, `error CODE MESSAGE` or `exited CODE`.
//! Nothing here may start a thread: the runtime forks.
//!
//! The monitor also serves the container's attach socket ([`crate::attach`]) from the same
//! loop: output goes to attached clients as well as to the log, and clients' input goes to
//! the container's stdin, a pipe it keeps open when the container was created with `stdin`.
//! A `tty` container runs on a terminal whose master the runtime sends over a console socket
//! in the container's directory; its output is one stream, logged as stdout, and clients'
//! resizes apply to it. With `--wait-attach` the container starts only once a first client
//! said hello (a foreground `run -i/-t` sees every byte), or after 30 s without one.

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

use crate::attach::{Frame, Hub, Input, SocketPath, StdinSink};
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

/// One source of the container's output.
struct Source {
    file: File,
    stream: Stream,
    open: bool,
}

/// A container whose init runs.
struct Running {
    pid: i32,
    outputs: Vec<Source>,
    stdin: StdinSink,
    /// The terminal's master, with `tty`.
    master: Option<OwnedFd>,
}

/// What a run ended with.
struct Ended {
    code: i32,
    stop_requested: bool,
}

/// Runs the monitor of container `id` until the container ended for good. Call it in a fresh,
/// single-threaded process whose stdout is the report pipe and stderr its diagnostics file.
/// With `wait_attach` the container starts once a first client attached.
pub fn run(data_root: &Path, id: &str, wait_attach: bool) -> Result<()> {
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
    let mut hub = match Hub::bind(&dir.attach_socket(), config.stdin_once) {
        Ok(hub) => hub,
        Err(err) => return fail(&dir, &mut state, &mut report, &err),
    };
    if wait_attach {
        report.send("listening");
        hub.wait_first(REPORT_GRACE);
    }
    // Unregisters the container from the /proc server however the monitor ends.
    let _procfs_user = crate::procview::Registration { data_root, id };
    if let Err(err) = prepare(data_root, &dir, &config) {
        hub.finish_run(err.run_exit_code());
        return fail(&dir, &mut state, &mut report, &err);
    }
    let mut logs = LogWriter::open(&dir.log())?;
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        hub.new_run();
        if !first && !config.join_containers.is_empty() {
            // A container it joins may be restarting too: that is a failed run (exit code
            // 128, the error recorded) that the restart policy retries after its back-off.
            if let Err(err) = write_spec(data_root, &dir, &config) {
                hub.finish_run(err.run_exit_code());
                state.error = err.to_string();
                state.exit_code = 128;
                state.finished_at = crate::time::now_rfc3339();
                if dir.stop_marker().exists()
                    || !config.restart.should_restart(128, state.restart_count)
                {
                    break;
                }
                if !restart_after_backoff(&mut state, &dir, &signals, &mut backoff)? {
                    break;
                }
                continue;
            }
        }
        let running = match launch(&store, id, &dir, &io, &config, &hub) {
            Ok(running) => running,
            Err(err) => {
                hub.finish_run(err.run_exit_code());
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
        state.error.clear();
        state.pid = running.pid;
        state.started_at = crate::time::now_rfc3339();
        state.oom_killed = false;
        record::write_json(&dir.state(), &state)?;
        if first {
            report.send(&format!("started {}", running.pid));
            first = false;
        }
        let ended = monitor(running, &signals, &mut logs, &mut hub)?;
        hub.finish_run(ended.code);
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
        if !restart_after_backoff(&mut state, &dir, &signals, &mut backoff)? {
            break;
        }
    }
    drop(hub);
    let _ = std::fs::remove_file(dir.attach_socket());
    crate::rootfs::unmount(&dir.rootfs())?;
    state.status = Status::Exited;
    state.pid = 0;
    record::write_json(&dir.state(), &state)?;
    report.send(&format!("exited {}", state.exit_code));
    if config.auto_remove {
        report.wait_closed();
        crate::engine::remove_files(data_root, &config)?;
        // `--rm` takes the container's anonymous volumes along, as Docker's does.
        crate::engine::Engine::open(data_root)?.remove_anonymous_volumes(&config)?;
    }
    Ok(())
}

/// Records the container as restarting and waits out `backoff` (doubled for next time, up to
/// [`BACKOFF_MAX`]); `false` when a stop came meanwhile and the container must not restart.
fn restart_after_backoff(
    state: &mut State,
    dir: &ContainerDir,
    signals: &SignalFd,
    backoff: &mut Duration,
) -> Result<bool> {
    state.status = Status::Restarting;
    record::write_json(&dir.state(), state)?;
    if wait_backoff(signals, *backoff) || dir.stop_marker().exists() {
        return Ok(false);
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    state.restart_count += 1;
    Ok(true)
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
    crate::volume::fill_from_image(&rootfs, config)?;
    write_spec(data_root, dir, config)
}

/// Writes the bundle's `config.json` for the next run of the container: its namespaces of
/// other containers (`--network container:NAME`) are those containers' inits as they run
/// now, so a container restarted by its restart policy joins the current ones, as Docker's
/// does, not the namespaces of a process that has since gone.
fn write_spec(data_root: &Path, dir: &ContainerDir, config: &ContainerConfig) -> Result<()> {
    let rootfs = dir.rootfs();
    let joined = join_containers(data_root, config)?;
    let config = &joined;
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
    let view = crate::procview::prepare(data_root, config);
    let spec = crate::spec::build(config, &user, &files, &view)?;
    record::write_json(&dir.bundle().join("config.json"), &spec)
}

/// `config` with its `join_containers` resolved to the namespace files of those containers'
/// inits as they run now.
fn join_containers(data_root: &Path, config: &ContainerConfig) -> Result<ContainerConfig> {
    let mut out = config.clone();
    if config.join_containers.is_empty() {
        return Ok(out);
    }
    let engine = crate::engine::Engine::open(data_root)?;
    for join in &config.join_containers {
        let other = engine
            .load(&join.container)
            .map_err(|_| EngineError::StartFailed {
                message: format!("No such container: {}", join.container),
                exit_code: 125,
            })?;
        if other.status() != Status::Running || other.state.pid <= 0 {
            return Err(EngineError::StartFailed {
                message: format!(
                    "cannot join the {} namespace of a non running container: {} (start it first)",
                    join.kind, other.config.name
                ),
                exit_code: 125,
            });
        }
        let file = match join.kind.as_str() {
            "network" => "net",
            other => other,
        };
        out.join_namespaces.retain(|n| n.kind != join.kind);
        out.join_namespaces.push(record::NamespaceJoin {
            kind: join.kind.clone(),
            path: format!("/proc/{}/ns/{file}", other.state.pid),
        });
    }
    Ok(out)
}

/// Swaps the monitor's stdio for the container's pipes around `create`, and unblocks the
/// monitor's signals there (the init inherits the mask).
struct StdioSwap<'a> {
    devnull: &'a File,
    diagnostics: &'a OwnedFd,
    mask: &'a SigSet,
}

/// Creates and starts the container with fresh output pipes, its stdin (a pipe with
/// `stdin`, else `/dev/null`) and, with `tty`, its terminal.
fn launch(
    store: &StateStore,
    id: &str,
    dir: &ContainerDir,
    io: &StdioSwap<'_>,
    config: &ContainerConfig,
    hub: &Hub,
) -> Result<Running> {
    if store.exists(id) {
        let _ = skiff_runtime::container::delete(store, id, true);
    }
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"));
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let stdin_pipe = if config.stdin && !config.tty {
        Some(pipe()?)
    } else {
        None
    };
    let console_path = dir.console_socket();
    let console = if config.tty {
        Some(crate::attach::listen(&console_path)?)
    } else {
        None
    };
    let console_short = if config.tty {
        Some(SocketPath::new(&console_path)?)
    } else {
        None
    };
    let options = skiff_runtime::CreateOptions {
        console_socket: console_short.as_ref().map(|p| p.path().to_path_buf()),
        ..skiff_runtime::CreateOptions::default()
    };
    if let Some((read, _)) = &stdin_pipe {
        nix::unistd::dup2_stdin(read).map_err(sys("dup2 stdin"))?;
    }
    nix::unistd::dup2_stdout(&out_write).map_err(sys("dup2 stdout"))?;
    nix::unistd::dup2_stderr(&err_write).map_err(sys("dup2 stderr"))?;
    let _ = io.mask.thread_unblock();
    let created = skiff_runtime::container::create(store, id, &dir.bundle(), &options);
    let _ = io.mask.thread_block();
    nix::unistd::dup2_stdin(io.devnull).map_err(sys("dup2 stdin"))?;
    nix::unistd::dup2_stdout(io.devnull).map_err(sys("dup2 stdout"))?;
    nix::unistd::dup2_stderr(io.diagnostics).map_err(sys("dup2 stderr"))?;
    drop(out_write);
    drop(err_write);
    drop(console_short);
    let stdin_write = stdin_pipe.map(|(read, write)| {
        drop(read);
        write
    });
    let record = created.map_err(start_error)?;
    let master = match &console {
        Some(listener) => {
            let received = listener
                .accept()
                .map_err(EngineError::io("accept", &console_path))
                .and_then(|(socket, _)| Ok(skiff_sys::pty::recv_fd(&socket)?.0));
            let _ = std::fs::remove_file(&console_path);
            match received {
                Ok(master) => {
                    if let Some((cols, rows)) = hub.size() {
                        let _ = skiff_sys::pty::set_window_size(&master, cols, rows);
                    }
                    Some(master)
                }
                Err(err) => {
                    let _ = skiff_runtime::container::delete(store, id, true);
                    return Err(err);
                }
            }
        }
        None => None,
    };
    if let Err(err) = skiff_runtime::container::start(store, id) {
        let _ = skiff_runtime::container::delete(store, id, true);
        return Err(start_error(err));
    }
    let mut outputs = Vec::new();
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(EngineError::io("duplicate", "the terminal"))
    };
    let stdin = match &master {
        Some(master) => {
            outputs.push(Source {
                file: File::from(dup(master)?),
                stream: Stream::Stdout,
                open: true,
            });
            StdinSink::new(
                if config.stdin {
                    Some(File::from(dup(master)?))
                } else {
                    None
                },
                true,
            )
        }
        None => StdinSink::new(stdin_write.map(File::from), false),
    };
    outputs.push(Source {
        file: File::from(out_read),
        stream: Stream::Stdout,
        open: true,
    });
    outputs.push(Source {
        file: File::from(err_read),
        stream: Stream::Stderr,
        open: true,
    });
    Ok(Running {
        pid: record.state.pid,
        outputs,
        stdin,
        master,
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

/// Copies output to the log and the attached clients, clients' input to the container, and
/// reaps children until the init ended and its output is read.
fn monitor(
    mut running: Running,
    signals: &SignalFd,
    logs: &mut LogWriter,
    hub: &mut Hub,
) -> Result<Ended> {
    let mut code: Option<i32> = None;
    let mut stop_requested = false;
    let mut drain_until: Option<Instant> = None;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut inputs = Vec::new();
    // A SIGCHLD may have come and gone while signals were unblocked around create.
    reap(running.pid, &mut code);
    loop {
        if code.is_some() && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        if code.is_some() && running.outputs.iter().all(|o| !o.open) {
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
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(hub.listener(), PollFlags::POLLIN),
        ];
        let open: Vec<usize> = (0..running.outputs.len())
            .filter(|i| running.outputs[*i].open)
            .collect();
        for i in &open {
            fds.push(PollFd::new(
                running.outputs[*i].file.as_fd(),
                PollFlags::POLLIN,
            ));
        }
        let clients_at = fds.len();
        for (fd, flags) in hub.client_fds() {
            fds.push(PollFd::new(fd, flags));
        }
        let clients = fds.len() - clients_at;
        let stdin_at = running.stdin.waiting().map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(sys("poll")(errno)),
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        for (slot, i) in open.iter().enumerate() {
            if ready[slot + 2].is_empty() {
                continue;
            }
            let source = &mut running.outputs[*i];
            let stream = source.stream;
            match source.file.read(&mut buffer) {
                Ok(n) if n > 0 => {
                    let _ = logs.feed(stream, &buffer[..n]);
                    let data = buffer[..n].to_vec();
                    hub.broadcast(&match stream {
                        Stream::Stdout => Frame::Stdout(data),
                        Stream::Stderr => Frame::Stderr(data),
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                // End of output (a terminal's master reads EIO once the last process using
                // the terminal is gone).
                _ => {
                    source.open = false;
                    let others = running.outputs.iter().any(|o| o.open && o.stream == stream);
                    if !others {
                        let _ = logs.finish(stream);
                    }
                }
            }
        }
        for client in 0..clients {
            let revents = ready[clients_at + client];
            if !revents.is_empty() {
                hub.handle(client, revents, &mut inputs);
            }
        }
        hub.reap(&mut inputs);
        if !ready[1].is_empty() {
            hub.accept();
        }
        if stdin_at.is_some_and(|at| !ready[at].is_empty()) {
            running.stdin.flush();
        }
        for input in inputs.drain(..) {
            match input {
                Input::Data(data) => running.stdin.push(&data),
                Input::Close => running.stdin.close(),
                Input::Resize(cols, rows) => {
                    if let Some(master) = &running.master {
                        let _ = skiff_sys::pty::set_window_size(master, cols, rows);
                    }
                }
            }
        }
        if !ready[0].is_empty() {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    stop_requested = true;
                }
            }
            reap(running.pid, &mut code);
        }
    }
    for stream in [Stream::Stdout, Stream::Stderr] {
        if running.outputs.iter().any(|o| o.open && o.stream == stream) {
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
