//! `bak start` / `bak dev`: load the config, start the server, print the banner, and shut down
//! gracefully on SIGINT or SIGTERM.

use anyhow::{Context, anyhow};
use bakend_core::config::{Config, parse_port};
use bakend_core::logging::{self, LogFormat};

use crate::cli::{Cli, LogFormatArg, StartArgs};

pub fn run(cli: &Cli, args: &StartArgs, watch: bool) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref(), &|k| std::env::var(k).ok())?;
    config.watch = watch;
    if let Some(p) = &args.port {
        config.port = parse_port(p).ok_or_else(|| {
            anyhow!("Invalid --port: {p} (must be a whole number between 1 and 65535)")
        })?;
    }
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    if std::env::var("BAKEND_ENV").as_deref() == Ok("production")
        && matches!(
            config.auth.jwt_secret.as_deref(),
            Some("dev-only-change-me" | "todo-api-demo-change-me") | None
        )
    {
        eprintln!(
            "WARNING: auth.jwtSecret is a default/demo value. Set a strong secret before production use."
        );
    }
    logging::install(config.log_level, format, config.log_file.clone());
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !config.config_file_exists {
        tracing::info!(
            "No config file at {}: running on defaults",
            config.config_path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// Every WebSocket holds a file descriptor; the usual soft limit (1024) would cap a server at
/// about a thousand realtime clients. Raise it to the hard limit.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain libc calls on a properly initialised struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    tracing::warn!("Could not raise the open-file limit");
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let port = config.port;
    let server = bakend_server::start(config).await?;
    println!(
        "Bakend v{}\n\nDatabase: ready\nAPI: ready\n\nListening on :{port}",
        bakend_core::VERSION
    );
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
