//! The thin executor: feeds a rendered script to `nft -f -`, in the host's or a given network
//! namespace.

use std::path::{Path, PathBuf};

use std::collections::HashSet;

use super::nft::TABLE;

/// How affinity set definitions start in a rendered script.
const AFFINITY_SET_PREFIX: &str = "\tset aff-";

/// Why `nft` could not apply or remove the rules.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `nft` (or `nsenter`) could not be started or fed.
    #[error("{action}: cannot run {program}: {source}")]
    Spawn {
        /// What was being done (`apply proxy rules`, ...).
        action: &'static str,
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and failed; nothing was changed (a script is one transaction).
    #[error("{action}{netns}: nft failed ({status}): {stderr}")]
    Nft {
        /// What was being done.
        action: &'static str,
        /// ` in network namespace PATH`, or empty.
        netns: String,
        /// The exit status.
        status: String,
        /// nft's error output, which names the offending line of the script.
        stderr: String,
    },
}

/// Runs `nft` for the proxy table, optionally inside a network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executor {
    netns: Option<PathBuf>,
}

impl Executor {
    /// An executor for the current network namespace.
    pub fn new() -> Executor {
        Executor { netns: None }
    }

    /// An executor that enters the network namespace at `path` (e.g. `/run/netns/NAME` or
    /// `/proc/PID/ns/net`) through `nsenter --net=PATH`.
    pub fn in_netns(path: impl Into<PathBuf>) -> Executor {
        Executor {
            netns: Some(path.into()),
        }
    }

    /// The network namespace it enters, if any.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Applies a script from [`crate::proxy::render`] with one `nft -f -`: one transaction,
    /// so the table is replaced atomically or, on error, left as it was.
    ///
    /// Session affinity survives: when the script has affinity sets (`aff-*`), the clients
    /// recorded in the current table's sets of the same names are added to the new ones, with
    /// their remaining time, in the same transaction. (Recreating the table would empty them,
    /// and every Service or EndpointSlice change anywhere would reset every client's affinity.)
    pub fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let carried = if script.contains(AFFINITY_SET_PREFIX) {
            self.carry_affinity(script)
        } else {
            String::new()
        };
        if carried.is_empty() {
            return self
                .run("apply proxy rules", &["-f", "-"], Some(script))
                .map(drop);
        }
        let mut full = String::with_capacity(script.len() + carried.len());
        full.push_str(script);
        full.push_str(&carried);
        self.run("apply proxy rules", &["-f", "-"], Some(&full))
            .map(drop)
    }

    /// `add element` lines re-adding the current affinity entries to the sets `script` defines
    /// again; empty when there are none or the current table cannot be read (best effort: the
    /// worst case is a client choosing its endpoint anew).
    fn carry_affinity(&self, script: &str) -> String {
        let wanted: HashSet<&str> = script
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("set "))
            .filter_map(|rest| rest.strip_suffix(" {"))
            .filter(|name| name.starts_with("aff-"))
            .collect();
        let Ok(listing) = self.run("list affinity sets", &["-j", "list", "sets", "ip"], None)
        else {
            return String::new();
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&listing) else {
            return String::new();
        };
        let mut out = String::new();
        let objects = json.get("nftables").and_then(|v| v.as_array());
        for set in objects.into_iter().flatten().filter_map(|o| o.get("set")) {
            let name = set.get("name").and_then(|v| v.as_str()).unwrap_or("");
            if set.get("table").and_then(|v| v.as_str()) != Some(TABLE) || !wanted.contains(name) {
                continue;
            }
            let entries: Vec<String> = set
                .get("elem")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let e = e.get("elem")?;
                    let ip: std::net::Ipv4Addr = e.get("val")?.as_str()?.parse().ok()?;
                    let expires = e.get("expires")?.as_u64().filter(|s| *s > 0)?;
                    Some(format!("{ip} expires {expires}s"))
                })
                .collect();
            if !entries.is_empty() {
                out.push_str(&format!(
                    "add element ip {TABLE} {name} {{ {} }}\n",
                    entries.join(", ")
                ));
            }
        }
        out
    }

    /// Applies an incremental script from [`crate::proxy::ProxyState`] (`add`/`delete`/`flush`
    /// commands against the existing table) with one `nft -f -`: one transaction, all or
    /// nothing. Affinity entries need no carrying over: the sets are not re-created.
    pub(super) fn update(&self, script: &str) -> Result<(), ProxyError> {
        self.run("update proxy rules", &["-f", "-"], Some(script))
            .map(drop)
    }

    /// Checks a script without applying it (`nft -c -f -`): syntax and kernel support.
    pub fn check(&self, script: &str) -> Result<(), ProxyError> {
        self.run("check proxy rules", &["-c", "-f", "-"], Some(script))
            .map(drop)
    }

    /// Deletes the proxy table; succeeds when there is none.
    pub fn remove(&self) -> Result<(), ProxyError> {
        let script = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n");
        self.run("remove proxy rules", &["-f", "-"], Some(&script))
            .map(drop)
    }

    /// The table as `nft list table ip skiff-proxy` prints it (for diagnostics and tests).
    pub fn list(&self) -> Result<String, ProxyError> {
        self.run("list proxy rules", &["list", "table", "ip", TABLE], None)
    }

    /// Runs `nft ARGS` (under nsenter when needed) with `stdin`; its stdout.
    fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ProxyError> {
        let netns = self.netns.as_deref();
        crate::nftcmd::run(netns, args, stdin).map_err(|failure| match failure {
            crate::nftcmd::NftFailure::Spawn { program, source } => ProxyError::Spawn {
                action,
                program,
                source,
            },
            crate::nftcmd::NftFailure::Refused { status, stderr } => ProxyError::Nft {
                action,
                netns: crate::nftcmd::netns_suffix(netns),
                status,
                stderr,
            },
        })
    }
}
