//! The shared application state handed to every handler and worker.

use std::sync::Arc;

use crate::agent_api::AgentCache;
use crate::api::auth::AuthLimiter;
use crate::ca::InternalCa;
use crate::config::Config;
use crate::db::Db;
use crate::engine::Wake;
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
    /// Wakes the issuance workers when a job was queued (batched, see [`Wake`]).
    pub wake: Wake,
    /// Failed authentications per source, shared by the bearer header, the dashboard's token
    /// login and the SSO callback.
    pub auth_limiter: Arc<AuthLimiter>,
    /// Agent identities and manifests, invalidated by every committed change of them.
    pub agent_cache: Arc<AgentCache>,
}

impl AppState {
    /// The state of one server process over `db`.
    pub fn new(db: Db, secrets: Secrets, ca: InternalCa, config: Config) -> Self {
        let auth_limiter = Arc::new(AuthLimiter::new(config.auth_failures_per_minute));
        let agent_cache = AgentCache::new(&config.agent_cache, &db);
        AppState(Arc::new(App {
            db,
            secrets,
            ca,
            config,
            wake: Wake::default(),
            auth_limiter,
            agent_cache,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
