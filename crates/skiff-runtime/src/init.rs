//! The container's init: the forked child of `create` that enters or creates the namespaces,
//! sets up the root filesystem, reports ready, waits for `start` and execs the user program.
//!
//! Stage one joins and creates namespaces; when the container has a PID namespace it forks
//! stage two, which is pid 1 inside, and exits. Everything runs in a freshly forked,
//! single-threaded child; failures before `Ready` go back to `create` as a message.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use skiff_sys::process::{self as sysproc, Forked};
use skiff_sys::{NamespaceKind, SysError, namespace};

use crate::plan::Plan;
use crate::rootfs::{self, RootfsError};
use crate::sync::{Channel, Message, SyncError};

/// Why the init could not get the container ready.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Setting up the root filesystem failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Talking to `create` failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The program to run is not in the container.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotFound {
        /// `process.args[0]`.
        program: String,
    },
    /// The working directory is missing or not a directory.
    #[error("chdir to cwd {cwd:?} set in config.json: {source}")]
    Cwd {
        /// `process.cwd`.
        cwd: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// The program is the runtime itself (the CVE-2019-5736 pattern).
    #[error(
        "refusing to exec {program:?}: it would run the runtime binary inside the container (CVE-2019-5736)"
    )]
    RuntimeBinary {
        /// The program.
        program: String,
    },
    /// Writing a sysctl or oom_score_adj failed.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What the init needs besides the plan.
#[derive(Debug)]
pub struct InitContext {
    /// The init's end of the channel to `create`.
    pub channel: Channel,
    /// A path handle on the exec FIFO.
    pub fifo: OwnedFd,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Whether `Ready` went out: after it nobody reads the channel, so errors go to stderr.
    pub ready_sent: bool,
    /// The connected console socket, when the process gets a terminal.
    pub console: Option<std::os::unix::net::UnixStream>,
    /// How many descriptors after stdio (3, 4, ...) the process inherits (`--preserve-fds`).
    pub preserve_fds: u32,
}

/// Runs the init in the freshly forked child. Never returns: it execs the user program or
/// exits non-zero.
pub fn run(plan: &Plan, mut ctx: InitContext) -> ! {
    let result = stage_one(plan, &mut ctx);
    match result {
        Ok(never) => match never {},
        Err(err) => {
            if ctx.ready_sent {
                eprintln!("skiff-runc init: {err}");
            } else {
                let _ = ctx.channel.send(&Message::Failed {
                    message: err.to_string(),
                });
            }
            sysproc::exit_now(1)
        }
    }
}

enum Never {}

fn stage_one(plan: &Plan, ctx: &mut InitContext) -> Result<Never, InitError> {
    ctx.channel.expect(&Message::Go, "go")?;
    for (kind, path) in &plan.join_namespaces {
        namespace::join(*kind, path)?;
    }
    let mut new = plan.new_namespaces.clone();
    if new.contains(&NamespaceKind::User) {
        namespace::unshare(&[NamespaceKind::User])?;
        ctx.channel.send(&Message::NeedIdMaps)?;
        ctx.channel
            .expect(&Message::IdMapsWritten, "id maps written")?;
        sysproc::set_identity(0, 0, &[])?;
        new.retain(|k| *k != NamespaceKind::User);
    }
    if !new.is_empty() {
        namespace::unshare(&new)?;
    }
    if plan.needs_pid_fork() {
        match sysproc::fork_single_threaded()? {
            Forked::Parent(child) => {
                ctx.channel.send(&Message::InitPid { pid: child })?;
                sysproc::exit_now(0);
            }
            Forked::Child => {}
        }
    } else {
        ctx.channel.send(&Message::InitPid {
            pid: std::process::id() as i32,
        })?;
    }
    stage_two(plan, ctx)
}

