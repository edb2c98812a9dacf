//! The FUSE filesystem: a read-only root directory with the six files. Opening a file
//! renders it for the opening process's cgroup; reads serve that snapshot (so a reader that
//! reads in pieces sees one consistent file), and release forgets it.
//!
//! Files are opened in direct-I/O mode, so `read(2)` always reaches the server. `sendfile`
//! and `splice` (busybox `cat` uses them) go through the page cache instead, which reads no
//! further than the file's size: so the files report [`FILE_SIZE`], more than any of them
//! holds, and the kernel cuts the size down to the real end at the first short read. Every
//! open drops the cached pages (no `keep_cache`), and names and attributes are never cached
//! (TTL 0), so each open starts again from the full size.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};
use skiff_cgroups::Mounts;

use crate::FILES;
use crate::figures::{self, CgroupDirs};
use crate::times::LoadAvg;

/// How long the kernel may cache names and attributes: not at all (see the module doc).
const TTL: Duration = Duration::ZERO;

/// The size the files report: more than any of them holds (the real end is found by a short
/// read).
pub(crate) const FILE_SIZE: u64 = 1 << 20;

/// Load averages of the cgroups whose processes read `/proc/loadavg`, keyed by the cgroup's
/// thread-list directory, with when they were last read.
pub(crate) type Loads = Arc<Mutex<HashMap<std::path::PathBuf, (LoadAvg, Instant)>>>;

/// The filesystem.
pub(crate) struct ProcFs {
    mounts: Mounts,
    loads: Loads,
    open: Mutex<HashMap<u64, Arc<[u8]>>>,
    next_fh: AtomicU64,
    started: SystemTime,
}

impl ProcFs {
    pub(crate) fn new(mounts: Mounts, loads: Loads) -> ProcFs {
        ProcFs {
            mounts,
            loads,
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            started: SystemTime::now(),
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let n = u64::from(ino);
        let (kind, perm, nlink, size) = if n == 1 {
            (FileType::Directory, 0o555, 2, 0)
        } else if (2..2 + FILES.len() as u64).contains(&n) {
            (FileType::RegularFile, 0o444, 1, FILE_SIZE)
        } else {
            return None;
        };
        Some(FileAttr {
            ino,
            size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn render(&self, index: usize, pid: u32) -> String {
        render(&self.mounts, &self.loads, index, pid)
    }
}

/// Renders file number `index` of [`FILES`] for process `pid`, gathering only the figures
/// that file needs. (The seccomp agent renders the same files to answer `sysinfo`.)
pub(crate) fn render(mounts: &Mounts, loads: &Loads, index: usize, pid: u32) -> String {
    let host = |name: &str| std::fs::read_to_string(format!("/proc/{name}")).unwrap_or_default();
    let dirs = CgroupDirs::from_proc_cgroup(
        &std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
        mounts,
    );
    let visible = |cpu: &figures::Cpu| crate::cpu::visible_cpus(&online_cpus(), cpu);
    let host_uptime = || crate::times::parse_uptime(&host("uptime")).unwrap_or(0.0);
    match FILES.get(index).copied() {
        Some("meminfo") => crate::meminfo::render(&host("meminfo"), &figures::memory(&dirs)),
        Some("cpuinfo") => {
            crate::cpu::render_cpuinfo(&host("cpuinfo"), &visible(&figures::cpu(&dirs)))
        }
        Some("stat") => {
            let cpu = figures::cpu(&dirs);
            let host_uptime = host_uptime();
            let uptime =
                figures::started(&dirs).map_or(host_uptime, |s| (host_uptime - s).max(0.0));
            let tasks = figures::tasks(&dirs);
            crate::cpu::render_stat(&host("stat"), visible(&cpu).len(), &cpu, &tasks, uptime)
        }
        Some("uptime") => {
            let cpu = figures::cpu(&dirs);
            let cpus = visible(&cpu).len();
            crate::times::render_uptime(host_uptime(), figures::started(&dirs), cpus, cpu.usage_ns)
        }
        Some("loadavg") => {
            let load = match dirs.procs.clone() {
                Some(key) => {
                    let mut loads = loads.lock().unwrap_or_else(PoisonError::into_inner);
                    let entry = loads
                        .entry(key)
                        .or_insert_with(|| (LoadAvg::default(), Instant::now()));
                    entry.1 = Instant::now();
                    entry.0
                }
                None => LoadAvg::default(),
            };
            load.render(&figures::tasks(&dirs))
        }
        Some("online") => {
            let host_text =
                std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
            crate::cpu::render_online(&host_text, &online_cpus(), &visible(&figures::cpu(&dirs)))
        }
        _ => String::new(),
    }
}

/// The host's online CPUs (`/sys/devices/system/cpu/online`), or CPU 0 alone.
fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| figures::parse_cpu_list(&t))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| vec![0])
}

fn file_index(ino: INodeNo) -> Option<usize> {
    usize::try_from(u64::from(ino))
        .ok()?
        .checked_sub(2)
        .filter(|i| *i < FILES.len())
}

impl Filesystem for ProcFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (parent == INodeNo::ROOT)
            .then(|| FILES.iter().position(|f| OsStr::new(f) == name))
            .flatten()
            .and_then(|i| self.attr(INodeNo(i as u64 + 2)));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(index) = file_index(ino) else {
            reply.error(Errno::EISDIR);
            return;
        };
        if flags.0 & nix::libc::O_ACCMODE != nix::libc::O_RDONLY {
            reply.error(Errno::EACCES);
            return;
        }
        let content: Arc<[u8]> = self.render(index, req.pid()).into_bytes().into();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fh, content);
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let content = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&u64::from(fh))
            .cloned();
        let Some(content) = content else {
            reply.error(Errno::EBADF);
            return;
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        reply.data(&content[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&u64::from(fh));
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == INodeNo::ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOTDIR);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let mut entries = vec![
            (1u64, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        for (i, name) in FILES.iter().enumerate() {
            entries.push((i as u64 + 2, FileType::RegularFile, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
