//! Domain rules: pure functions over the model. Imports nothing from axum, sqlx or ACME; time is
//! always a parameter.

pub mod deployments;
pub mod issuance;
pub mod lifecycle;
pub mod names;
pub mod notify;
pub mod renewal;
pub mod revocation;
pub mod rollout;
pub mod span;
pub mod targets;