fn stage_two(plan: &Plan, ctx: &mut InitContext) -> Result<Never, InitError> {
    sysproc::new_session()?;
    let hooks = &plan.hooks;
    let init_hooks = !hooks.create_container.is_empty() || !hooks.start_container.is_empty();
    let mut hook_state = String::new();
    if plan.has_own_mount_namespace() {
        rootfs::prepare(plan)?;
    }
    if hooks.needs_create_round_trip() || init_hooks {
        ctx.channel.send(&Message::NeedHooks)?;
        match ctx.channel.recv()? {
            Message::HooksDone { state } => hook_state = state,
            got => {
                return Err(SyncError::Unexpected {
                    expected: "hooks done",
                    got,
                }
                .into());
            }
        }
        crate::hooks::run("createContainer", &hooks.create_container, &hook_state)?;
    }
    if plan.has_own_mount_namespace() {
        rootfs::enter(plan, ctx.no_pivot)?;
    }
    if let Some(hostname) = &plan.hostname {
        sysproc::set_hostname(hostname)?;
    }
    if let Some(domainname) = &plan.domainname {
        sysproc::set_domainname(domainname)?;
    }
    for (key, value) in &plan.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| InitError::Write { path, source })?;
    }
    if let Some(adj) = plan.process.oom_score_adj {
        let path = PathBuf::from("/proc/self/oom_score_adj");
        std::fs::write(&path, adj.to_string())
            .map_err(|source| InitError::Write { path, source })?;
    }
    if plan.has_own_mount_namespace() {
        rootfs::finish(plan)?;
    }
    let program = resolve_program(&plan.process.args[0], &plan.process.env)?;
    refuse_runtime_binary(&program)?;
    if let Some(console) = ctx.console.take() {
        attach_terminal(&console, plan.process.console_size)?;
    }
    let cwd = &plan.process.cwd;
    std::env::set_current_dir(cwd).map_err(|source| InitError::Cwd {
        cwd: cwd.clone(),
        source,
    })?;
    // A cwd reached through a leaked host descriptor would read as "(unreachable)/...".
    match std::env::current_dir() {
        Ok(now) if now.is_absolute() => {}
        _ => {
            return Err(InitError::Cwd {
                cwd: cwd.clone(),
                source: std::io::Error::other(
                    "the working directory is outside the container's root",
                ),
            });
        }
    }
    // Nothing of the runtime's may reach the user program: every descriptor above stdio
    // (the channel and the FIFO handle included) closes on exec.
    let keep: Vec<i32> = (3..3 + ctx.preserve_fds as i32).collect();
    for fd in &keep {
        skiff_sys::fd::keep_on_exec(*fd)?;
    }
    skiff_sys::fd::cloexec_all_except(&keep)?;

    // A filter with a listener is loaded before `Ready`, while `create` still reads the
    // channel and can take the listener to the agent (runc's order): the identity, umask and
    // rlimits come first then, and the startContainer hooks run under them.
    let early = plan.process.seccomp_listener.is_some();
    if early {
        set_limits(&plan.process)?;
        sysproc::reset_signals()?;
        let listener = become_process(&plan.process)?;
        hand_over_listener(&mut ctx.channel, listener)?;
    }
    ctx.channel.send(&Message::Ready)?;
    ctx.ready_sent = true;
    skiff_sys::fifo::signal_through_handle(&ctx.fifo)?;

    if !early {
        set_limits(&plan.process)?;
    }
    crate::hooks::run("startContainer", &hooks.start_container, &hook_state)?;
    if !early {
        sysproc::reset_signals()?;
        become_process(&plan.process)?;
    }
    Err(sysproc::exec(&program, &plan.process.args, &plan.process.env).into())
}

/// Sets the process's umask and rlimits.
fn set_limits(p: &crate::plan::ProcessPlan) -> Result<(), InitError> {
    if let Some(mask) = p.umask {
        sysproc::set_umask(mask);
    }
    for (name, soft, hard) in &p.rlimits {
        sysproc::set_rlimit(name, *soft, *hard)?;
    }
    Ok(())
}

/// Reports a seccomp listener to the runtime and waits until it holds a copy (nothing when
/// the filter has none). Shared by the init and `exec`.
pub fn hand_over_listener(
    channel: &mut Channel,
    listener: Option<OwnedFd>,
) -> Result<(), InitError> {
    use std::os::fd::AsRawFd;
    let Some(listener) = listener else {
        return Ok(());
    };
    channel.send(&Message::SeccompListener {
        fd: listener.as_raw_fd(),
    })?;
    channel.expect(&Message::SeccompDone, "seccomp done")?;
    drop(listener);
    Ok(())
}

/// Opens a pty in the container's `/dev/pts`, sends the master over the console socket and
/// makes the slave this process's terminal and stdio.
pub fn attach_terminal(
    console: &std::os::unix::net::UnixStream,
    size: Option<(u16, u16)>,
) -> Result<(), InitError> {
    let (master, slave) = skiff_sys::pty::open_pty()?;
    if let Some((width, height)) = size {
        skiff_sys::pty::set_window_size(&slave, width, height)?;
    }
    skiff_sys::pty::send_fd(console, &master, "/dev/ptmx")?;
    drop(master);
    skiff_sys::pty::become_terminal(&slave)?;
    Ok(())
}

/// Takes on the process's identity: bounding set, ids, capability sets, `no_new_privs`. Shared
/// by the init and `exec`. Returns the seccomp listener when the filter has `SCMP_ACT_NOTIFY`
/// rules.
pub fn become_process(p: &crate::plan::ProcessPlan) -> Result<Option<OwnedFd>, InitError> {
    let program = |f: &crate::seccomp::Filter| -> Vec<skiff_sys::seccomp::BpfInstruction> {
        f.instructions
            .iter()
            .map(|i| (i.code, i.jt, i.jf, i.k))
            .collect()
    };
    // Without no_new_privs the kernel takes a filter only from a process with CAP_SYS_ADMIN:
    // load it now, while the process still has it (the filter allows what follows).
    let load = |f: &crate::seccomp::Filter| -> Result<Option<OwnedFd>, InitError> {
        if f.notify {
            Ok(Some(skiff_sys::seccomp::load_with_listener(&program(f))?))
        } else {
            skiff_sys::seccomp::load(&program(f))?;
            Ok(None)
        }
    };
    let mut listener = None;
    if let (Some(filter), false) = (&p.seccomp, p.no_new_privileges) {
        listener = load(filter)?;
    }
    if let Some(caps) = &p.capabilities {
        skiff_sys::capabilities::apply_bounding(caps)?;
        sysproc::set_keep_capabilities(true)?;
    }
    sysproc::set_identity(p.uid, p.gid, &p.additional_gids)?;
    if let Some(caps) = &p.capabilities {
        sysproc::set_keep_capabilities(false)?;
        skiff_sys::capabilities::apply_sets(caps)?;
    }
    if p.no_new_privileges {
        sysproc::set_no_new_privileges()?;
        if let Some(filter) = &p.seccomp {
            listener = load(filter)?;
        }
    }
    Ok(listener)
}

