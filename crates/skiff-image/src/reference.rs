//! Image references: `[registry[:port]/]repository[:tag][@digest]`, normalised like Docker does.

use std::fmt;

/// The registry a reference without one points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input.
    #[error("empty image reference")]
    Empty,
    /// The repository path has characters references may not contain.
    #[error(
        "invalid image reference {input:?}: repository names are lower-case letters, digits and separators (. _ __ - /)"
    )]
    BadRepository {
        /// The input.
        input: String,
    },
    /// The tag is malformed.
    #[error(
        "invalid image reference {input:?}: a tag is up to 128 letters, digits, '_', '.' or '-'"
    )]
    BadTag {
        /// The input.
        input: String,
    },
    /// The digest is not `algorithm:hex`.
    #[error("invalid image reference {input:?}: a digest looks like sha256:<64 hex digits>")]
    BadDigest {
        /// The input.
        input: String,
    },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest, if any (`sha256:...`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference.
    ///
    /// ```
    /// let r = skiff_image::Reference::parse("busybox").unwrap();
    /// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    /// ```
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let valid = digest.split_once(':').is_some_and(|(alg, hex)| {
                    !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
                });
                if !valid {
                    return Err(ReferenceError::BadDigest {
                        input: input.to_string(),
                    });
                }
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A colon after the last slash starts a tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(ReferenceError::BadTag {
                    input: input.to_string(),
                });
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
                    && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            });
        if !valid_repo {
            return Err(ReferenceError::BadRepository {
                input: input.to_string(),
            });
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The repository as Docker shows it: `busybox` for `docker.io/library/busybox`,
    /// `user/app` for `docker.io/user/app`, `host:5000/app` elsewhere.
    ///
    /// ```
    /// let r = skiff_image::Reference::parse("busybox").unwrap();
    /// assert_eq!(r.familiar_repository(), "busybox");
    /// ```
    pub fn familiar_repository(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The whole reference as Docker shows it (`busybox:latest`).
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_repository();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn short_names_resolve_to_docker_hub_library() {
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("user/app:1.2").unwrap().to_string(),
            "docker.io/user/app:1.2"
        );
    }

    #[test]
    fn a_registry_with_a_port_is_not_a_tag() {
        let r = Reference::parse("127.0.0.1:5000/busybox").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "a/b", Some("v1"))
        );
    }

    #[test]
    fn digests_are_kept_and_suppress_the_default_tag() {
        let r = Reference::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        let r = Reference::parse(&format!("busybox:1@{DIGEST}")).unwrap();
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox:1@{DIGEST}")
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("BusyBox"),
            Err(ReferenceError::BadRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox:"),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox@sha256:zz"),
            Err(ReferenceError::BadDigest { .. })
        ));
    }
}
