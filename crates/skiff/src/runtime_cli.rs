//! The runc-compatible OCI runtime command line: `skiff runtime ...` and `skiff-runc ...`.
//!
//! Global flags match runc's so engines (podman, containerd) can pass them unchanged; errors go
//! to stderr and, with `--log`, to the log file in the format `--log-format` names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use skiff_runtime::container::{self, CreateOptions};
use skiff_runtime::{ContainerStatus, StateStore};

/// The runtime-spec version this runtime implements.
pub const OCI_SPEC_VERSION: &str = "1.2.0";

/// `skiff-runc`: the OCI runtime of Skiff, runc-compatible.
#[derive(Debug, Parser)]
#[command(name = "skiff-runc", disable_version_flag = true)]
pub struct RuntimeCli {
    #[command(flatten)]
    args: RuntimeArgs,
}

impl RuntimeCli {
    /// Runs the chosen runtime command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        self.args.run()
    }
}

/// Global runtime flags (as runc has them) and the runtime command.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Root directory for the containers' state records.
    #[arg(long, global = true, default_value = "/run/skiff-runc")]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log file: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Use systemd for cgroups: refused, these hosts run no systemd.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Debug logging (accepted for runc compatibility).
    #[arg(long, global = true)]
    debug: bool,
    /// Print the runtime and runtime-spec versions.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<RuntimeCommand>,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The bundle directory (holding config.json).
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// Write the init's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's master fd to (process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for a rootfs on a ramdisk).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not create a session keyring (accepted; no keyring is created).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass this many extra fds (after stdio) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// The container id.
    id: String,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start {
        /// The container id.
        id: String,
    },
    /// Create, start and wait for a container; exits with its exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after start instead of waiting.
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Print the state of a container as JSON.
    State {
        /// The container id.
        id: String,
    },
    /// Send a signal to a container's init (default TERM).
    Kill {
        /// Signal every process of the container.
        #[arg(short = 'a', long)]
        all: bool,
        /// The container id.
        id: String,
        /// The signal: a number, NAME or SIGNAME.
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a container and everything it holds.
    Delete {
        /// Kill it first if it is still running.
        #[arg(short = 'f', long)]
        force: bool,
        /// The container id.
        id: String,
    },
    /// Freeze every process of a container.
    Pause {
        /// The container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container id.
        id: String,
    },
    /// List the containers under the root.
    List {
        /// table or json.
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// Print ids only.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Run a process inside a running container.
    Exec {
        /// A process.json (an OCI `process` object) instead of COMMAND.
        #[arg(short = 'p', long)]
        process: Option<PathBuf>,
        /// Return once the process started.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Write the process's pid to this file.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Allocate a terminal (needs --console-socket).
        #[arg(short = 't', long)]
        tty: bool,
        /// Unix socket to send the terminal's master fd to.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Working directory inside the container.
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Extra environment, KEY=value.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// UID[:GID] to run as.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Extra capabilities to add.
        #[arg(short = 'c', long = "cap")]
        cap: Vec<String>,
        /// Set no_new_privileges.
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        /// The container id.
        id: String,
        /// The command and its arguments (when no --process).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        /// table or json.
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// The container id.
        id: String,
    },
    /// Change a running container's resource limits.
    Update {
        /// A JSON file with OCI linux.resources ("-" for stdin).
        #[arg(short = 'r', long)]
        resources: PathBuf,
        /// The container id.
        id: String,
    },
    /// Print what this runtime supports (OCI features JSON).
    Features,
    /// Write a default config.json into a bundle directory.
    Spec {
        /// The bundle directory.
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
    },
}

impl RuntimeArgs {
    /// Runs the chosen runtime command, logging a failure to `--log` as well.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let log = self.log.clone();
        let json = self.log_format == "json";
        let result = self.dispatch();
        if let (Err(err), Some(log)) = (&result, log) {
            write_log(&log, json, &format!("{err:#}"));
        }
        result
    }

    fn dispatch(self) -> anyhow::Result<ExitCode> {
        if self.systemd_cgroup {
            anyhow::bail!(
                "--systemd-cgroup is not supported: this runtime manages cgroupfs directly; drop the flag"
            );
        }
        if self.version {
            println!(
                "skiff-runc version {}\nspec: {OCI_SPEC_VERSION}",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(ExitCode::SUCCESS);
        }
        let store = StateStore::new(&self.root);
        let Some(command) = self.command else {
            anyhow::bail!("no runtime command given: see `skiff-runc --help`");
        };
        match command {
            RuntimeCommand::Create(args) => {
                create(&store, &args)?;
            }
            RuntimeCommand::Start { id } => {
                container::start(&store, &id)?;
            }
            RuntimeCommand::Run {
                create: args,
                detach,
            } => return run(&store, &args, detach),
            RuntimeCommand::State { id } => {
                let record = container::load(&store, &id)?;
                println!("{}", serde_json::to_string_pretty(&record.state)?);
            }
            RuntimeCommand::Kill { all, id, signal } => {
                container::kill(&store, &id, container::parse_signal(&signal)?, all)?;
            }
            RuntimeCommand::Delete { force, id } => match container::delete(&store, &id, force) {
                // Deleting what is already gone is what engines do after a crash: fine with --force.
                Err(skiff_runtime::ContainerError::State(
                    skiff_runtime::StateError::NotFound { .. },
                )) if force => {}
                other => other?,
            },
            RuntimeCommand::Pause { id } => container::pause(&store, &id)?,
            RuntimeCommand::Resume { id } => container::resume(&store, &id)?,
            RuntimeCommand::List { format, quiet } => list(&store, &format, quiet)?,
            RuntimeCommand::Exec {
                process,
                detach,
                pid_file,
                tty,
                console_socket,
                cwd,
                env,
                user,
                cap,
                no_new_privs,
                id,
                command,
            } => {
                let mut plan = exec_process(
                    &store,
                    &id,
                    process.as_deref(),
                    cwd,
                    env,
                    user,
                    cap,
                    no_new_privs,
                    command,
                )?;
                plan.terminal |= tty;
                if !detach {
                    skiff_sys::set_child_subreaper(true)?;
                }
                let options = container::ExecOptions {
                    process: plan,
                    detach,
                    pid_file,
                    console_socket,
                };
                return match container::exec(&store, &id, &options)? {
                    container::ExecOutcome::Started(_) => Ok(ExitCode::SUCCESS),
                    container::ExecOutcome::Exited(status) => {
                        Ok(ExitCode::from(u8::try_from(status.code()).unwrap_or(255)))
                    }
                };
            }
            RuntimeCommand::Ps { format, id } => ps(&store, &id, &format)?,
            RuntimeCommand::Update { resources, id } => {
                let text = if resources.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(&resources)?
                };
                let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(&text)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}: not OCI linux.resources JSON: {e}",
                            resources.display()
                        )
                    })?;
                container::update(&store, &id, &resources)?;
            }
            RuntimeCommand::Features => println!("{}", serde_json::to_string_pretty(&features())?),
            RuntimeCommand::Spec { bundle } => {
                let path = bundle.join("config.json");
                if path.exists() {
                    anyhow::bail!("{} already exists: remove it first", path.display());
                }
                let spec = skiff_runtime::spec::default_spec(&["sh"], false);
                std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn create(store: &StateStore, args: &CreateArgs) -> anyhow::Result<()> {
    let options = CreateOptions {
        pid_file: args.pid_file.clone(),
        no_pivot: args.no_pivot,
        console_socket: args.console_socket.clone(),
        preserve_fds: args.preserve_fds,
    };
    container::create(store, &args.id, &args.bundle, &options)?;
    Ok(())
}

fn run(store: &StateStore, args: &CreateArgs, detach: bool) -> anyhow::Result<ExitCode> {
    // The container's init may be a grandchild (behind a PID namespace fork): become its
    // subreaper so it is re-parented to us and we can wait for it.
    skiff_sys::set_child_subreaper(true)?;
    create(store, args)?;
    let record = match container::start(store, &args.id) {
        Ok(record) => record,
        Err(err) => {
            let _ = container::delete(store, &args.id, true);
            return Err(err.into());
        }
    };
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let status = skiff_sys::process::wait_for_exit(record.state.pid)?;
    container::delete(store, &args.id, true)?;
    Ok(ExitCode::from(u8::try_from(status.code()).unwrap_or(255)))
}

/// The process `exec` runs: a process.json, or COMMAND on top of the container's own process
/// (its env, user, capabilities, cwd), adjusted by the flags, as runc does.
#[allow(clippy::too_many_arguments)]
fn exec_process(
    store: &StateStore,
    id: &str,
    process_file: Option<&Path>,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    user: Option<String>,
    caps: Vec<String>,
    no_new_privs: bool,
    command: Vec<String>,
) -> anyhow::Result<skiff_runtime::plan::ProcessPlan> {
    use skiff_runtime::plan::ProcessPlan;
    let mut plan = if let Some(file) = process_file {
        let text = std::fs::read_to_string(file)?;
        let process: oci_spec::runtime::Process =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        ProcessPlan::from_oci(&process)?
    } else {
        if command.is_empty() {
            anyhow::bail!("exec needs a COMMAND or --process FILE");
        }
        let record = container::load(store, id)?;
        let config = std::fs::read_to_string(record.state.bundle.join("config.json"))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_str(&config)?;
        let base = spec
            .process()
            .clone()
            .ok_or_else(|| anyhow::anyhow!("config.json of {id} has no process"))?;
        let mut plan = ProcessPlan::from_oci(&base)?;
        plan.args = command;
        plan.terminal = false;
        plan
    };
    {
        let record = container::load(store, id)?;
        let config = std::fs::read_to_string(record.state.bundle.join("config.json"))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_str(&config)?;
        plan = plan.with_seccomp_of(&spec)?;
    }
    if let Some(cwd) = cwd {
        plan.cwd = cwd;
    }
    for pair in env {
        let key = pair.split('=').next().unwrap_or_default().to_string();
        plan.env
            .retain(|e| e.split('=').next() != Some(key.as_str()));
        plan.env.push(pair);
    }
    if let Some(user) = user {
        let (uid, gid) = user.split_once(':').unwrap_or((user.as_str(), ""));
        plan.uid = uid
            .parse()
            .map_err(|_| anyhow::anyhow!("--user {user}: give numeric UID[:GID]"))?;
        if !gid.is_empty() {
            plan.gid = gid
                .parse()
                .map_err(|_| anyhow::anyhow!("--user {user}: give numeric UID[:GID]"))?;
        }
    }
    if !caps.is_empty() {
        let sets = plan.capabilities.get_or_insert_with(Default::default);
        for cap in caps {
            for set in [
                &mut sets.bounding,
                &mut sets.effective,
                &mut sets.permitted,
                &mut sets.inheritable,
                &mut sets.ambient,
            ] {
                if !set.contains(&cap) {
                    set.push(cap.clone());
                }
            }
        }
        skiff_sys::capabilities::validate(sets)?;
    }
    plan.no_new_privileges |= no_new_privs;
    Ok(plan)
}

fn ps(store: &StateStore, id: &str, format: &str) -> anyhow::Result<()> {
    let pids = container::pids(store, id)?;
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            println!("{:<8} {:<8} CMD", "PID", "PPID");
            for pid in pids {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit_once(')').map(|(_, rest)| {
                            rest.split_whitespace().nth(1).unwrap_or("?").to_string()
                        })
                    })
                    .unwrap_or_default();
                println!("{pid:<8} {ppid:<8} {}", cmd.trim());
            }
        }
        other => anyhow::bail!("unknown ps format {other:?}: use table or json"),
    }
    Ok(())
}

