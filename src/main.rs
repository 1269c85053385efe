//! The `dingbridge` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use dingbridge::{Application, config::Config, telemetry};

/// Bridges DingTalk and Microsoft Outlook, for Zapier and n8n.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); `DINGBRIDGE_*` variables override it.
    #[arg(long, global = true, env = "DINGBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the HTTP service and its workers.
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dingbridge: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_format, &config.log_level);
    match cli.command {
        Command::Serve => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    // Workers run on a multi-threaded runtime; actix's own threads serve HTTP.
    let result = actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    })
    .block_on(async move {
        let app = Application::build(config).await?;
        tracing::info!(addr = %app.addr(), "listening on {}", app.addr());
        app.run_until_stopped().await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dingbridge stopped with an error");
            eprintln!("dingbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
