//! Store keys of API objects, laid out like kube-apiserver's (`/registry/...`).

/// Why a key could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key segment is empty or contains `/`, which would let one object's key fall under
    /// another's prefix.
    #[error("invalid {segment} {value:?} in a store key: it must be non-empty and contain no '/'")]
    BadSegment {
        /// Which segment: resource, namespace or name.
        segment: &'static str,
        /// Its value.
        value: String,
    },
}

/// The key of one object, or a prefix for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKey {
    /// `group/resource` for grouped resources (`apps/deployments`), the plural for core ones.
    pub resource: String,
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object name.
    pub name: String,
}

const ROOT: &str = "/registry";

fn check(segment: &'static str, value: &str) -> Result<(), KeyError> {
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        return Err(KeyError::BadSegment {
            segment,
            value: value.to_string(),
        });
    }
    Ok(())
}

impl ResourceKey {
    /// The key of an object.
    pub fn new(
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ResourceKey, KeyError> {
        resource
            .split('/')
            .try_for_each(|part| check("resource", part))?;
        if let Some(ns) = namespace {
            check("namespace", ns)?;
        }
        check("name", name)?;
        Ok(ResourceKey {
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The full key: `/registry/pods/default/web-1`, `/registry/namespaces/default`.
    pub fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ROOT}/{}/{ns}/{}", self.resource, self.name),
            None => format!("{ROOT}/{}/{}", self.resource, self.name),
        }
    }

    /// The prefix listing a resource in one namespace (`Some`) or everywhere (`None`); it ends
    /// in `/` so `pods` never matches `podsecuritypolicies`.
    pub fn list_prefix(resource: &str, namespace: Option<&str>) -> Result<String, KeyError> {
        resource
            .split('/')
            .try_for_each(|part| check("resource", part))?;
        Ok(match namespace {
            Some(ns) => {
                check("namespace", ns)?;
                format!("{ROOT}/{resource}/{ns}/")
            }
            None => format!("{ROOT}/{resource}/"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_and_cluster_scoped_keys() {
        assert_eq!(
            ResourceKey::new("pods", Some("default"), "web")
                .unwrap()
                .path(),
            "/registry/pods/default/web"
        );
        assert_eq!(
            ResourceKey::new("apps/deployments", Some("a"), "d")
                .unwrap()
                .path(),
            "/registry/apps/deployments/a/d"
        );
        assert_eq!(
            ResourceKey::new("namespaces", None, "default")
                .unwrap()
                .path(),
            "/registry/namespaces/default"
        );
    }

    #[test]
    fn list_prefixes_cover_their_keys_only() {
        let ns = ResourceKey::list_prefix("pods", Some("default")).unwrap();
        let all = ResourceKey::list_prefix("pods", None).unwrap();
        let key = ResourceKey::new("pods", Some("default"), "web")
            .unwrap()
            .path();
        assert!(key.starts_with(&ns) && key.starts_with(&all));
        let other = ResourceKey::new("podtemplates", Some("default"), "web")
            .unwrap()
            .path();
        assert!(!other.starts_with(&all));
        let other_ns = ResourceKey::new("pods", Some("default2"), "web")
            .unwrap()
            .path();
        assert!(!other_ns.starts_with(&ns));
    }

    #[test]
    fn slashes_and_empty_segments_are_refused() {
        assert!(ResourceKey::new("pods", Some("a/b"), "x").is_err());
        assert!(ResourceKey::new("pods", None, "").is_err());
        assert!(ResourceKey::new("pods", None, "..").is_err());
    }
}
