//! [`Engine`]: the operations commands call, over the files of one data root. Nothing is kept
//! in memory between calls; every call reads the records again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_image::ImageStore;
use skiff_runtime::StateStore;

use crate::layout::{self, ContainerDir};
use crate::naming::{ContainerId, resolve_prefix, validate_name};
use crate::record::{
    self, BindMount, ContainerConfig, ContainerJoin, NamespaceJoin, NetworkMode, Resources,
    RestartPolicy, State, Status, TmpfsMount, VolumeRequest,
};
use crate::{EngineError, Result};

/// How long a forced kill may take before the engine gives up.
const KILL_DEADLINE: Duration = Duration::from_secs(15);

/// What `run`/`create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The image, by name or id.
    pub image: String,
    /// A name (random if none).
    pub name: Option<String>,
    /// The command (the image's `Cmd` if empty).
    pub cmd: Vec<String>,
    /// `--entrypoint` (empty string clears the image's).
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` (or `KEY`, taken from this process's environment).
    pub env: Vec<String>,
    /// `-w`.
    pub working_dir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-v /HOST:/CTR`.
    pub binds: Vec<BindMount>,
    /// `-v NAME:/CTR` and `-v /CTR`: volumes found or made at create.
    pub volumes: Vec<VolumeRequest>,
    /// Make an anonymous volume for each of the image's `VOLUME` paths the request does not
    /// mount otherwise (what `docker run` does; the node agent does not).
    pub image_volumes: bool,
    /// `--volumes-from NAME[:ro|:rw]`: the bind mounts and volumes of other containers.
    pub volumes_from: Vec<String>,
    /// `--network|--pid|--ipc container:NAME`: namespaces of another (running) container,
    /// `container` being its name or id as the user gave it.
    pub join_containers: Vec<ContainerJoin>,
    /// `--tmpfs`.
    pub tmpfs: Vec<TmpfsMount>,
    /// `--read-only`.
    pub read_only: bool,
    /// Limits.
    pub resources: Resources,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--security-opt` (`seccomp=unconfined`, `seccomp=PATH` of a JSON profile,
    /// `no-new-privileges`).
    pub security_opt: Vec<String>,
    /// `--privileged`: every capability, every host device, no seccomp, no masked or
    /// read-only paths, `/sys` and the cgroup tree writable.
    pub privileged: bool,
    /// `--group-add`: supplementary group ids added to the user's.
    pub group_add: Vec<u32>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--label`s, added to (and overriding) the image's.
    pub labels: std::collections::BTreeMap<String, String>,
    /// A prepared directory to use as the root filesystem instead of `image` (which may then
    /// be empty): bind-mounted, never written by the engine.
    pub rootfs_dir: Option<PathBuf>,
    /// Namespaces to join by path instead of creating them.
    pub join_namespaces: Vec<NamespaceJoin>,
    /// The container's `/etc/hosts` instead of the default one (a pod's managed hosts file).
    pub hosts: Option<String>,
    /// The container's `/etc/resolv.conf` instead of the host's (a pod's DNS configuration).
    pub resolv_conf: Option<String>,
    /// `-i`: keep stdin open (fed through the attach socket).
    pub stdin: bool,
    /// Close stdin when the first attached client detaches (`docker run -i`, `stdinOnce`).
    pub stdin_once: bool,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `--cgroup-parent`: the cgroup the container's own cgroup goes under (`/skiff` if none);
    /// the node agent's pod cgroup.
    pub cgroup_parent: Option<String>,
    /// `--no-procfs`: keep the host's `/proc` files ([`crate::procview`]).
    pub no_procfs: bool,
    /// With the `/proc` view, a CPU quota also gives the container a cpuset of
    /// `ceil(quota)` CPUs so that `nproc` agrees (the docker-like CLI asks for it; the node
    /// agent does not: pods' CPU limits never pin them, as under the kubelet).
    pub quota_cpuset: bool,
}

