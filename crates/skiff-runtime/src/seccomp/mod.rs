//! seccomp: `linux.seccomp` of config.json compiled to a classic BPF program, and the default
//! profile engines use.
//!
//! The program checks the architecture (only the native one is allowed through), then walks the
//! rules in order: a rule matches when the syscall number is one of its names and every argument
//! comparison holds; the first match returns its action, otherwise the default action. 64-bit
//! argument comparisons are done on the two 32-bit halves. Loading it is `skiff-sys`'s job.

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
    /// The action has no classic-BPF equivalent here.
    #[error(
        "linux.seccomp: action {action} is not supported (use ALLOW, ERRNO, KILL, KILL_PROCESS, TRAP, TRACE or LOG)"
    )]
    UnsupportedAction {
        /// The action's name.
        action: String,
    },
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

/// The BPF return value of an action.
fn action_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    const EPERM: u32 = 1;
    Ok(match action {
        LinuxSeccompAction::ScmpActKill => 0x0000_0000,
        LinuxSeccompAction::ScmpActKillThread => 0x0000_0000,
        LinuxSeccompAction::ScmpActKillProcess => 0x8000_0000,
        LinuxSeccompAction::ScmpActTrap => 0x0003_0000,
        LinuxSeccompAction::ScmpActErrno => 0x0005_0000 | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActTrace => 0x7ff0_0000 | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActAllow => 0x7fff_0000,
        LinuxSeccompAction::ScmpActLog => 0x7ffc_0000,
        other => {
            return Err(SeccompError::UnsupportedAction {
                action: format!("{other:?}"),
            });
        }
    })
}

/// Compiles a profile for the native architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if cfg!(not(target_arch = "x86_64")) {
        return Err(SeccompError::UnsupportedArchitecture);
    }
    let default = action_value(profile.default_action(), profile.default_errno_ret())?;
    let mut rules = Vec::new();
    for (i, rule) in profile
        .syscalls()
        .clone()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let action = action_value(rule.action(), rule.errno_ret())?;
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
    let filter = bpf::assemble(&rules, default);
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

    #[test]
    fn unsupported_actions_are_refused_by_name() {
        let profile: LinuxSeccomp =
            serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}))
                .unwrap();
        assert!(matches!(
            compile(&profile),
            Err(SeccompError::UnsupportedAction { .. })
        ));
    }
}
