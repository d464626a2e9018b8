//! certkeep server library: configuration, storage, secrets, internal CA, API and listeners.
//!
//! `main.rs` parses the command line and calls [`serve`] or one of the admin commands.

pub mod acme;
pub mod agent_api;
pub mod api;
pub mod app;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod fsutil;
pub mod listener;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod oidc;
pub mod secrets;
pub mod solvers;
pub mod tls;
pub mod ui;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum_server::Handle;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::AppState;

/// Listeners bound by the caller (so tests can bind port 0).
pub struct Listeners {
    pub api: std::net::TcpListener,
    pub agent: std::net::TcpListener,
    /// The http-01 responder, when `solvers.http01.addr` is set.
    pub http01: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub fn bind(config: &config::Config) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &str| {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("bind the {what} listener on {addr}"))?;
            l.set_nonblocking(true)?;
            Ok::<_, anyhow::Error>(l)
        };
        Ok(Self {
            api: bind(config.api_addr, "API")?,
            agent: bind(config.agent_addr, "agent")?,
            http01: config
                .solvers
                .http01
                .as_ref()
                .and_then(|h| h.addr)
                .map(|addr| bind(addr, "http-01 responder"))
                .transpose()?,
        })
    }
}

/// The process's log: `CERTKEEP_LOG` filter directives (default `info,sqlx=warn`), written to
/// stderr. `certkeep` and the benchmarks' server processes log the same way.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CERTKEEP_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Wall-clock time. The one place outside tests that reads the clock for the listeners.
#[expect(
    clippy::disallowed_methods,
    reason = "the server's clock is read at its edges"
)]
pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Serves the API and agent listeners (and the http-01 responder when configured) until
/// `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    state: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let solvers = if state.config.engine.enabled {
        solvers::build(&state.config.solvers, &state.db, &state.secrets).await?
    } else {
        engine::Solvers::default()
    };
    let limits = &state.config.listeners;
    let (mut api_router, _) = api::router(state.clone());
    if let Some(oidc) = &state.config.ui.oidc {
        let client = oidc::OidcClient::new(oidc, &state.secrets).context("ui.oidc")?;
        api_router = api_router.merge(oidc::routes::router(
            state.clone(),
            std::sync::Arc::new(client),
        ));
    }
    let handle: Handle<SocketAddr> = Handle::new();
    let api_addr = listeners.api.local_addr()?;
    let agent_addr = listeners.agent.local_addr()?;
    let tls = listener::ListenerTls::new(&state, now())?;
    let api_server = listener::tls_server(listeners.api, tls.api.clone(), limits, "api")?
        .handle(handle.clone())
        .serve(
            listener::harden(api_router, limits)
                .into_make_service_with_connect_info::<SocketAddr>(),
        );
    let agent_router = agent_api::router(state.clone())
        .layer(RequestBodyLimitLayer::new(state.config.max_body_bytes));
    let agent_server = listener::tls_server(listeners.agent, tls.agent.clone(), limits, "agent")?
        .handle(handle.clone())
        .serve(
            listener::harden(agent_router, limits)
                .into_make_service_with_connect_info::<SocketAddr>(),
        );
    let rotation = tokio::spawn(tls.rotate(state.clone()));
    let http01_server = match listeners.http01 {
        Some(tcp) => {
            tracing::info!(http01.addr = %tcp.local_addr()?, "http-01 responder listening");
            Some(
                listener::plain_server(tcp, limits, "http-01")?
                    .handle(handle.clone())
                    .serve(
                        listener::harden(solvers::http01::router(state.db.clone()), limits)
                            .into_make_service(),
                    ),
            )
        }
        None => None,
    };
    let http01 = async move {
        match http01_server {
            Some(server) => server.await,
            None => Ok(()),
        }
    };
    let registration = liveness::register(&state).await?;
    let lost = registration.lost();
    tracing::info!(api.addr = %api_addr, agent.addr = %agent_addr, backend = state.db.backend(), "certkeep is serving");
    let drain = handle.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            () = lost.cancelled() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        drain.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let engine_stop = tokio_util::sync::CancellationToken::new();
    let engine = state.config.engine.enabled.then(|| {
        engine::Engine::new(state.clone())
            .with_solvers(solvers)
            .spawn(engine_stop.clone())
    });
    let notifier = state
        .config
        .notifications
        .enabled
        .then(|| notify::spawn(state.clone(), engine_stop.clone()));
    let (api, agent, http01) = tokio::join!(api_server, agent_server, http01);
    rotation.abort();
    engine_stop.cancel();
    if let Some(engine) = engine {
        let _ = engine.await;
    }
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    let ended = registration.end().await;
    api.context("API listener")?;
    agent.context("agent listener")?;
    http01.context("http-01 responder")?;
    ended?;
    state.db.close().await;
    Ok(())
}
