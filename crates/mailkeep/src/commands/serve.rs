//! `mailkeep serve`: the long-running daemon.
//!
//! It loads the configuration, reports what it listens on, and runs until
//! SIGTERM or SIGINT; SIGHUP reloads the configuration (a bad file is
//! reported and the previous one kept). The capture listeners (milter,
//! SMTP filter) plug in here as `run(listener, settings, shutdown)` tasks;
//! this version has none yet, and says so rather than pretend.

use crate::config;
use crate::exit::{Exit, Failure};
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};

pub fn run(path: Option<&Path>) -> Result<Exit, Failure> {
    let settings = config::load(path).map_err(|e| Failure::new(Exit::CONFIG, e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::SOFTWARE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).map_err(sig_err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(sig_err)?;
        let mut hup = signal(SignalKind::hangup()).map_err(sig_err)?;
        println!(
            "mailkeep {} serve: configuration {} ({} rule(s))",
            env!("CARGO_PKG_VERSION"),
            settings.source,
            settings.archiver.rules().rules().len()
        );
        println!("listening on: nothing (this version has no milter or SMTP listener; use `mailkeep pipe`)");
        println!("stop with SIGTERM or Ctrl-C; SIGHUP reloads the configuration");
        let mut settings = settings;
        loop {
            tokio::select! {
                _ = term.recv() => { println!("SIGTERM: stopping"); break; }
                _ = int.recv() => { println!("SIGINT: stopping"); break; }
                _ = hup.recv() => match config::load(path) {
                    Ok(new) => {
                        settings = new;
                        tracing::info!(source = %settings.source,
                            rules = settings.archiver.rules().rules().len(), "configuration reloaded");
                    }
                    Err(e) => tracing::error!("reload failed, keeping the previous configuration: {e}"),
                },
            }
        }
        println!("mailkeep serve: stopped (configuration {})", settings.source);
        Ok(Exit::OK)
    })
}

fn sig_err(e: std::io::Error) -> Failure {
    Failure::new(
        Exit::SOFTWARE,
        format!("cannot install signal handlers: {e}"),
    )
}
