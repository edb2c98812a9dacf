//! The server (`skiff procfs serve --data-root DATA`, hidden): one per data root.
//!
//! It takes `server.lock` (a second server started meanwhile exits at once, or waits for a
//! leaving one), clears a stale mount a killed predecessor left, mounts the filesystem at
//! `DATA/procfs/mnt` (read-only, `allow_other`, nosuid, nodev, noexec) and serves it from one
//! FUSE thread, with a second thread that samples the load of the cgroups reading
//! `/proc/loadavg`, and the seccomp agent's threads (`DATA/procfs/seccomp.sock`, which
//! answer the containers' `sysinfo(2)`). The main thread waits on SIGTERM/SIGINT/SIGHUP and checks the users once
//! a second; when none has been alive for the idle time (`--idle`, default
//! [`DEFAULT_IDLE`]), on a signal, or once its directory was removed, it unmounts and exits.
//! A container started before that keeps its monitor registered, so the server never leaves
//! under a running container.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use skiff_cgroups::Mounts;

use crate::client::{is_served, live_users, lock};
use crate::fs::{Loads, ProcFs};
use crate::times::SAMPLE_EVERY;
use crate::{ProcfsDir, ProcfsError, Result};

/// How long the server stays without a live user before it leaves.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

/// How long a new server waits for a leaving one's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A cgroup's load is forgotten this long after its last read.
const LOAD_FORGET: Duration = Duration::from_secs(600);

/// Serves the files of `data_root` (made absolute) until idle for `idle` or signalled. Returns at once when
/// another server already serves this data root.
pub fn serve(data_root: &Path, idle: Duration) -> Result<()> {
    // Its own session, and no hold on the directory it was started from.
    let data_root =
        std::path::absolute(data_root).map_err(ProcfsError::io("resolve", data_root))?;
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let dir = ProcfsDir::new(&data_root);
    std::fs::create_dir_all(dir.users()).map_err(ProcfsError::io("create dir", dir.users()))?;
    let Some(_server) = take_server_lock(&dir)? else {
        tracing::info!(data_root = %data_root.display(), "another server serves this data root");
        return Ok(());
    };
    // A monitor blocks these signals and its children inherit the mask: take them through a
    // signalfd, blocked before any thread starts so that every thread inherits the block.
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    SigSet::all()
        .thread_unblock()
        .map_err(|source| ProcfsError::Sys {
            op: "unblock signals",
            source,
        })?;
    mask.thread_block().map_err(|source| ProcfsError::Sys {
        op: "block signals",
        source,
    })?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|source| ProcfsError::Sys {
            op: "signalfd",
            source,
        })?;

    let mount_point = dir.mount_point();
    std::fs::create_dir_all(&mount_point).map_err(ProcfsError::io("create dir", &mount_point))?;
    // A predecessor killed without unmounting leaves a dead mount: detach it.
    let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH);

    let mounts = Mounts::of_this_process()?;
    let loads: Loads = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // The agent's socket exists before the mount: a container that finds the mount finds it.
    let _agent = crate::agent::start(&dir, mounts.clone(), loads.clone(), stop.clone())?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("skiff-procfs".into()),
        MountOption::Subtype("skiff-procfs".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    config.acl = SessionACL::All;
    // Two readers at a time: one container's slow read (many threads to count) does not
    // hold up the others.
    config.n_threads = Some(2);
    let session =
        match fuser::spawn_mount(ProcFs::new(mounts, loads.clone()), &mount_point, &config) {
            Ok(session) => session,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = std::fs::remove_file(dir.agent_socket());
                return Err(ProcfsError::io("mount FUSE at", &mount_point)(e));
            }
        };
    let pid_file = dir.pid_file();
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(ProcfsError::io("write", &pid_file))?;
    tracing::info!(mount_point = %mount_point.display(), "serving container-sized /proc files");

    let sampler = {
        let (loads, stop) = (loads.clone(), stop.clone());
        std::thread::Builder::new()
            .name("loadavg".into())
            .spawn(move || sample_loads(&loads, &stop))
            .map_err(ProcfsError::io("start the load sampler", &mount_point))?
    };

    let mut last_used = Instant::now();
    let reason = loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        if let Ok(Some(info)) = signals.read_signal() {
            break format!("signal {}", info.ssi_signo);
        }
        if session.guard.is_finished() {
            break "the mount went away".to_string();
        }
        if !dir.users().exists() {
            break "the data root went away".to_string();
        }
        // Decide under the users' lock, so that no user registers while the server leaves.
        let users = lock(&dir.users_lock(), FlockArg::LockExclusive)?;
        if live_users(&dir) > 0 {
            last_used = Instant::now();
        } else if last_used.elapsed() >= idle {
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(dir.agent_socket());
            let result = session.umount_and_join();
            drop(users);
            stop.store(true, Ordering::Relaxed);
            let _ = sampler.join();
            tracing::info!(?result, "idle: unmounted");
            return Ok(());
        }
        drop(users);
    };
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(dir.agent_socket());
    let result = session.umount_and_join();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    tracing::info!(?result, %reason, "unmounted");
    Ok(())
}

/// Takes `server.lock`. `None` when a live server holds it; a server that is leaving (lock
/// held, mount gone) is waited for.
fn take_server_lock(dir: &ProcfsDir) -> Result<Option<Flock<std::fs::File>>> {
    let path = dir.server_lock();
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ProcfsError::io("open", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let data_root = dir.path().parent().unwrap_or(dir.path());
                if is_served(data_root) || Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, source)) => {
                return Err(ProcfsError::Sys {
                    op: "flock server.lock",
                    source,
                });
            }
        }
    }
}

/// Every [`SAMPLE_EVERY`], folds each known cgroup's active thread count into its load.
fn sample_loads(loads: &Loads, stop: &AtomicBool) {
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < SAMPLE_EVERY {
            continue;
        }
        let elapsed = last.elapsed();
        last = Instant::now();
        let keys: Vec<_> = loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for key in keys {
            let gone = !key.exists();
            let tasks = crate::figures::tasks_in(&key);
            let mut loads = loads.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = loads.get_mut(&key) {
                if gone || entry.1.elapsed() > LOAD_FORGET {
                    loads.remove(&key);
                } else {
                    entry.0.sample(tasks.running + tasks.blocked, elapsed);
                }
            }
        }
    }
}
