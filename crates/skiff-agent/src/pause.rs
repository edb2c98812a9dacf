//! The pod sandbox's infra process (`skiff pause`, hidden) and the tiny root filesystem it
//! runs in: no image is pulled. The agent writes `DATA/agent/pause/rootfs` once per binary:
//! a copy of the `skiff` binary (debug info stripped when `strip` exists; a copy, because the
//! runtime refuses to execute its own binary inside a container), the shared libraries it
//! loads, and the mount points and `/etc` files the runtime binds over.

use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::AgentError;

/// Where the binary sits inside the sandbox's root filesystem.
pub const PAUSE_PATH: &str = "/pause";

/// Runs the infra process: blocks every signal it handles, reaps children on SIGCHLD and
/// returns on SIGTERM or SIGINT. Single-threaded; never returns an error worth more than a
/// line on stderr.
pub fn run() -> Result<(), nix::Error> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    mask.thread_block()?;
    loop {
        match mask.wait()? {
            Signal::SIGCHLD => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Signal::SIGTERM | Signal::SIGINT => return Ok(()),
            _ => {}
        }
    }
}

/// Writes the sandbox root filesystem under `agent_dir` for `program` (the `skiff` binary)
/// unless it is there already for this very binary; returns its path.
pub fn prepare_rootfs(agent_dir: &Path, program: &Path) -> Result<PathBuf, AgentError> {
    use std::os::unix::fs::MetadataExt;
    let base = agent_dir.join("pause");
    let rootfs = base.join("rootfs");
    let meta = std::fs::metadata(program).map_err(AgentError::io("stat", program))?;
    let stamp = format!("{} {} {}\n", meta.dev(), meta.ino(), meta.mtime());
    let stamp_file = base.join("stamp");
    if std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp)
        && rootfs.join("pause").exists()
    {
        return Ok(rootfs);
    }
    let _ = std::fs::remove_dir_all(&base);
    for dir in ["proc", "sys", "dev", "etc", "tmp"] {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).map_err(AgentError::io("create dir", &path))?;
    }
    for (file, content) in [
        ("etc/hostname", ""),
        ("etc/hosts", ""),
        ("etc/resolv.conf", ""),
        ("etc/passwd", "root:x:0:0:root:/:/pause\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        let path = rootfs.join(file);
        std::fs::write(&path, content).map_err(AgentError::io("write", &path))?;
    }
    let target = rootfs.join("pause");
    let stripped = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&target)
        .arg(program)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(program, &target).map_err(AgentError::io("copy", program))?;
    }
    for lib in shared_libraries(program) {
        let relative = lib.strip_prefix("/").unwrap_or(&lib);
        let dest = rootfs.join(relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(AgentError::io("create dir", parent))?;
        }
        std::fs::copy(&lib, &dest).map_err(AgentError::io("copy", &lib))?;
    }
    std::fs::write(&stamp_file, stamp).map_err(AgentError::io("write", &stamp_file))?;
    Ok(rootfs)
}

/// The shared libraries and the ELF interpreter `program` loads (from `ldd`; none for a
/// static binary).
fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(program).output() else {
        return Vec::new();
    };
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
}

/// The absolute paths in `ldd` output.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    libs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n\t/lib64/ld-linux-x86-64.so.2 (0x2)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }
}
