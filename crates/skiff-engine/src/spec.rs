//! The OCI bundle's `config.json` of a container, built as data from the engine's record:
//! the runtime's default spec, the image's process settings as `run` resolved them, the init
//! layer's files, mounts, limits, capabilities and the default seccomp profile.

use std::path::Path;

use serde_json::{Value, json};

use crate::EngineError;
use crate::procview::ProcView;
use crate::record::{ContainerConfig, NetworkMode};
use crate::users::ResolvedUser;

/// The `PATH` Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Replaces the `KEY=` entries of `base` by those of `overrides` (in place) and appends the
/// others, as Docker merges environments.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = base.to_vec();
    for entry in overrides {
        let k = key(entry);
        match out.iter_mut().find(|e| key(e) == k) {
            Some(slot) => *slot = entry.clone(),
            None => out.push(entry.clone()),
        }
    }
    out
}

/// The environment of the container's process: `PATH`, `HOSTNAME`, the configured variables,
/// and `HOME` from the user's passwd entry when none is set (the order `docker run` gives).
pub fn process_env(config: &ContainerConfig, home: &str) -> Vec<String> {
    let base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", config.hostname),
    ];
    let mut env = merge_env(&base, &config.env);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    env
}

/// The capability set after `--cap-add` and `--cap-drop` (names with or without `CAP_`,
/// any case, `ALL`).
pub fn capabilities(add: &[String], drop: &[String]) -> Vec<String> {
    let norm = |c: &String| {
        let upper = c.to_ascii_uppercase();
        if upper == "ALL" || upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let add: Vec<String> = add.iter().map(norm).collect();
    let drop: Vec<String> = drop.iter().map(norm).collect();
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        skiff_runtime::spec::known_capabilities()
    } else {
        skiff_runtime::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for cap in add.iter().filter(|c| *c != "ALL") {
        if !caps.contains(cap) {
            caps.push(cap.clone());
        }
    }
    caps.retain(|c| !drop.contains(c));
    caps
}

/// Host files bind-mounted over the init layer's placeholders.
#[derive(Debug, Clone)]
pub struct InitFiles<'a> {
    /// `/etc/hostname`.
    pub hostname: &'a Path,
    /// `/etc/hosts`.
    pub hosts: &'a Path,
    /// `/etc/resolv.conf`.
    pub resolv_conf: &'a Path,
}