/// Refuses to exec anything that would load the runtime's own binary inside the container:
/// the program itself, a `#!` interpreter chain, or an ELF interpreter resolving to the file
/// behind `/proc/self/exe` (CVE-2019-5736: a container that gets the runtime binary executed
/// as one of its processes can reopen `/proc/PID/exe` for writing once it exits).
pub fn refuse_runtime_binary(program: &str) -> Result<(), InitError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/self/exe") else {
        return Ok(());
    };
    let is_runtime = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.dev() == own.dev() && m.ino() == own.ino())
    };
    let mut current = PathBuf::from(program);
    // The kernel follows at most a few levels of interpreters; so do we, and one more.
    for _ in 0..6 {
        if is_runtime(&current) {
            return Err(InitError::RuntimeBinary {
                program: program.to_string(),
            });
        }
        let Ok(head) = read_head(&current) else {
            return Ok(());
        };
        let next = if let Some(rest) = head.strip_prefix(b"#!") {
            let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
            let text = String::from_utf8_lossy(line);
            match text.split_whitespace().next() {
                Some(interpreter) => PathBuf::from(interpreter),
                None => return Ok(()),
            }
        } else if let Some(interpreter) = elf_interpreter(&current) {
            if is_runtime(&interpreter) {
                return Err(InitError::RuntimeBinary {
                    program: program.to_string(),
                });
            }
            return Ok(());
        } else {
            return Ok(());
        };
        current = next;
    }
    Ok(())
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = vec![0u8; 256];
    let n = std::fs::File::open(path)?.read(&mut head)?;
    head.truncate(n);
    Ok(head)
}

/// The PT_INTERP path of a 64-bit little-endian ELF, if it has one.
fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let u64_at = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_le_bytes)
    };
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20)?,
        u16_at(&header, 0x36),
        u16_at(&header, 0x38),
    );
    for i in 0..phnum.min(64) {
        let mut ph = [0u8; 56];
        file.seek(SeekFrom::Start(phoff + i * phentsize)).ok()?;
        file.read_exact(&mut ph).ok()?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            let (offset, size) = (u64_at(&ph, 8)?, u64_at(&ph, 32)?);
            let mut name = vec![0u8; usize::try_from(size.min(4096)).ok()?];
            file.seek(SeekFrom::Start(offset)).ok()?;
            file.read_exact(&mut name).ok()?;
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            return Some(PathBuf::from(
                String::from_utf8_lossy(&name[..end]).into_owned(),
            ));
        }
    }
    None
}

/// Finds `program` the way `execvp` would, on the `PATH` of the container's environment
/// (resolved in the current mount namespace: call it inside the container).
pub fn resolve_program(program: &str, env: &[String]) -> Result<String, InitError> {
    if program.contains('/') {
        return if is_executable(Path::new(program)) {
            Ok(program.to_string())
        } else {
            Err(InitError::NotFound {
                program: program.to_string(),
            })
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .map(|found| found.to_string_lossy().into_owned())
        .ok_or_else(|| InitError::NotFound {
            program: program.to_string(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_container_path() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(resolve_program("sh", &env).unwrap(), "/bin/sh");
        assert!(matches!(
            resolve_program("no-such-program", &env),
            Err(InitError::NotFound { .. })
        ));
        assert_eq!(resolve_program("/bin/sh", &[]).unwrap(), "/bin/sh");
    }

    #[test]
    fn the_runtime_binary_is_refused_directly_through_scripts_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("evil");
        std::fs::write(&script, "#!/proc/self/exe\n").unwrap();
        let chained = dir.path().join("chained");
        std::fs::write(&chained, format!("#!{}\n", script.display())).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/proc/self/exe", &link).unwrap();
        for program in [
            "/proc/self/exe",
            script.to_str().unwrap(),
            chained.to_str().unwrap(),
            link.to_str().unwrap(),
        ] {
            assert!(
                matches!(
                    refuse_runtime_binary(program),
                    Err(InitError::RuntimeBinary { .. })
                ),
                "{program}"
            );
        }
        assert!(refuse_runtime_binary("/bin/sh").is_ok());
        let interpreter = elf_interpreter(Path::new("/bin/sh")).unwrap();
        assert!(
            interpreter.to_string_lossy().contains("ld-linux"),
            "{}",
            interpreter.display()
        );
    }
}