/// What `exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command.
    pub cmd: Vec<String>,
    /// Extra `KEY=VALUE`s.
    pub env: Vec<String>,
    /// `-u` (the container's user if none).
    pub user: Option<String>,
    /// `-w` (the container's working directory if none).
    pub working_dir: Option<String>,
    /// A terminal for the process: its master is sent over this console socket (runc's
    /// protocol) and `exec` waits for the process to end.
    pub console_socket: Option<PathBuf>,
    /// The terminal's initial size, `(width, height)`.
    pub console_size: Option<(u16, u16)>,
}

/// A container as read from its files.
#[derive(Debug, Clone)]
pub struct Container {
    /// What it was created with.
    pub config: ContainerConfig,
    /// What happened to it, with the status corrected for a monitor that died.
    pub state: State,
}

impl Container {
    /// The status as it is now (a container whose monitor is gone has exited).
    pub fn status(&self) -> Status {
        self.state.status
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Whether it is running or waiting to restart (its monitor lives).
    pub fn is_active(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }
}

/// The container manager of one data root.
#[derive(Debug, Clone)]
pub struct Engine {
    data_root: PathBuf,
}

impl Engine {
    /// The engine over `data_root` (created if missing).
    pub fn open(data_root: &Path) -> Result<Engine> {
        for dir in [
            data_root.join("containers"),
            layout::names_dir(data_root),
            layout::runtime_root(data_root),
        ] {
            std::fs::create_dir_all(&dir).map_err(EngineError::io("create dir", &dir))?;
        }
        Ok(Engine {
            data_root: data_root.to_path_buf(),
        })
    }

    /// The data root.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The image store of the data root.
    pub fn images(&self) -> Result<ImageStore> {
        Ok(ImageStore::open(&self.data_root)?)
    }

    /// The OCI runtime's state store for engine containers.
    pub fn runtime(&self) -> StateStore {
        StateStore::new(layout::runtime_root(&self.data_root))
    }

    /// The files of container `id`.
    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir::new(&self.data_root, id)
    }

