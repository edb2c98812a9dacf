//! Container ids and names.

use std::fmt;
use std::io::Read;

/// Why an id or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    /// The name does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    #[error("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName {
        /// The name.
        name: String,
    },
    /// No container matches the prefix.
    #[error("no such container: {prefix}")]
    NoSuchContainer {
        /// The prefix or name looked up.
        prefix: String,
    },
    /// Several containers match the prefix.
    #[error("multiple containers match {prefix:?}: give more characters of the id")]
    Ambiguous {
        /// The prefix.
        prefix: String,
    },
    /// The random source could not be read.
    #[error("read /dev/urandom for a container id: {reason}")]
    Random {
        /// The I/O error, as text.
        reason: String,
    },
}

/// A container id: 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// A new random id (32 bytes from `/dev/urandom`).
    pub fn random() -> Result<ContainerId, NamingError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| NamingError::Random {
                reason: e.to_string(),
            })?;
        Ok(ContainerId(
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    /// Parses a full id (64 lower-case hex digits).
    pub fn parse(text: &str) -> Option<ContainerId> {
        (text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| ContainerId(text.to_string()))
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character short form `docker ps` prints.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a user-chosen container name.
pub fn validate_name(name: &str) -> Result<(), NamingError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(NamingError::BadName {
            name: name.to_string(),
        })
    }
}

/// Finds the one id among `ids` that `prefix` names (an exact match wins over prefixes).
pub fn resolve_prefix<'a>(
    prefix: &str,
    ids: impl IntoIterator<Item = &'a ContainerId>,
) -> Result<&'a ContainerId, NamingError> {
    let matches: Vec<&ContainerId> = ids
        .into_iter()
        .filter(|id| id.0.starts_with(prefix))
        .collect();
    if let Some(exact) = matches.iter().find(|id| id.0 == prefix) {
        return Ok(exact);
    }
    match matches.as_slice() {
        [one] if !prefix.is_empty() => Ok(one),
        [] => Err(NamingError::NoSuchContainer {
            prefix: prefix.to_string(),
        }),
        _ => Err(NamingError::Ambiguous {
            prefix: prefix.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_64_hex_digits_and_differ() {
        let a = ContainerId::random().unwrap();
        let b = ContainerId::random().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a.short().len(), 12);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn prefixes_resolve_uniquely_or_say_why_not() {
        let ids = [
            ContainerId("abc1".repeat(16)),
            ContainerId("abd2".repeat(16)),
        ];
        assert_eq!(resolve_prefix("abc", &ids).unwrap(), &ids[0]);
        assert!(matches!(
            resolve_prefix("ab", &ids),
            Err(NamingError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve_prefix("ff", &ids),
            Err(NamingError::NoSuchContainer { .. })
        ));
        assert!(resolve_prefix("", &ids).is_err());
    }
}
