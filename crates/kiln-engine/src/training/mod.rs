//! Training jobs: the state machine (pure) and the SageMaker operations on them.

pub(crate) mod api;
pub mod machine;

pub use machine::{Effect, Event, Refused, Step, step};
