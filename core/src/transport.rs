//! How a client reaches the master, as the engine sees it: one call that
//! sends an envelope and returns the master's envelope. The host implements
//! it over HTTPS; tests may implement it in memory or through a fault layer.

use crate::protocol::{Envelope, ErrorDetail};

/// Why an exchange did not return an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Nothing usable came back: connection refused or reset, timeout,
    /// corrupt response. The packet may or may not have been applied;
    /// sending it again is always safe.
    #[error("the master could not be reached: {reason}")]
    Unreachable { reason: String, transient: bool },
    /// The master answered with a refusal.
    #[error("the master refused the exchange ({status} {}): {}{}{}", error.code, error.message,
        error.detail.as_deref().map(|d| format!(" — {d}")).unwrap_or_default(),
        error.hint.as_deref().map(|h| format!(". Hint: {h}")).unwrap_or_default())]
    Refused { status: u16, error: ErrorDetail },
}

impl TransportError {
    /// True when trying again later may succeed without anyone acting.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Unreachable { transient, .. } => *transient,
            TransportError::Refused { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// Sends one envelope to the master and returns its answer.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn exchange(&self, request: &Envelope) -> Result<Envelope, TransportError>;
}
