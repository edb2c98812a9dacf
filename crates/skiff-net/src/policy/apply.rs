//! The thin executor: switches `br_netfilter` on for the node's namespace and feeds a rendered
//! script to `nft -f -`, in the host's or a given network namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::nft::TABLE;

/// The sysctl that makes bridged IPv4 traffic (pod to pod on one node) pass the IP hooks.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Why the policy rules could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A program (`nft`, `nsenter`, `sh`) could not be started or fed.
    #[error("{action}: cannot run {program}: {source}")]
    Spawn {
        /// What was being done (`apply network policy rules`, ...).
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
    /// Bridged traffic cannot be made to pass the IP hooks (no `br_netfilter` in the kernel,
    /// or the sysctl cannot be written): pod-to-pod traffic on the node could not be filtered.
    #[error(
        "enable br_netfilter ({BRIDGE_NF_CALL_IPTABLES}=1){netns}: {detail} \
         (is the br_netfilter module loaded?)"
    )]
    BridgeNetfilter {
        /// ` in network namespace PATH`, or empty.
        netns: String,
        /// What failed.
        detail: String,
    },
}

/// Runs `nft` for the policy tables, optionally inside a network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executor {
    netns: Option<PathBuf>,
}

impl Executor {
    /// An executor for the current network namespace.
    pub fn new() -> Executor {
        Executor { netns: None }
    }

    /// An executor that enters the network namespace at `path` (e.g. `/run/netns/NAME`)
    /// through `nsenter --net=PATH`.
    pub fn in_netns(path: impl Into<PathBuf>) -> Executor {
        Executor {
            netns: Some(path.into()),
        }
    }

    /// The network namespace it enters, if any.
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Sets `net.bridge.bridge-nf-call-iptables=1` in the namespace (bridged pod-to-pod
    /// traffic must pass the `inet` table's forward hook), then applies a script from
    /// [`crate::policy::render`] with one `nft -f -`: one transaction, so both tables are
    /// replaced atomically or, on error, left as they were.
    pub fn apply(&self, script: &str) -> Result<(), PolicyError> {
        self.enable_bridge_netfilter()?;
        self.run("apply network policy rules", &["-f", "-"], Some(script))
            .map(drop)
    }

    /// Checks a script without applying it (`nft -c -f -`): syntax and kernel support.
    pub fn check(&self, script: &str) -> Result<(), PolicyError> {
        self.run(
            "check network policy rules",
            &["-c", "-f", "-"],
            Some(script),
        )
        .map(drop)
    }

    /// Deletes both policy tables (all traffic flows again); succeeds when there are none.
    /// `br_netfilter` is left on.
    pub fn remove(&self) -> Result<(), PolicyError> {
        let mut script = String::new();
        for family in ["inet", "bridge"] {
            script.push_str(&format!(
                "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
            ));
        }
        self.run("remove network policy rules", &["-f", "-"], Some(&script))
            .map(drop)
    }

    /// Both tables as `nft list table` prints them (for diagnostics and tests).
    pub fn list(&self) -> Result<String, PolicyError> {
        let mut out = self.run(
            "list network policy rules",
            &["list", "table", "inet", TABLE],
            None,
        )?;
        out.push_str(&self.run(
            "list network policy rules",
            &["list", "table", "bridge", TABLE],
            None,
        )?);
        Ok(out)
    }

    fn netns_suffix(&self) -> String {
        crate::nftcmd::netns_suffix(self.netns.as_deref())
    }

    /// Writes 1 to [`BRIDGE_NF_CALL_IPTABLES`]; when that fails (no such file: the module is
    /// not loaded), runs `modprobe br_netfilter` (best effort) and tries once more.
    fn enable_bridge_netfilter(&self) -> Result<(), PolicyError> {
        match self.write_bridge_netfilter() {
            Err(PolicyError::BridgeNetfilter { .. }) => {
                // The module is global; loading it from any namespace serves all of them.
                let _ = Command::new("modprobe")
                    .arg("br_netfilter")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                self.write_bridge_netfilter()
            }
            other => other,
        }
    }

    /// Writes 1 to [`BRIDGE_NF_CALL_IPTABLES`] (in the namespace: through `nsenter`, since
    /// `/proc/sys/net` shows the namespace of the process that opens it).
    fn write_bridge_netfilter(&self) -> Result<(), PolicyError> {
        let failed = |detail: String| PolicyError::BridgeNetfilter {
            netns: self.netns_suffix(),
            detail,
        };
        match &self.netns {
            None => std::fs::write(BRIDGE_NF_CALL_IPTABLES, b"1\n")
                .map_err(|error| failed(error.to_string())),
            Some(path) => {
                let mut net = std::ffi::OsString::from("--net=");
                net.push(path);
                let output = Command::new("nsenter")
                    .arg(net)
                    .args([
                        "--",
                        "sh",
                        "-c",
                        &format!("echo 1 > {BRIDGE_NF_CALL_IPTABLES}"),
                    ])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|source| PolicyError::Spawn {
                        action: "enable br_netfilter",
                        program: "nsenter".into(),
                        source,
                    })?;
                if output.status.success() {
                    Ok(())
                } else {
                    Err(failed(
                        String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    ))
                }
            }
        }
    }

    /// Runs `nft ARGS` (under nsenter when needed) with `stdin`; its stdout.
    fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, PolicyError> {
        let netns = self.netns.as_deref();
        crate::nftcmd::run(netns, args, stdin).map_err(|failure| match failure {
            crate::nftcmd::NftFailure::Spawn { program, source } => PolicyError::Spawn {
                action,
                program,
                source,
            },
            crate::nftcmd::NftFailure::Refused { status, stderr } => PolicyError::Nft {
                action,
                netns: crate::nftcmd::netns_suffix(netns),
                status,
                stderr,
            },
        })
    }
}