/// Builds the bundle's `config.json`. `rootfs` is relative to the bundle; `view` adds the
/// container's own `/proc` files and, under a CPU quota, its cpuset ([`ProcView`]).
pub fn build(
    config: &ContainerConfig,
    user: &ResolvedUser,
    files: &InitFiles<'_>,
    view: &ProcView,
) -> Result<Value, EngineError> {
    let argv = config.argv();
    if argv.is_empty() {
        return Err(EngineError::InvalidArgument(
            "no command specified".to_string(),
        ));
    }
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut spec = skiff_runtime::spec::default_spec(&args, false);
    let caps = if config.privileged {
        skiff_sys::capabilities::bounding_names()
    } else {
        capabilities(&config.cap_add, &config.cap_drop)
    };
    let mut gids = user.additional_gids.clone();
    for gid in &config.group_add {
        if !gids.contains(gid) {
            gids.push(*gid);
        }
    }
    let cwd = if config.working_dir.is_empty() {
        "/".to_string()
    } else {
        config.working_dir.clone()
    };
    spec["process"] = json!({
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": gids},
        "args": argv,
        "env": process_env(config, &user.home),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": config.no_new_privileges(),
    });
    spec["root"] = json!({"path": "rootfs", "readonly": config.read_only});
    let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    for (dest, source) in [
        ("/etc/resolv.conf", files.resolv_conf),
        ("/etc/hostname", files.hostname),
        ("/etc/hosts", files.hosts),
    ] {
        mounts.push(json!({
            "destination": dest, "type": "bind", "source": source,
            "options": ["rbind", "rprivate"],
        }));
    }
    mounts.extend(view.mounts());
    for bind in &config.binds {
        let mut options = vec!["rbind", "rprivate"];
        if bind.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": bind.destination, "type": "bind", "source": bind.source,
            "options": options,
        }));
    }
    for volume in &config.volumes {
        let mut options = vec!["rbind", "rprivate"];
        if volume.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": volume.destination, "type": "bind", "source": volume.source,
            "options": options,
        }));
    }
    for tmpfs in &config.tmpfs {
        let mut options = vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ];
        options.extend(tmpfs.options.iter().cloned());
        mounts.push(json!({
            "destination": tmpfs.destination, "type": "tmpfs", "source": "tmpfs",
            "options": options,
        }));
    }
    spec["mounts"] = Value::Array(mounts);

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match config.network {
        NetworkMode::None => {
            namespaces.push(json!({"type": "network"}));
            namespaces.push(json!({"type": "uts"}));
            spec["hostname"] = json!(config.hostname);
        }
        NetworkMode::Host => {
            if let Some(obj) = spec.as_object_mut() {
                obj.remove("hostname");
            }
        }
    }
    for join in &config.join_namespaces {
        namespaces.retain(|n| n["type"] != json!(join.kind));
        if join.path.is_empty() {
            // The host's namespace: simply none of our own.
            continue;
        }
        namespaces.push(json!({"type": join.kind, "path": join.path}));
        if join.kind == "uts"
            && let Some(obj) = spec.as_object_mut()
        {
            // The hostname belongs to the namespace's owner.
            obj.remove("hostname");
        }
    }
    let linux = &mut spec["linux"];
    linux["namespaces"] = Value::Array(namespaces);
    linux["cgroupsPath"] = json!(cgroups_path(config));
    let r = &config.resources;
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let mut notify_affinity = false;
    if r.memory > 0 {
        resources["memory"] = json!({"limit": r.memory});
    }
    if r.nano_cpus > 0 || r.cpu_shares > 0 {
        let mut cpu = json!({});
        if r.nano_cpus > 0 {
            let period: i64 = 100_000;
            cpu["period"] = json!(period);
            cpu["quota"] = json!(r.nano_cpus * period / 1_000_000_000);
            if let Some(cpus) = view.cpuset(&config.id, r.nano_cpus) {
                if config.quota_cpuset {
                    cpu["cpus"] = json!(cpus);
                } else {
                    // Not pinned (a pod): the agent answers sched_getaffinity instead.
                    notify_affinity = true;
                }
            }
        }
        if r.cpu_shares > 0 {
            cpu["shares"] = json!(r.cpu_shares);
        }
        resources["cpu"] = cpu;
    }
    if r.pids_limit > 0 {
        resources["pids"] = json!({"limit": r.pids_limit});
    }
    linux["resources"] = resources;
    if config.privileged {
        privileged(&mut spec);
    } else if let Some(path) = config.seccomp_profile_path() {
        spec["linux"]["seccomp"] = seccomp_profile(Path::new(path))?;
    } else if config.seccomp_confined() {
        spec["linux"]["seccomp"] = skiff_runtime::seccomp::default_profile();
    }
    if !config.privileged {
        view.notify_agent(&mut spec["linux"], notify_affinity);
    }
    Ok(spec)
}

/// The container's cgroup: `/skiff/<id>`, or `<cgroup parent>/<id>`.
pub fn cgroups_path(config: &ContainerConfig) -> String {
    let parent = config.cgroup_parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/skiff/{}", config.id)
    } else if parent.starts_with('/') {
        format!("{parent}/{}", config.id)
    } else {
        format!("/{parent}/{}", config.id)
    }
}

/// What `--privileged` changes: no masked or read-only paths, `/sys` and the cgroup tree
/// writable, every host device (created in the container and allowed by the cgroup), no
/// seccomp (the capabilities are already all of them).
fn privileged(spec: &mut Value) {
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        linux.remove("seccomp");
        linux.insert("devices".into(), Value::Array(host_devices()));
    }
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            if matches!(m["type"].as_str(), Some("sysfs" | "cgroup"))
                && let Some(options) = m["options"].as_array_mut()
            {
                options.retain(|o| o != "ro");
                options.push(json!("rw"));
            }
        }
    }
}

