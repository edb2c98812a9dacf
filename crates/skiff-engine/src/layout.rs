//! Where a container's files live under the data root:
//!
//! ```text
//! DATA/containers/<id>/config.json      the engine's record (what run asked for)
//!                      state.json       what happened (written by the monitor)
//!                      container.log    stdout/stderr in the CRI log format
//!                      shim.log         the monitor's own diagnostics
//!                      attach.sock      the monitor's attach socket (stdin, live output, resize)
//!                      console.sock     where the runtime sends a terminal's master (briefly)
//!                      stop-requested   present once a user stopped it (no restart)
//!                      hostname hosts resolv.conf   bind-mounted into the container
//!                      init/            the init layer (placeholders), an overlay lower dir
//!                      upper/ work/     the container's writable layer
//!                      bundle/config.json, bundle/rootfs (the overlay mount point)
//! DATA/names/<name>                     the id owning a name (created exclusively)
//! DATA/volumes/<name>/volume.json       a volume's record ([`crate::volume`])
//!                     _data/            its content, bind-mounted into containers
//! DATA/runtime/<id>/                    the OCI runtime's state while it runs
//! ```

use std::path::{Path, PathBuf};

/// The files of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    dir: PathBuf,
}

impl ContainerDir {
    /// The directory of container `id` under `data_root`.
    pub fn new(data_root: &Path, id: &str) -> ContainerDir {
        ContainerDir {
            dir: data_root.join("containers").join(id),
        }
    }

    /// `DATA/containers/<id>`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The engine's record.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The monitor's record.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The monitor's diagnostics.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// The monitor's attach socket ([`crate::attach`]).
    pub fn attach_socket(&self) -> PathBuf {
        self.dir.join("attach.sock")
    }

    /// The console socket the runtime sends a terminal's master to.
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Present once a user stopped the container: the restart policy does not apply.
    pub fn stop_marker(&self) -> PathBuf {
        self.dir.join("stop-requested")
    }

    /// `/etc/hostname` of the container.
    pub fn hostname_file(&self) -> PathBuf {
        self.dir.join("hostname")
    }

    /// `/etc/hosts` of the container.
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// `/etc/resolv.conf` of the container.
    pub fn resolv_conf_file(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    /// The init layer.
    pub fn init_layer(&self) -> PathBuf {
        self.dir.join("init")
    }

    /// The writable layer.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// The OCI bundle.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// Where the root filesystem is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("bundle").join("rootfs")
    }
}

/// The directory of the name index.
pub fn names_dir(data_root: &Path) -> PathBuf {
    data_root.join("names")
}

/// The OCI runtime's state root for engine containers.
pub fn runtime_root(data_root: &Path) -> PathBuf {
    data_root.join("runtime")
}
