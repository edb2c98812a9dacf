//! Linux capabilities: the five sets a container's process gets (bounding, effective,
//! inheritable, permitted, ambient), applied around the change of user id.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{SysError, SysResult};

/// The five capability sets of a process, by name (`CAP_CHOWN` ...), as `config.json` has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    /// The bounding set: the most the process and its children can ever gain.
    pub bounding: Vec<String>,
    /// Effective.
    pub effective: Vec<String>,
    /// Inheritable.
    pub inheritable: Vec<String>,
    /// Permitted.
    pub permitted: Vec<String>,
    /// Ambient (kept across exec of unprivileged programs).
    pub ambient: Vec<String>,
}

fn parse(names: &[String]) -> SysResult<CapsHashSet> {
    let supported = caps::runtime::thread_all_supported();
    let mut set = CapsHashSet::new();
    for name in names {
        let cap = Capability::from_str(name).map_err(|_| SysError {
            op: "parse capability",
            target: name.clone(),
            errno: nix::errno::Errno::EINVAL,
        })?;
        // A capability this kernel does not know cannot be held anyway.
        if supported.contains(&cap) {
            set.insert(cap);
        }
    }
    Ok(set)
}

/// The names of every capability this kernel supports, sorted.
pub fn supported_names() -> Vec<String> {
    let mut names: Vec<String> = caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.to_string())
        .collect();
    names.sort();
    names
}

/// The capabilities in this process's bounding set, sorted (what a privileged container can
/// be given: a process cannot grant more; every supported one if the set cannot be read).
pub fn bounding_names() -> Vec<String> {
    match caps::read(None, CapSet::Bounding) {
        Ok(set) => {
            let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
            names.sort();
            names
        }
        Err(_) => supported_names(),
    }
}

/// Checks every name is a capability; call it early so a typo fails `create`, not the exec.
pub fn validate(sets: &CapabilitySets) -> SysResult<()> {
    for names in [
        &sets.bounding,
        &sets.effective,
        &sets.inheritable,
        &sets.permitted,
        &sets.ambient,
    ] {
        parse(names)?;
    }
    Ok(())
}

/// Drops every capability not in `sets.bounding` from the bounding set. Must run while the
/// process still has `CAP_SETPCAP` (before the user id changes).
pub fn apply_bounding(sets: &CapabilitySets) -> SysResult<()> {
    let keep = parse(&sets.bounding)?;
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| SysError {
                op: "drop bounding capability",
                target: format!("{cap}: {e}"),
                errno: nix::errno::Errno::EPERM,
            })?;
        }
    }
    Ok(())
}

/// Sets the permitted, inheritable and effective sets, then raises the ambient ones. Runs after
/// the user id change (with keep-caps set before it, so permitted survives).
pub fn apply_sets(sets: &CapabilitySets) -> SysResult<()> {
    let apply = |set: CapSet, names: &[String], what: &'static str| -> SysResult<()> {
        caps::set(None, set, &parse(names)?).map_err(|e| SysError {
            op: what,
            target: e.to_string(),
            errno: nix::errno::Errno::EPERM,
        })
    };
    // Each call replaces one set and the kernel checks the three together (effective within
    // permitted), so narrow effective first and permitted last.
    apply(
        CapSet::Effective,
        &sets.effective,
        "set effective capabilities",
    )?;
    apply(
        CapSet::Inheritable,
        &sets.inheritable,
        "set inheritable capabilities",
    )?;
    apply(
        CapSet::Permitted,
        &sets.permitted,
        "set permitted capabilities",
    )?;
    let _ = caps::clear(None, CapSet::Ambient);
    // The kernel only lets a capability be ambient when it is permitted and inheritable; like
    // runc, skip the others (runc's own default spec lists ambient ones without inheritable).
    let permitted = parse(&sets.permitted)?;
    let inheritable = parse(&sets.inheritable)?;
    for cap in parse(&sets.ambient)?
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
    {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| SysError {
            op: "raise ambient capability",
            target: format!("{cap}: {e}"),
            errno: nix::errno::Errno::EPERM,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        let good = CapabilitySets {
            bounding: vec!["CAP_CHOWN".into()],
            ..Default::default()
        };
        assert!(validate(&good).is_ok());
        let bad = CapabilitySets {
            effective: vec!["CAP_FLY".into()],
            ..Default::default()
        };
        let err = validate(&bad).unwrap_err();
        assert!(err.to_string().contains("CAP_FLY"), "{err}");
    }
}
