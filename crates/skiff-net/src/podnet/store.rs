//! Pod address allocations persisted as one file per address in the state directory.
//!
//! The file `STATE_DIR/10.42.0.7` holds the uid of the pod that owns 10.42.0.7 (the layout of
//! CNI's host-local plugin). Each is written to a temporary file, synced and renamed into place,
//! so a crash leaves either the old state or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::PodNetError;
use crate::ipam::{Ipam, Ipv4Cidr};

/// The allocations of one node, in memory and on disk.
#[derive(Debug)]
pub(crate) struct AddressStore {
    dir: PathBuf,
    ipam: Ipam,
    owners: BTreeMap<String, Ipv4Addr>,
}

impl AddressStore {
    /// Reads the allocations in `dir` (created if missing); files for addresses outside `cidr`
    /// are left alone and ignored, leftover temporary files are removed.
    pub fn load(dir: &Path, cidr: Ipv4Cidr) -> Result<AddressStore, PodNetError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| PodNetError::State {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut store = AddressStore {
            dir: dir.to_path_buf(),
            ipam: Ipam::new(cidr),
            owners: BTreeMap::new(),
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
            let entry = entry.map_err(io("list", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Ok(addr) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            if !cidr.contains(addr) {
                continue;
            }
            let path = entry.path();
            let owner = std::fs::read_to_string(&path).map_err(io("read", &path))?;
            entries.push((addr, owner.trim_end_matches('\n').to_string()));
        }
        entries.sort();
        for (addr, owner) in entries {
            if owner.is_empty() || store.owners.contains_key(&owner) {
                continue;
            }
            if store.ipam.restore(addr, &owner) {
                store.owners.insert(owner, addr);
            }
        }
        Ok(store)
    }

    /// The address `uid` holds.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.owners.get(uid).copied()
    }

    /// Every owner and its address.
    pub fn owners(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.owners.iter().map(|(uid, addr)| (uid.as_str(), *addr))
    }

    /// The address of `uid`, allocated and persisted if it had none; true if it is new.
    pub fn allocate(&mut self, uid: &str) -> Result<(Ipv4Addr, bool), PodNetError> {
        if let Some(addr) = self.get(uid) {
            return Ok((addr, false));
        }
        let addr = self
            .ipam
            .allocate(uid)
            .map_err(|source| PodNetError::Ipam {
                pod_uid: uid.to_string(),
                source,
            })?;
        if let Err(error) = self.write(addr, uid) {
            self.ipam.release(uid);
            return Err(error);
        }
        self.owners.insert(uid.to_string(), addr);
        Ok((addr, true))
    }

    /// Frees the address of `uid` (and its file); returns it, or `None` if it had none.
    pub fn release(&mut self, uid: &str) -> Result<Option<Ipv4Addr>, PodNetError> {
        let Some(addr) = self.get(uid) else {
            return Ok(None);
        };
        let path = self.dir.join(addr.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PodNetError::State {
                    action: "remove",
                    path,
                    source,
                });
            }
        }
        self.ipam.release(uid);
        self.owners.remove(uid);
        Ok(Some(addr))
    }

    /// Writes `STATE_DIR/ADDR` containing `uid`, atomically.
    fn write(&self, addr: Ipv4Addr, uid: &str) -> Result<(), PodNetError> {
        let path = self.dir.join(addr.to_string());
        let tmp = self.dir.join(format!(".{addr}.tmp"));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(uid.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        result.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            PodNetError::State {
                action: "write",
                path,
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_survive_a_reload_and_releases_remove_files() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Cidr = "10.42.0.0/24".parse().unwrap();
        let mut store = AddressStore::load(dir.path(), cidr).unwrap();
        let (a, fresh) = store.allocate("pod-a").unwrap();
        assert!(fresh);
        let (b, _) = store.allocate("pod-b").unwrap();
        assert_eq!(store.allocate("pod-a").unwrap(), (a, false));
        assert_ne!(a, b);
        std::fs::write(dir.path().join(".10.42.0.9.tmp"), "junk").unwrap();
        std::fs::write(dir.path().join("10.43.0.9"), "elsewhere").unwrap();

        let mut again = AddressStore::load(dir.path(), cidr).unwrap();
        assert_eq!(again.get("pod-a"), Some(a));
        assert_eq!(again.get("pod-b"), Some(b));
        assert_eq!(again.owners().count(), 2);
        assert!(!dir.path().join(".10.42.0.9.tmp").exists());
        let (c, fresh) = again.allocate("pod-c").unwrap();
        assert!(fresh);
        assert!(c != a && c != b);

        assert_eq!(again.release("pod-a").unwrap(), Some(a));
        assert_eq!(again.release("pod-a").unwrap(), None);
        assert!(!dir.path().join(a.to_string()).exists());
        let third = AddressStore::load(dir.path(), cidr).unwrap();
        assert_eq!(third.get("pod-a"), None);
        assert_eq!(third.get("pod-c"), Some(c));
    }
}
