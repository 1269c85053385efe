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
    /// Prints a ready-to-run `curl` command with a correctly signed sample request.
    Sign {
        #[command(subcommand)]
        what: SignCommand,
    },
}

#[derive(Subcommand)]
enum SignCommand {
    /// An encrypted, signed DingTalk HTTP push (`POST /webhooks/dingtalk/events`).
    DingtalkEvent {
        /// The decrypted event as JSON, e.g. `{"EventType":"check_url"}`.
        #[arg(long)]
        file: PathBuf,
        /// Base URL of the deployment (default `http://<listen>`).
        #[arg(long)]
        url: Option<String>,
    },
    /// A signed DingTalk robot callback (`POST /webhooks/dingtalk/robot`).
    DingtalkRobot {
        /// The robot message as JSON (`msgId`, `conversationId`, `text.content`, ...).
        #[arg(long)]
        file: PathBuf,
        /// Base URL of the deployment (default `http://<listen>`).
        #[arg(long)]
        url: Option<String>,
    },
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
    match cli.command {
        Command::Serve => {
            telemetry::init(&config.log_format, &config.log_level);
            serve(config)
        }
        Command::Sign { what } => sign(&config, what),
    }
}

fn sign(config: &Config, what: SignCommand) -> ExitCode {
    use dingbridge::dingtalk::sample;
    let (file, url, robot) = match what {
        SignCommand::DingtalkEvent { file, url } => (file, url, false),
        SignCommand::DingtalkRobot { file, url } => (file, url, true),
    };
    let input = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dingbridge: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let base = url.unwrap_or_else(|| sample::default_base_url(&config.listen));
    let now = dingbridge::store::now_ms();
    let request = if robot {
        sample::robot_request(&config.dingtalk, &base, &input, now)
    } else {
        sample::event_request(&config.dingtalk, &base, &input, now)
    };
    match request {
        Ok(r) => {
            println!("{}", r.to_curl());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dingbridge: {e}");
            ExitCode::from(2)
        }
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
