//! The host's error type: what failed, why, and what to do.

use hubsync_core::EngineError;
use hubsync_core::schema::SchemaSetError;
use hubsync_core::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Schema(#[from] SchemaSetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Strategies(Vec<crate::plugins::StrategyError>),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl HostError {
    pub fn io(
        what: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        HostError::Io {
            what,
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
