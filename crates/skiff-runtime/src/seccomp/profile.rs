//! The default seccomp profile engines apply (`skiff run`, the agent's `RuntimeDefault`): every
//! syscall this runtime knows is allowed except those that reach beyond the container (kernel
//! modules, kexec, keyrings, bpf, mounts and namespaces, clocks, swap, reboot, raw process
//! memory of others, io_uring); anything newer than the table is refused too, so a syscall
//! added to the kernel later is not open by default.

use serde_json::{Value, json};

/// Syscalls the default profile refuses (with EPERM).
pub const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "afs_syscall",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "getpmsg",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "lsm_set_self_attr",
    "mbind",
    "migrate_pages",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "putpmsg",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "security",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "_sysctl",
    "tuxcall",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vserver",
];

/// Syscalls allowed only with some arguments (rules below).
const CONDITIONAL: &[&str] = &["clone", "clone3", "personality"];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET | CLONE_NEWTIME`: a container may not make namespaces.
const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000
    | 0x80;

/// The profile as an OCI `linux.seccomp` object.
pub fn default_profile() -> Value {
    let allowed: Vec<&str> = super::syscall_names()
        .into_iter()
        .filter(|name| !DENIED.contains(name) && !CONDITIONAL.contains(name))
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            // clone without namespace flags (fork, threads).
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall
            // back to clone, which is checked above.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // personality: only the harmless personas (Linux, 32-bit, uname26) and the query.
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0x20008, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{compile, syscall_number};

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;
    const X86_64: u32 = 0xC000_003E;

    fn decide(name: &str, args: [u64; 6]) -> u32 {
        let profile = serde_json::from_value(default_profile()).unwrap();
        let filter = compile(&profile).unwrap();
        filter.evaluate(X86_64, syscall_number(name).unwrap() as u32, args)
    }

    #[test]
    fn ordinary_calls_pass_and_dangerous_ones_are_refused() {
        for name in [
            "read",
            "openat",
            "execve",
            "setresuid",
            "capset",
            "prctl",
            "statx",
        ] {
            assert_eq!(decide(name, [0; 6]), ALLOW, "{name}");
        }
        for name in [
            "mount",
            "kexec_load",
            "init_module",
            "bpf",
            "keyctl",
            "unshare",
            "setns",
            "ptrace",
        ] {
            assert_eq!(decide(name, [0; 6]), EPERM, "{name}");
        }
    }

    #[test]
    fn clone_may_fork_but_not_make_namespaces() {
        const SIGCHLD: u64 = 17;
        assert_eq!(decide("clone", [SIGCHLD, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            decide("clone", [SIGCHLD | 0x2000_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(decide("clone3", [0; 6]), 0x0005_0000 | 38);
        assert_eq!(decide("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide("personality", [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
    }
}