/// The OCI `features` document: what this runtime really supports.
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync",
            "remount", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime",
            "strictatime", "nostrictatime", "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave",
            "rslave", "unbindable", "runbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": skiff_runtime::spec::known_capabilities(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.opencontainers.runc.version": "skiff-runc"}
    })
}

fn list(store: &StateStore, format: &str, quiet: bool) -> anyhow::Result<()> {
    let records = container::list(store)?;
    if quiet {
        for r in &records {
            println!("{}", r.state.id);
        }
        return Ok(());
    }
    match format {
        "json" => {
            let states: Vec<_> = records.iter().map(|r| &r.state).collect();
            println!("{}", serde_json::to_string(&states)?);
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for r in &records {
                let status = match r.state.status {
                    ContainerStatus::Creating => "creating",
                    ContainerStatus::Created => "created",
                    ContainerStatus::Running => "running",
                    ContainerStatus::Stopped => "stopped",
                    ContainerStatus::Paused => "paused",
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    r.state.id,
                    r.state.pid,
                    status,
                    r.state.bundle.display(),
                    r.state.created,
                    if r.state.owner.is_empty() {
                        "root"
                    } else {
                        &r.state.owner
                    }
                );
            }
        }
        other => anyhow::bail!("unknown list format {other:?}: use table or json"),
    }
    Ok(())
}

/// Appends one error line to the runtime log, as runc does (engines read it for the reason).
fn write_log(path: &Path, json: bool, message: &str) {
    let line = if json {
        serde_json::json!({"level": "error", "msg": message, "time": skiff_runtime::clock::rfc3339_now()}).to_string()
    } else {
        format!(
            "time=\"{}\" level=error msg={message:?}",
            skiff_runtime::clock::rfc3339_now()
        )
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}
