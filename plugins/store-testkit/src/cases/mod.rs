//! The conformance cases, by concern. Each takes a fresh [`Subject`]
//! (crate::Subject) and panics, naming what differs, when the backend breaks
//! the `Store` contract.

mod batches;
mod changelog;
mod concurrency;
mod entities;
mod integrity;
mod nodes;
mod queue;
mod routing;
mod security;
mod transactions;

pub use batches::*;
pub use changelog::*;
pub use concurrency::*;
pub use entities::*;
pub use integrity::*;
pub use nodes::*;
pub use queue::*;
pub use routing::*;
pub use security::*;
pub use transactions::*;