    /// Creates a container (record, name, init layer, writable layer); does not start it.
    pub fn create(&self, request: &CreateRequest) -> Result<ContainerConfig> {
        let images = self.images()?;
        let image = match &request.rootfs_dir {
            Some(_) => None,
            None => Some(images.resolve(&request.image)?),
        };
        let id = ContainerId::random()?;
        let name = match &request.name {
            Some(name) => {
                let name = name.strip_prefix('/').unwrap_or(name);
                validate_name(name)?;
                name.to_string()
            }
            None => random_name(&id),
        };
        let image_config = image
            .as_ref()
            .and_then(|i| i.config.config.clone())
            .unwrap_or_default();
        let (entrypoint, cmd) = match &request.entrypoint {
            Some(ep) => (
                if ep.is_empty() {
                    vec![]
                } else {
                    vec![ep.clone()]
                },
                request.cmd.clone(),
            ),
            None => (
                image_config.entrypoint.clone().unwrap_or_default(),
                if request.cmd.is_empty() {
                    image_config.cmd.clone().unwrap_or_default()
                } else {
                    request.cmd.clone()
                },
            ),
        };
        if entrypoint.is_empty() && cmd.is_empty() {
            return Err(EngineError::InvalidArgument(
                "no command specified".to_string(),
            ));
        }
        let user_env: Vec<String> = request
            .env
            .iter()
            .filter_map(|e| {
                if e.contains('=') {
                    Some(e.clone())
                } else {
                    std::env::var(e).ok().map(|v| format!("{e}={v}"))
                }
            })
            .collect();
        let env = crate::spec::merge_env(&image_config.env.clone().unwrap_or_default(), &user_env);
        let join_containers = self.resolve_joins(&request.join_containers)?;
        let (binds, inherited) = self.volumes_from(request)?;
        let mut volume_requests = request.volumes.clone();
        if request.image_volumes {
            let image_paths = image_config.volumes.iter().flat_map(|v| v.keys());
            volume_requests.extend(crate::sharing::image_volumes(
                image_paths,
                &binds,
                &request.volumes,
                &inherited,
                &request.tmpfs,
            ));
        }
        crate::sharing::check_mount_points(&binds, &volume_requests, &inherited, &request.tmpfs)?;
        let config = ContainerConfig {
            id: id.to_string(),
            name: name.clone(),
            created: crate::time::now_rfc3339(),
            image: request.image.clone(),
            image_id: image
                .as_ref()
                .map(|i| i.id().to_string())
                .unwrap_or_default(),
            chain: image
                .as_ref()
                .map(|i| i.chain.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default(),
            entrypoint,
            cmd,
            env,
            working_dir: request
                .working_dir
                .clone()
                .or(image_config.working_dir.clone())
                .unwrap_or_default(),
            user: request
                .user
                .clone()
                .or(image_config.user.clone())
                .unwrap_or_default(),
            hostname: request
                .hostname
                .clone()
                .unwrap_or_else(|| id.short().to_string()),
            binds,
            volumes: inherited,
            tmpfs: request.tmpfs.clone(),
            read_only: request.read_only,
            resources: request.resources.clone(),
            cap_add: request.cap_add.clone(),
            cap_drop: request.cap_drop.clone(),
            security_opt: request.security_opt.clone(),
            privileged: request.privileged,
            group_add: request.group_add.clone(),
            network: request.network,
            restart: request.restart,
            auto_remove: request.auto_remove,
            labels: {
                let mut labels = image_config.labels.clone().unwrap_or_default();
                labels.extend(request.labels.clone());
                labels
            },
            stop_signal: image_config.stop_signal.clone().unwrap_or_default(),
            rootfs_dir: request
                .rootfs_dir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            join_namespaces: request.join_namespaces.clone(),
            join_containers,
            stdin: request.stdin,
            stdin_once: request.stdin_once,
            tty: request.tty,
            cgroup_parent: request.cgroup_parent.clone().unwrap_or_default(),
            no_procfs: request.no_procfs,
            quota_cpuset: request.quota_cpuset,
        };
        let mut config = config;
        self.reserve_name(&name, id.as_str())?;
        // No volume this container finds may be removed until its record names it.
        let volume_lock = match self.volumes().and_then(|v| v.lock(false)) {
            Ok(lock) => lock,
            Err(err) => {
                let _ = std::fs::remove_file(layout::names_dir(&self.data_root).join(&name));
                return Err(err);
            }
        };
        let (volumes, made_volumes) = match self.prepare_volumes(&volume_requests) {
            Ok(made) => made,
            Err(err) => {
                let _ = std::fs::remove_file(layout::names_dir(&self.data_root).join(&name));
                return Err(err);
            }
        };
        config.volumes.extend(volumes);
        let dir = self.dir(id.as_str());
        let made = (|| -> Result<()> {
            std::fs::create_dir_all(dir.bundle())
                .map_err(EngineError::io("create dir", dir.bundle()))?;
            crate::rootfs::prepare_init_layer(&dir, &config)?;
            for (path, content) in [
                (dir.hosts_file(), &request.hosts),
                (dir.resolv_conf_file(), &request.resolv_conf),
            ] {
                if let Some(content) = content {
                    std::fs::write(&path, content).map_err(EngineError::io("write", &path))?;
                }
            }
            if let Some(image) = &image {
                images.prepare_rootfs(image, dir.path())?;
            }
            std::fs::write(dir.log(), b"").map_err(EngineError::io("write", dir.log()))?;
            record::write_json(&dir.state(), &State::created())?;
            record::write_json(&dir.config(), &config)
        })();
        drop(volume_lock);
        if let Err(err) = made {
            let _ = std::fs::remove_dir_all(dir.path());
            let _ = std::fs::remove_file(layout::names_dir(&self.data_root).join(&name));
            for volume in made_volumes {
                let _ = self.remove_volume(&volume, true);
            }
            return Err(err);
        }
        Ok(config)
    }

    fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let path = layout::names_dir(&self.data_root).join(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    return file
                        .write_all(id.as_bytes())
                        .map_err(EngineError::io("write", &path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    if !owner.is_empty() && self.dir(&owner).config().exists() {
                        return Err(EngineError::NameInUse {
                            name: name.to_string(),
                            id: owner,
                        });
                    }
                    // A name left by a container that is gone (or being written): take it.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(EngineError::io("create", &path)(e)),
            }
        }
        Err(EngineError::NameInUse {
            name: name.to_string(),
            id: std::fs::read_to_string(&path).unwrap_or_default(),
        })
    }

    /// Every container id.
    pub fn ids(&self) -> Result<Vec<ContainerId>> {
        let dir = self.data_root.join("containers");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(EngineError::io("list", &dir))? {
            let entry = entry.map_err(EngineError::io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = ContainerId::parse(&name) {
                if entry.path().join("config.json").exists() {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Loads container `id` (full id) with its live status.
    pub fn load(&self, id: &str) -> Result<Container> {
        let dir = self.dir(id);
        let config: ContainerConfig = record::read_json(&dir.config())?;
        let mut state: State = record::read_json(&dir.state()).unwrap_or_else(|_| State::created());
        if matches!(state.status, Status::Running | Status::Restarting) && !state.shim_alive() {
            // The monitor died without recording the end: the container is gone with it.
            state.status = Status::Exited;
            state.pid = 0;
            if state.exit_code == 0 {
                state.exit_code = 255;
            }
        }
        Ok(Container { config, state })
    }

    /// Finds a container by name or by (a unique prefix of) its id.
    pub fn find(&self, name_or_id: &str) -> Result<Container> {
        let name = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        let ids = self.ids()?;
        if let Some(id) = ids.iter().find(|id| id.as_str() == name) {
            return self.load(id.as_str());
        }
        if validate_name(name).is_ok() {
            let path = layout::names_dir(&self.data_root).join(name);
            if let Ok(owner) = std::fs::read_to_string(&path) {
                if self.dir(&owner).config().exists() {
                    return self.load(&owner);
                }
            }
        }
        match resolve_prefix(name, &ids) {
            Ok(id) if name.bytes().all(|b| b.is_ascii_hexdigit()) => self.load(id.as_str()),
            Err(crate::NamingError::Ambiguous { .. }) => Err(EngineError::InvalidArgument(
                format!("multiple IDs found with provided prefix: {name}"),
            )),
            _ => Err(EngineError::NoSuchContainer(name_or_id.to_string())),
        }
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            // A container removed meanwhile is skipped.
            if let Ok(container) = self.load(id.as_str()) {
                out.push(container);
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    /// Starts the container's monitor (`program shim --data-root DATA ID`, where `program` is
    /// the `skiff` binary) and waits until the container runs or failed to start.
    pub fn start(&self, id: &str, program: &Path) -> Result<ShimHandle> {
        let mut handle = self.spawn_monitor(id, program, false)?;
        handle.wait_started()?;
        Ok(handle)
    }

    /// Starts the container's monitor without waiting for the container; with `wait_attach`
    /// the monitor first waits for one client on its attach socket ([`crate::attach`]).
    pub(crate) fn spawn_monitor(
        &self,
        id: &str,
        program: &Path,
        wait_attach: bool,
    ) -> Result<ShimHandle> {
        let container = self.load(id)?;
        if container.is_active() {
            return Err(EngineError::InvalidArgument(format!(
                "container {id} is already running"
            )));
        }
        let dir = self.dir(id);
        let _ = std::fs::remove_file(dir.stop_marker());
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.shim_log())
            .map_err(EngineError::io("open", dir.shim_log()))?;
        let mut command = Command::new(program);
        command.arg("shim").arg("--data-root").arg(&self.data_root);
        if wait_attach {
            command.arg("--wait-attach");
        }
        let mut child = command
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(EngineError::io("start the monitor", program))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| EngineError::Shim("no report pipe".into()))?;
        Ok(ShimHandle {
            id: id.to_string(),
            data_root: self.data_root.clone(),
            child,
            report: BufReader::new(stdout),
        })
    }

    /// Stops a container: the stop signal, then SIGKILL after `timeout`. The restart policy
    /// does not bring it back.
    pub fn stop(&self, container: &Container, timeout: Duration) -> Result<()> {
        let id = container.id();
        let dir = self.dir(id);
        std::fs::write(dir.stop_marker(), b"")
            .map_err(EngineError::io("write", dir.stop_marker()))?;
        if !container.is_active() {
            return Ok(());
        }
        let state = &container.state;
        if state.shim_alive() {
            let _ = skiff_sys::process::send_signal(state.shim_pid, libc_sigterm());
        }
        let signal = if container.config.stop_signal.is_empty() {
            libc_sigterm()
        } else {
            skiff_runtime::container::parse_signal(&container.config.stop_signal)?
        };
        let store = self.runtime();
        let _ = skiff_runtime::container::kill(&store, id, signal, false);
        if self.wait_monitor_gone(container, timeout) {
            return Ok(());
        }
        let _ = skiff_runtime::container::kill(&store, id, 9, true);
        if self.wait_monitor_gone(container, KILL_DEADLINE) {
            return Ok(());
        }
        Err(EngineError::Timeout {
            id: id.to_string(),
            what: "stop",
            seconds: KILL_DEADLINE.as_secs(),
        })
    }

    /// Waits until the container's monitor has exited (true) or `deadline` passed (false).
    fn wait_monitor_gone(&self, container: &Container, deadline: Duration) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if !container.state.shim_alive() {
                return true;
            }
            if start.elapsed() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&self, container: &Container, signal: i32) -> Result<()> {
        if container.status() != Status::Running {
            return Err(EngineError::NotRunning {
                id: container.id().to_string(),
            });
        }
        if signal == 9 || signal == 15 {
            // A user's kill ends the container for good, as `docker kill` does.
            let marker = self.dir(container.id()).stop_marker();
            std::fs::write(&marker, b"").map_err(EngineError::io("write", &marker))?;
        }
        skiff_runtime::container::kill(&self.runtime(), container.id(), signal, false)?;
        Ok(())
    }

    /// Removes a container: with `force` a running one is killed first.
    pub fn remove(&self, container: &Container, force: bool) -> Result<()> {
        self.remove_container(container, force)
    }

    /// Removes a container and then its anonymous volumes that no other container uses
    /// (`rm -v`).
    pub fn remove_with_volumes(&self, container: &Container, force: bool) -> Result<()> {
        self.remove_container(container, force)?;
        self.remove_anonymous_volumes(&container.config)
    }

    fn remove_container(&self, container: &Container, force: bool) -> Result<()> {
        if container.is_active() {
            if !force {
                return Err(EngineError::Running {
                    name: container.config.name.clone(),
                });
            }
            let marker = self.dir(container.id()).stop_marker();
            std::fs::write(&marker, b"").map_err(EngineError::io("write", &marker))?;
            if container.state.shim_alive() {
                let _ = skiff_sys::process::send_signal(container.state.shim_pid, libc_sigterm());
            }
            let _ = skiff_runtime::container::kill(&self.runtime(), container.id(), 9, true);
            if !self.wait_monitor_gone(container, KILL_DEADLINE) {
                return Err(EngineError::Timeout {
                    id: container.id().to_string(),
                    what: "be killed",
                    seconds: KILL_DEADLINE.as_secs(),
                });
            }
        }
        remove_files(&self.data_root, &container.config)
    }

    /// Runs a command in a running container and returns its exit code. The calling process
    /// must be single-threaded (the runtime forks); it becomes a child subreaper.
    pub fn exec(&self, container: &Container, request: &ExecRequest) -> Result<i32> {
        let id = container.id();
        if container.status() != Status::Running {
            return Err(EngineError::NotRunning { id: id.to_string() });
        }
        let dir = self.dir(id);
        let spec_path = dir.bundle().join("config.json");
        let text =
            std::fs::read_to_string(&spec_path).map_err(EngineError::io("read", &spec_path))?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_str(&text).map_err(|e| EngineError::Corrupt {
                path: spec_path.clone(),
                detail: e.to_string(),
            })?;
        let process = spec.process().clone().ok_or_else(|| EngineError::Corrupt {
            path: spec_path.clone(),
            detail: "no process".into(),
        })?;
        let mut plan = skiff_runtime::plan::ProcessPlan::from_oci(&process)
            .map_err(skiff_runtime::ContainerError::from)?;
        plan.args = request.cmd.clone();
        plan.terminal = request.console_socket.is_some();
        plan.console_size = request.console_size;
        plan.env = crate::spec::merge_env(&plan.env, &request.env);
        if plan.terminal && !plan.env.iter().any(|e| e.starts_with("TERM=")) {
            plan.env.push("TERM=xterm".to_string());
        }
        if let Some(cwd) = &request.working_dir {
            plan.cwd = PathBuf::from(cwd);
        }
        if let Some(user) = &request.user {
            let rootfs = dir.rootfs();
            let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_default();
            let resolved = crate::users::resolve(user, &read("etc/passwd"), &read("etc/group"))?;
            plan.uid = resolved.uid;
            plan.gid = resolved.gid;
            plan.additional_gids = resolved.additional_gids;
        }
        let plan = plan
            .with_seccomp_of(&spec)
            .map_err(skiff_runtime::ContainerError::from)?;
        skiff_sys::set_child_subreaper(true)?;
        let options = skiff_runtime::container::ExecOptions {
            process: plan,
            // With a terminal the process is started detached (the runtime sends the master
            // while it starts) and waited for here: it is our child through the subreaper.
            detach: request.console_socket.is_some(),
            pid_file: None,
            console_socket: request.console_socket.clone(),
        };
        match skiff_runtime::container::exec(&self.runtime(), id, &options) {
            Ok(skiff_runtime::container::ExecOutcome::Exited(status)) => Ok(status.code()),
            Ok(skiff_runtime::container::ExecOutcome::Started(pid)) => {
                Ok(skiff_sys::process::wait_for_exit(pid)?.code())
            }
            Err(skiff_runtime::ContainerError::Init(message)) => Err(EngineError::StartFailed {
                exit_code: if message.contains("not found") {
                    127
                } else {
                    126
                },
                message: format!("OCI runtime exec failed: {message}"),
            }),
            Err(err) => Err(err.into()),
        }
    }
}

/// SIGTERM's number.
fn libc_sigterm() -> i32 {
    15
}

/// Removes a stopped container's files, mounts, runtime state and name.
pub fn remove_files(data_root: &Path, config: &ContainerConfig) -> Result<()> {
    let dir = ContainerDir::new(data_root, &config.id);
    let store = StateStore::new(layout::runtime_root(data_root));
    if store.exists(&config.id) {
        let _ = skiff_runtime::container::delete(&store, &config.id, true);
    }
    crate::rootfs::unmount(&dir.rootfs())?;
    if crate::rootfs::is_mounted(&dir.rootfs()) {
        return Err(EngineError::Shim(format!(
            "{} is still mounted: not removing the container",
            dir.rootfs().display()
        )));
    }
    // The record goes first, so a half-removed container is never listed.
    let _ = std::fs::remove_file(dir.config());
    let name_file = layout::names_dir(data_root).join(&config.name);
    if std::fs::read_to_string(&name_file).is_ok_and(|owner| owner == config.id) {
        let _ = std::fs::remove_file(&name_file);
    }
    match std::fs::remove_dir_all(dir.path()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io("remove", dir.path())(e)),
    }
}

/// A name like Docker's (`adjective_scientist`), made from the id's bytes.
fn random_name(id: &ContainerId) -> String {
    const LEFT: &[&str] = &[
        "admiring",
        "brave",
        "calm",
        "dazzling",
        "eager",
        "focused",
        "gallant",
        "happy",
        "jolly",
        "keen",
        "lucid",
        "modest",
        "nifty",
        "optimistic",
        "quirky",
        "serene",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermi", "galileo", "hopper", "johnson", "knuth",
        "lovelace", "meitner", "noether", "pascal", "ritchie", "tesla", "turing",
    ];
    let hex = id.as_str();
    let byte = |i: usize| usize::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
    format!(
        "{}_{}_{}",
        LEFT[byte(0) % LEFT.len()],
        RIGHT[byte(2) % RIGHT.len()],
        &hex[4..8]
    )
}

/// The monitor of a container this process started: its report pipe says when the container
/// started and when it ended.
#[derive(Debug)]
pub struct ShimHandle {
    id: String,
    data_root: PathBuf,
    child: Child,
    report: BufReader<ChildStdout>,
}

impl ShimHandle {
    pub(crate) fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.report.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }

    pub(crate) fn wait_started(&mut self) -> Result<()> {
        let line = self.next_line();
        self.started_from(line)
    }

    /// What the monitor's first report line (after any `listening`) means.
    pub(crate) fn started_from(&mut self, line: Option<String>) -> Result<()> {
        match line {
            Some(line) if line.starts_with("started") => Ok(()),
            // A monitor waiting for its first attach client says so first.
            Some(line) if line == "listening" => self.wait_started(),
            Some(line) if line.starts_with("error ") => {
                let rest = &line["error ".len()..];
                let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
                let _ = self.child.wait();
                Err(EngineError::StartFailed {
                    exit_code: code.parse().unwrap_or(125),
                    message: message.to_string(),
                })
            }
            _ => {
                let _ = self.child.wait();
                let log = ContainerDir::new(&self.data_root, &self.id).shim_log();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("it exited without a word");
                Err(EngineError::Shim(last.to_string()))
            }
        }
    }

    /// Waits for the container to end for good (after any restarts); returns its exit code.
    /// The monitor then finishes (and removes an `--rm` container) once this handle is dropped.
    pub fn wait_exited(&mut self) -> Result<i32> {
        loop {
            match self.next_line() {
                Some(line) => {
                    if let Some(code) = line.strip_prefix("exited ") {
                        return Ok(code.trim().parse().unwrap_or(255));
                    }
                }
                None => {
                    let dir = ContainerDir::new(&self.data_root, &self.id);
                    let state: Option<State> = record::read_json(&dir.state()).ok();
                    return Ok(state.map(|s| s.exit_code).unwrap_or(255));
                }
            }
        }
    }

    /// Waits up to `timeout` for the container to end for good: `Some(exit code)` once it
    /// has, `None` while it runs.
    pub fn poll_exited(&mut self, timeout: Duration) -> Result<Option<i32>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        if self.report.buffer().is_empty() {
            let mut fds = [PollFd::new(
                self.report.get_ref().as_fd(),
                PollFlags::POLLIN,
            )];
            let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
                Ok(_) => {}
                Err(errno) => return Err(EngineError::Shim(format!("poll: {errno}"))),
            }
        }
        match self.next_line() {
            Some(line) => Ok(line
                .strip_prefix("exited ")
                .map(|code| code.trim().parse().unwrap_or(255))),
            None => {
                let dir = ContainerDir::new(&self.data_root, &self.id);
                let state: Option<State> = record::read_json(&dir.state()).ok();
                Ok(Some(state.map(|s| s.exit_code).unwrap_or(255)))
            }
        }
    }

    /// Lets the monitor go on alone (and reaps it if it already ended).
    pub fn detach(mut self) {
        let _ = self.child.try_wait();
    }

    /// Closes the report pipe and waits for the monitor to exit.
    pub fn finish(self) {
        let ShimHandle {
            mut child, report, ..
        } = self;
        drop(report);
        let _ = child.wait();
    }
}
