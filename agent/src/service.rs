//! Windows service glue: install, uninstall, start, stop, and the entry point the Service Control
//! Manager calls (`certkeep-agent --config FILE service run`). Logs go to
//! `%ProgramData%\certkeep\logs`. The sync logic itself lives in `crate::run`.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context;
use tokio::sync::Notify;
use windows_service::{
    service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    },
    service_control_handler::{self, ServiceControlHandlerResult},
    service_manager::{ServiceManager, ServiceManagerAccess},
};

use crate::config::{Config, program_data};

/// Service name, as used by `sc.exe` and `Get-Service`.
pub const SERVICE_NAME: &str = "certkeep-agent";
const DISPLAY_NAME: &str = "certkeep agent";
const DESCRIPTION: &str = "Pulls certificates from certkeep over mTLS and installs them into the IIS Centralized Certificate Store.";

/// Config path handed from `main` to the service thread the SCM starts.
static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Registers the service (automatic start, LocalSystem, restart on failure) for `config_path`.
pub fn install(config_path: &Path) -> anyhow::Result<()> {
    let config_path = std::path::absolute(config_path)?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: std::env::current_exe()?,
        launch_arguments: vec![
            "--config".into(),
            config_path.into_os_string(),
            "service".into(),
            "run".into(),
        ],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .context("cannot create the service (run as Administrator)")?;
    service.set_description(DESCRIPTION)?;
    let restart = || ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(60),
    };
    service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(), restart(), restart()]),
    })?;
    Ok(())
}

/// Stops the service if it runs and removes it.
pub fn uninstall() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    service.delete()?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        service.stop()?;
    }
    Ok(())
}

/// Starts the installed service.
pub fn start() -> anyhow::Result<()> {
    open(ServiceAccess::START)?.start::<OsString>(&[])?;
    Ok(())
}

/// Asks the installed service to stop.
pub fn stop() -> anyhow::Result<()> {
    open(ServiceAccess::STOP)?.stop()?;
    Ok(())
}

fn open(access: ServiceAccess) -> anyhow::Result<windows_service::service::Service> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    manager
        .open_service(SERVICE_NAME, access)
        .with_context(|| format!("service {SERVICE_NAME} is not installed or not accessible"))
}

/// Hands this thread to the SCM; returns when the service stops.
pub fn dispatch(config_path: PathBuf) -> anyhow::Result<()> {
    let _ = CONFIG_PATH.set(config_path);
    windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .context("not started by the Service Control Manager; use `service start`")
}

// The FFI entry point the SCM calls; it forwards to `service_main`.
windows_service::define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    let logs = program_data().join("logs");
    let appender = tracing_appender::rolling::daily(&logs, "agent.log");
    let (writer, _guard) = tracing_appender::non_blocking(appender);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(crate::log_filter())
        .with_writer(writer)
        .with_ansi(false)
        .try_init();
    if let Err(e) = run_service() {
        tracing::error!(error = format!("{e:#}"), "service failed");
    }
}

fn run_service() -> anyhow::Result<()> {
    let stop = Arc::new(Notify::new());
    let on_stop = Arc::clone(&stop);
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            on_stop.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })?;
    let status = |state, accept, code| ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: Duration::default(),
        process_id: None,
    };
    handle.set_service_status(status(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        0,
    ))?;
    let result = run_loop(stop);
    let code = if result.is_ok() { 0 } else { 1 };
    handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        code,
    ))?;
    result
}

fn run_loop(stop: Arc<Notify>) -> anyhow::Result<()> {
    let path = CONFIG_PATH.get().context("no config path")?;
    let config = Config::load(path)?;
    tracing::info!(config = %path.display(), "service started");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(crate::run(&config, async move { stop.notified().await }));
    Ok(())
}
