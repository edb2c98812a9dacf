//! seccomp: `linux.seccomp` of config.json compiled to a classic BPF program, and the default
//! profile engines use.
//!
//! The program checks the architecture (only the native one is allowed through), then walks the
//! rules in order: a rule matches when the syscall number is one of its names and every argument
//! comparison holds; the first match returns its action, otherwise the default action. 64-bit
//! argument comparisons are done on the two 32-bit halves. Loading it is `skiff-sys`'s job.
//!
//! `SCMP_ACT_NOTIFY` rules work as under runc: the filter is then loaded with a listener
//! (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), the runtime takes the listener from the process and
//! sends it with the OCI `ContainerProcessState` to `linux.seccomp.listenerPath`
//! ([`crate::listener`]). As runc does, NOTIFY is refused as the default action and for
//! `write` (the process writes to the runtime after loading the filter: a notified `write`
//! would wait for an agent that has not got the listener yet), and needs a `listenerPath`.

mod bpf;
mod profile;
#[cfg(target_arch = "x86_64")]
mod syscalls_x86_64;

pub use bpf::{Filter, Instruction};
pub use profile::default_profile;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

/// Why a seccomp profile cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// An argument index beyond the six a syscall has.
    #[error("linux.seccomp.syscalls[{rule}].args: index {index} is out of range (0-5)")]
    BadArgument {
        /// The rule.
        rule: usize,
        /// The index.
        index: usize,
    },
    /// The program would exceed what the kernel accepts.
    #[error("linux.seccomp: the profile compiles to {0} instructions, more than the kernel's 4096")]
    TooLarge(usize),
    /// `SCMP_ACT_NOTIFY` as the default action.
    #[error(
        "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action (notify single syscalls)"
    )]
    NotifyDefault,
    /// `SCMP_ACT_NOTIFY` for `write`.
    #[error("linux.seccomp.syscalls[{rule}]: SCMP_ACT_NOTIFY cannot be used for the write syscall")]
    NotifyWrite {
        /// The rule.
        rule: usize,
    },
    /// `SCMP_ACT_NOTIFY` rules without a listener to send the notifications to.
    #[error(
        "linux.seccomp: SCMP_ACT_NOTIFY rules need linux.seccomp.listenerPath (the seccomp agent's unix socket)"
    )]
    NotifyWithoutListener,
    /// No syscall table for this architecture.
    #[error("seccomp profiles are not supported on this architecture yet")]
    UnsupportedArchitecture,
}

/// The number of a syscall on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        syscalls_x86_64::SYSCALLS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, nr)| *nr)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        None
    }
}

/// Every syscall name this runtime knows on this architecture.
pub fn syscall_names() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        syscalls_x86_64::SYSCALLS.iter().map(|(n, _)| *n).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// `SECCOMP_RET_USER_NOTIF`.
const USER_NOTIF: u32 = 0x7fc0_0000;

/// The BPF return value of an action.
fn action_value(action: LinuxSeccompAction, errno: Option<u32>) -> u32 {
    const EPERM: u32 = 1;
    match action {
        LinuxSeccompAction::ScmpActKill => 0x0000_0000,
        LinuxSeccompAction::ScmpActKillThread => 0x0000_0000,
        LinuxSeccompAction::ScmpActKillProcess => 0x8000_0000,
        LinuxSeccompAction::ScmpActTrap => 0x0003_0000,
        LinuxSeccompAction::ScmpActErrno => 0x0005_0000 | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActTrace => 0x7ff0_0000 | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActAllow => 0x7fff_0000,
        LinuxSeccompAction::ScmpActLog => 0x7ffc_0000,
        LinuxSeccompAction::ScmpActNotify => USER_NOTIF,
    }
}

/// Compiles a profile for the native architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if cfg!(not(target_arch = "x86_64")) {
        return Err(SeccompError::UnsupportedArchitecture);
    }
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::NotifyDefault);
    }
    let default = action_value(profile.default_action(), profile.default_errno_ret());
    let mut notify = false;
    let mut rules = Vec::new();
    for (i, rule) in profile
        .syscalls()
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let action = action_value(rule.action(), rule.errno_ret());
        if action == USER_NOTIF {
            if rule.names().iter().any(|n| n == "write") {
                return Err(SeccompError::NotifyWrite { rule: i });
            }
            notify = true;
        }
        let mut args = Vec::new();
        for arg in rule.args().clone().unwrap_or_default() {
            if arg.index() > 5 {
                return Err(SeccompError::BadArgument {
                    rule: i,
                    index: arg.index(),
                });
            }
            let op = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => bpf::Compare::Ne,
                LinuxSeccompOperator::ScmpCmpLt => bpf::Compare::Lt,
                LinuxSeccompOperator::ScmpCmpLe => bpf::Compare::Le,
                LinuxSeccompOperator::ScmpCmpEq => bpf::Compare::Eq,
                LinuxSeccompOperator::ScmpCmpGe => bpf::Compare::Ge,
                LinuxSeccompOperator::ScmpCmpGt => bpf::Compare::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => bpf::Compare::MaskedEq(arg.value()),
            };
            let value = if matches!(op, bpf::Compare::MaskedEq(_)) {
                arg.value_two().unwrap_or(0)
            } else {
                arg.value()
            };
            args.push(bpf::ArgCheck {
                index: arg.index(),
                op,
                value,
            });
        }
        // Names this kernel table does not know cannot be called here anyway: skip them, as
        // runc does, so one profile serves several kernels.
        for name in rule.names() {
            if let Some(nr) = syscall_number(name) {
                rules.push(bpf::Rule {
                    nr,
                    args: args.clone(),
                    action,
                });
            }
        }
    }
    if notify && profile.listener_path().is_none() {
        return Err(SeccompError::NotifyWithoutListener);
    }
    let mut filter = bpf::assemble(&rules, default);
    filter.notify = notify;
    if filter.instructions.len() > 4096 {
        return Err(SeccompError::TooLarge(filter.instructions.len()));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_common_syscalls() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("openat"), Some(257));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn the_default_profile_compiles_within_the_kernel_limit() {
        let profile: LinuxSeccomp = serde_json::from_value(default_profile()).unwrap();
        let filter = compile(&profile).unwrap();
        assert!(
            filter.instructions.len() < 4096,
            "{}",
            filter.instructions.len()
        );
    }

    fn profile(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn notify_rules_need_a_listener_and_spare_write_and_the_default() {
        let notify = |names: &[&str], listener: bool| {
            let mut p = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}],
            });
            if listener {
                p["listenerPath"] = "/run/agent.sock".into();
            }
            compile(&profile(p))
        };
        let filter = notify(&["sysinfo"], true).unwrap();
        assert!(filter.notify);
        let nr = syscall_number("sysinfo").unwrap() as u32;
        assert_eq!(filter.evaluate(0xC000_003E, nr, [0; 6]), USER_NOTIF);
        assert_eq!(filter.evaluate(0xC000_003E, 0, [0; 6]), 0x7fff_0000);
        assert_eq!(
            notify(&["sysinfo"], false),
            Err(SeccompError::NotifyWithoutListener)
        );
        assert_eq!(
            notify(&["read", "write"], true),
            Err(SeccompError::NotifyWrite { rule: 0 })
        );
        assert_eq!(
            compile(&profile(serde_json::json!({
                "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/agent.sock"
            }))),
            Err(SeccompError::NotifyDefault)
        );
        let plain = compile(&profile(
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        ));
        assert!(!plain.unwrap().notify);
    }
}
