//! What can go wrong in the agent.

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was asked of the API.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The container engine failed.
    #[error("{what}: {source}")]
    Engine {
        /// What the engine was doing.
        what: String,
        /// The engine's error.
        source: skiff_engine::EngineError,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{what}: the task failed: {detail}")]
    Task {
        /// What the task did.
        what: String,
        /// The join error.
        detail: String,
    },
    /// The node API's TLS material could not be made or loaded.
    #[error("node API TLS: {0}")]
    Tls(String),
    /// A pod cannot be run as specified.
    #[error("{0}")]
    Invalid(String),
    /// A pod cgroup could not be set up or removed.
    #[error(transparent)]
    PodCgroup(#[from] crate::podcgroup::PodCgroupError),
    /// The pod network, the service proxy or the cluster DNS failed.
    #[error("{what}: {detail}")]
    Network {
        /// What was being set up.
        what: String,
        /// The network layer's error.
        detail: String,
    },
}

impl AgentError {
    /// A closure building [`AgentError::Api`].
    pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> AgentError {
        let what = what.into();
        move |source| AgentError::Api { what, source }
    }

    /// A closure building [`AgentError::Engine`].
    pub fn engine(what: impl Into<String>) -> impl FnOnce(skiff_engine::EngineError) -> AgentError {
        let what = what.into();
        move |source| AgentError::Engine { what, source }
    }

    /// A closure building [`AgentError::Io`].
    pub fn io(
        op: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { op, path, source }
    }

    /// A closure building [`AgentError::Network`] from any error.
    pub fn network<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> AgentError {
        let what = what.into();
        move |e| AgentError::Network {
            what,
            detail: e.to_string(),
        }
    }

    /// Whether this is the API's 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::Api { source: kube::Error::Api(s), .. } if s.code == 404)
    }
}

/// Runs blocking engine work on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AgentError::Task {
            what: what.to_string(),
            detail: e.to_string(),
        })?
}
