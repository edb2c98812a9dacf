//! What every server of one cluster must hold alike, shared through the store they share: the
//! cluster CA (certificate and key: every serving and client certificate chains to it, and
//! the `kube-root-ca.crt` ConfigMap carries it), the service account signing key (a token
//! one server issued verifies on the others), the admin token and the node join token (an
//! agent or kubectl that joined through one server is accepted by all).
//!
//! The first server to start on a store publishes its files under [`KEY`]; every later
//! server, and every restart, adopts what the store holds, replacing its own files (and
//! re-issuing its serving certificate when the CA changed). The material is kept in the
//! datastore as Secrets are: whoever can read the store owns the cluster either way.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use skiff_store::{Store, StoreError};

/// The store key of the shared material (outside `/registry`, which the API serves).
pub const KEY: &str = "/skiff/cluster-secrets";

/// The shared files of the server directory, with their modes.
const FILES: [(&str, u32); 5] = [
    ("ca.crt", 0o644),
    ("ca.key", 0o600),
    ("sa.key", 0o600),
    ("token", 0o600),
    ("node-token", 0o600),
];

/// The serving certificate's files: issued again by the cluster CA when it replaces ours.
const SERVING: [&str; 3] = ["serving.crt", "serving.key", "serving.names"];

/// What [`adopt`] found in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The store holds the cluster's material; the server directory now has it.
    Adopted {
        /// Whether it replaced a different CA of this server's (certificates this server
        /// issued before no longer chain to the cluster's CA).
        replaced_ca: bool,
    },
    /// The store holds nothing yet: this server publishes its own once it has made it.
    Nothing,
}

/// Writes the cluster's material from the store into `server_dir`, if the store has it.
pub async fn adopt(store: &dyn Store, server_dir: &Path) -> anyhow::Result<Found> {
    let Some(kv) = store
        .get(KEY)
        .await
        .context("cannot read the cluster's shared secrets from the store")?
    else {
        return Ok(Found::Nothing);
    };
    let files: BTreeMap<String, String> = serde_json::from_slice(&kv.value)
        .with_context(|| format!("the store's {KEY} is not a JSON map of file contents"))?;
    let mut ca_changed = false;
    for (name, mode) in FILES {
        let Some(contents) = files.get(name) else {
            anyhow::bail!("the store's {KEY} has no {name}");
        };
        let path = server_dir.join(name);
        let local = std::fs::read_to_string(&path).ok();
        if local.as_deref() == Some(contents.as_str()) {
            continue;
        }
        if let Some(local) = local
            && !local.trim().is_empty()
        {
            tracing::warn!(file = %path.display(), "replacing this server's copy with the cluster's (shared through the store)");
        }
        ca_changed |= name.starts_with("ca.");
        skiff_apiserver::pki::write_private(&path, contents, mode)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if ca_changed {
        for name in SERVING {
            match std::fs::remove_file(server_dir.join(name)) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot remove the serving certificate's {name}")
                    });
                }
            }
        }
    }
    Ok(Found::Adopted {
        replaced_ca: ca_changed,
    })
}

/// Publishes this server's material (made by the PKI and the token signer) as the cluster's.
/// Returns `false` when another server published first: the caller adopts theirs instead.
pub async fn publish(store: &dyn Store, server_dir: &Path) -> anyhow::Result<bool> {
    let mut files = BTreeMap::new();
    for (name, _) in FILES {
        let path = server_dir.join(name);
        let contents = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.insert(name, contents);
    }
    let value = serde_json::to_vec(&files).context("cannot encode the cluster's secrets")?;
    match store.create(KEY, value.into()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(err) => Err(err).context("cannot publish the cluster's shared secrets to the store"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::MemoryStore;

    fn write_all(dir: &Path, tag: &str) {
        for name in FILES.iter().map(|(n, _)| *n).chain(SERVING) {
            std::fs::write(dir.join(name), format!("{tag} {name}")).unwrap();
        }
    }

    #[tokio::test]
    async fn the_first_server_publishes_and_the_next_one_adopts() {
        let store = MemoryStore::new();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(adopt(&store, a.path()).await.unwrap(), Found::Nothing);
        write_all(a.path(), "a");
        assert!(publish(&store, a.path()).await.unwrap());

        write_all(b.path(), "b");
        assert!(
            !publish(&store, b.path()).await.unwrap(),
            "a second publish loses"
        );
        assert_eq!(
            adopt(&store, b.path()).await.unwrap(),
            Found::Adopted { replaced_ca: true }
        );
        for (name, _) in FILES {
            assert_eq!(
                std::fs::read_to_string(b.path().join(name)).unwrap(),
                format!("a {name}")
            );
        }
        // The CA changed: b's serving certificate goes, to be issued again by the cluster CA.
        for name in SERVING {
            assert!(!b.path().join(name).exists(), "{name}");
        }
        // Adopting again changes nothing and keeps a serving certificate made since.
        std::fs::write(b.path().join("serving.crt"), "new").unwrap();
        assert_eq!(
            adopt(&store, b.path()).await.unwrap(),
            Found::Adopted { replaced_ca: false }
        );
        assert!(b.path().join("serving.crt").exists());
    }

    #[tokio::test]
    async fn a_stored_value_missing_a_file_is_a_clear_error() {
        let store = MemoryStore::new();
        store
            .create(KEY, br#"{"ca.crt": "x"}"#.to_vec().into())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = adopt(&store, dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("has no ca.key"), "{err}");
    }
}
