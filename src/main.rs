use rattan::config::{Cli, Command, LogFormat, LogSettings, Settings};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::read();
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::full_command();
            clap_complete::generate(*shell, &mut cmd, "rattan", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return match clap_mangen::Man::new(Cli::full_command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rattan: cannot write the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    match rattan::config::log_settings(&cli.opts) {
        Ok(log) => init_logging(&log),
        Err(e) => {
            eprintln!("rattan: {e}");
            return ExitCode::from(2);
        }
    }

    let runtime = match cli.opts.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) if n > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rattan: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Dev => rattan::dev::run(&cli.opts).await,
            Command::Render { template } => {
                let settings = Settings::resolve(&cli.opts, false).map_err(|e| e.to_string())?;
                rattan::server::render(&settings, template.as_deref()).await
            }
            Command::Completions { .. } | Command::Man => Ok(()),
            Command::Run => {
                let settings = Settings::resolve(&cli.opts, false).map_err(|e| e.to_string())?;
                let running = rattan::server::start(&settings).await?;
                rattan::server::shutdown_signal().await;
                running.drain().await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rattan: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr (stdout carries the access log only): text, or one JSON object per line. `--log-level` beats
/// `RUST_LOG`, which beats `info`.
fn init_logging(log: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = match &log.filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => {
            rattan::server::JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .init()
        }
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