/// The character and block devices under the host's `/dev` (not `/dev/pts`, `/dev/shm`,
/// `/dev/mqueue` and the console, which the container has its own of), as `linux.devices`.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !matches!(path.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                    dirs.push(path);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if matches!(
                path.to_str(),
                Some("/dev/console" | "/dev/ptmx" | "/dev/tty")
            ) {
                continue;
            }
            let rdev = meta.rdev();
            let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
            let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
            out.push(json!({
                "path": path, "type": kind, "major": major, "minor": minor,
                "fileMode": meta.mode() & 0o7777, "uid": meta.uid(), "gid": meta.gid(),
            }));
        }
    }
    out
}

/// A seccomp profile from a JSON file (the OCI `linux.seccomp` form, or Docker's, whose
/// extra fields are left out).
pub fn seccomp_profile(path: &Path) -> Result<Value, EngineError> {
    let text = std::fs::read_to_string(path).map_err(EngineError::io("read", path))?;
    let profile: Value = serde_json::from_str(&text).map_err(|e| {
        EngineError::InvalidArgument(format!(
            "cannot load seccomp profile {}: {e}",
            path.display()
        ))
    })?;
    let mut out = json!({
        "defaultAction": profile
            .get("defaultAction")
            .cloned()
            .unwrap_or_else(|| json!("SCMP_ACT_ALLOW")),
    });
    for key in ["defaultErrnoRet", "architectures", "flags"] {
        if let Some(v) = profile.get(key) {
            out[key] = v.clone();
        }
    }
    let mut syscalls = Vec::new();
    for rule in profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut names: Vec<Value> = rule
            .get("names")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(name) = rule.get("name") {
            names.push(name.clone());
        }
        let mut r =
            json!({"names": names, "action": rule.get("action").cloned().unwrap_or(Value::Null)});
        for key in ["errnoRet", "args"] {
            if let Some(v) = rule.get(key).filter(|v| !v.is_null()) {
                r[key] = v.clone();
            }
        }
        syscalls.push(r);
    }
    if !syscalls.is_empty() {
        out["syscalls"] = Value::Array(syscalls);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BindMount, Resources, RestartPolicy};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "a".repeat(64),
            name: "web".into(),
            created: crate::time::ZERO_TIME.into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            chain: vec![],
            entrypoint: vec![],
            cmd: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: String::new(),
            user: String::new(),
            hostname: "aaaaaaaaaaaa".into(),
            binds: vec![BindMount {
                source: "/srv".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            volumes: vec![crate::record::VolumeMount {
                name: "cache".into(),
                source: "/var/lib/skiff/volumes/cache/_data".into(),
                destination: "/cache".into(),
                read_only: false,
                anonymous: false,
                no_copy: false,
            }],
            tmpfs: vec![],
            read_only: false,
            resources: Resources {
                memory: 64 << 20,
                nano_cpus: 500_000_000,
                ..Resources::default()
            },
            cap_add: vec![],
            cap_drop: vec![],
            security_opt: vec![],
            privileged: false,
            group_add: vec![],
            network: NetworkMode::None,
            restart: RestartPolicy::No,
            auto_remove: false,
            labels: Default::default(),
            stop_signal: String::new(),
            rootfs_dir: String::new(),
            join_namespaces: vec![],
            join_containers: vec![],
            stdin: false,
            stdin_once: false,
            tty: false,
            cgroup_parent: String::new(),
            no_procfs: false,
            quota_cpuset: true,
        }
    }

    fn user() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![10],
            home: "/root".into(),
        }
    }

    fn files() -> InitFiles<'static> {
        InitFiles {
            hostname: Path::new("/c/hostname"),
            hosts: Path::new("/c/hosts"),
            resolv_conf: Path::new("/c/resolv.conf"),
        }
    }

    #[test]
    fn the_cgroup_goes_under_the_parent() {
        let mut c = config();
        assert_eq!(cgroups_path(&c), format!("/skiff/{}", c.id));
        c.cgroup_parent = "/skiff/kubepods/burstable/podabc/".into();
        assert_eq!(
            cgroups_path(&c),
            format!("/skiff/kubepods/burstable/podabc/{}", c.id)
        );
        c.cgroup_parent = "kubepods".into();
        assert_eq!(cgroups_path(&c), format!("/kubepods/{}", c.id));
    }

    #[test]
    fn the_environment_follows_dockers_order() {
        let env = process_env(&config(), "/root");
        assert_eq!(
            env,
            vec!["PATH=/bin", "HOSTNAME=aaaaaaaaaaaa", "A=1", "HOME=/root"]
        );
    }

    #[test]
    fn capabilities_add_and_drop() {
        let caps = capabilities(&["sys_admin".into()], &["CAP_CHOWN".into(), "kill".into()]);
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert_eq!(
            capabilities(&["NET_ADMIN".into()], &["ALL".into()]),
            vec!["CAP_NET_ADMIN"]
        );
    }

    #[test]
    fn the_spec_parses_and_carries_the_flags() {
        let spec = build(&config(), &user(), &files(), &ProcView::none()).unwrap();
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(spec.clone()).unwrap();
        let linux = parsed.linux().clone().unwrap();
        let resources = linux.resources().clone().unwrap();
        assert_eq!(resources.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(resources.cpu().clone().unwrap().quota(), Some(50_000));
        assert!(linux.seccomp().is_some());
        assert_eq!(spec["root"]["readonly"], json!(false));
        assert_eq!(spec["process"]["noNewPrivileges"], json!(false));
        let mounts = spec["mounts"].as_array().unwrap();
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));
        let cache = mounts
            .iter()
            .find(|m| m["destination"] == "/cache")
            .unwrap();
        assert_eq!(cache["source"], "/var/lib/skiff/volumes/cache/_data");
        assert!(!cache["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn the_proc_view_adds_the_files_and_a_cpuset_under_a_quota() {
        let view = ProcView {
            mount_point: Some("/data/procfs/mnt".into()),
            host_cpus: vec![0, 1, 2, 3],
            seccomp_agent: None,
        };
        let mut c = config();
        c.resources.nano_cpus = 1_000_000_000;
        let spec = build(&c, &user(), &files(), &view).unwrap();
        let mounts = spec["mounts"].as_array().unwrap();
        let meminfo = mounts
            .iter()
            .find(|m| m["destination"] == "/proc/meminfo")
            .unwrap();
        assert_eq!(meminfo["source"], "/data/procfs/mnt/meminfo");
        // After the /proc mount, which they cover.
        let proc_at = mounts.iter().position(|m| m["destination"] == "/proc");
        let meminfo_at = mounts
            .iter()
            .position(|m| m["destination"] == "/proc/meminfo");
        assert!(proc_at < meminfo_at);
        // "aaaaaaaa..." picks CPU 0xaaaaaaaa % 4 = 2.
        assert_eq!(spec["linux"]["resources"]["cpu"]["cpus"], json!("2"));
        let _: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        // Without a view: neither.
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        assert!(spec["linux"]["resources"]["cpu"].get("cpus").is_none());
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(!mounts.iter().any(|m| m["destination"] == "/proc/meminfo"));
    }

    #[test]
    fn an_unpinned_quota_notifies_sched_getaffinity_instead_of_a_cpuset() {
        let view = ProcView {
            mount_point: Some("/data/procfs/mnt".into()),
            host_cpus: vec![0, 1, 2, 3],
            seccomp_agent: Some("/data/procfs/seccomp.sock".into()),
        };
        let names = |spec: &Value| spec["linux"]["seccomp"]["syscalls"][0]["names"].clone();
        let mut c = config();
        c.resources.nano_cpus = 1_000_000_000;
        // `skiff run --cpus 1`: a cpuset, and only sysinfo goes to the agent.
        let spec = build(&c, &user(), &files(), &view).unwrap();
        assert_eq!(spec["linux"]["resources"]["cpu"]["cpus"], json!("2"));
        assert_eq!(names(&spec), json!(["sysinfo"]));
        // A pod's limit: no cpuset; the agent answers sched_getaffinity too.
        c.quota_cpuset = false;
        let spec = build(&c, &user(), &files(), &view).unwrap();
        assert!(spec["linux"]["resources"]["cpu"].get("cpus").is_none());
        assert_eq!(names(&spec), json!(["sysinfo", "sched_getaffinity"]));
        assert_eq!(
            spec["linux"]["seccomp"]["syscalls"][0]["action"],
            "SCMP_ACT_NOTIFY"
        );
        // A quota of every CPU (or none) leaves the kernel's answer.
        c.resources.nano_cpus = 4_000_000_000;
        let spec = build(&c, &user(), &files(), &view).unwrap();
        assert_eq!(names(&spec), json!(["sysinfo"]));
    }

    #[test]
    fn unconfined_and_host_network_change_the_spec() {
        let mut c = config();
        c.security_opt = vec!["seccomp=unconfined".into(), "no-new-privileges".into()];
        c.network = NetworkMode::Host;
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        assert!(spec["linux"].get("seccomp").is_none());
        assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(
            !ns.iter()
                .any(|n| n["type"] == "network" || n["type"] == "uts")
        );
        assert!(spec.get("hostname").is_none());
    }

    #[test]
    fn privileged_opens_everything_and_group_add_extends_the_groups() {
        let mut c = config();
        c.privileged = true;
        c.group_add = vec![10, 2000];
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        assert!(spec["linux"].get("seccomp").is_none());
        assert!(spec["linux"].get("maskedPaths").is_none());
        assert!(spec["linux"].get("readonlyPaths").is_none());
        assert_eq!(
            spec["linux"]["resources"]["devices"][0]["allow"],
            json!(true)
        );
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([10, 2000]));
        let _: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
    }

    #[test]
    fn a_profile_file_becomes_the_seccomp_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[],"syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","comment":"x"}]}"#,
        )
        .unwrap();
        let mut c = config();
        c.security_opt = vec![format!("seccomp={}", path.display())];
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        assert_eq!(
            spec["linux"]["seccomp"]["syscalls"][0]["names"],
            json!(["mkdir"])
        );
        assert!(spec["linux"]["seccomp"].get("archMap").is_none());
        let _: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        c.security_opt = vec![format!("seccomp={}/missing.json", dir.path().display())];
        assert!(build(&c, &user(), &files(), &ProcView::none()).is_err());
    }

    #[test]
    fn an_empty_join_path_shares_the_host_namespace() {
        let mut c = config();
        c.join_namespaces = vec![crate::record::NamespaceJoin {
            kind: "pid".into(),
            path: String::new(),
        }];
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "pid"), "{ns:?}");
        assert!(ns.iter().any(|n| n["type"] == "ipc"), "{ns:?}");
    }

    #[test]
    fn joined_namespaces_are_entered_by_path_and_keep_their_hostname() {
        let mut c = config();
        c.join_namespaces = vec![
            crate::record::NamespaceJoin {
                kind: "network".into(),
                path: "/proc/42/ns/net".into(),
            },
            crate::record::NamespaceJoin {
                kind: "uts".into(),
                path: "/proc/42/ns/uts".into(),
            },
        ];
        let spec = build(&c, &user(), &files(), &ProcView::none()).unwrap();
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        let net: Vec<_> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0]["path"], "/proc/42/ns/net");
        assert!(
            ns.iter()
                .any(|n| n["type"] == "uts" && n["path"] == "/proc/42/ns/uts")
        );
        assert!(spec.get("hostname").is_none());
        let _: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
    }
}
