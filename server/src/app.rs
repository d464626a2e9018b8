//! The shared application state handed to every handler and worker.

use std::sync::Arc;

use crate::ca::InternalCa;
use crate::config::Config;
use crate::db::Db;
use crate::secrets::Secrets;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

/// Everything a request or job may need.
pub struct App {
    pub db: Db,
    pub secrets: Secrets,
    pub ca: InternalCa,
    pub config: Config,
    /// Wakes the issuance workers when a job was queued.
    pub wake: tokio::sync::Notify,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
