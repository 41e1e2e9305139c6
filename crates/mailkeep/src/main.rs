//! The `mailkeep` binary: parses the command line, loads the configuration
//! and hands over to the library crates. It owns process concerns only:
//! signals, logging, and sysexits exit codes (Postfix reads them).
//!
//! Logging policy: error = mailkeep failed to do its job (a message was not
//! archived); warn = a peer or input misbehaved; info = one line per
//! archived message (serve) ; debug/trace = everything else. Logs go to
//! standard error, which Postfix `pipe(8)` copies into its delivery status,
//! so the pipe command logs warnings and errors only unless `MAILKEEP_LOG`
//! says otherwise.

// Three `unsafe` blocks: the fork of `check-config --as` and the child's
// `_exit` (see `access`), and the allocator setting below.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod access;
mod audit;
mod cli;
mod commands;
mod config;
mod exit;

use clap::Parser;
use exit::Exit;

fn main() {
    return_large_allocations();
    let code = match cli::Cli::try_parse() {
        Ok(cli) => {
            init_logging(cli.default_log_level());
            match commands::run(cli) {
                Ok(code) => code,
                Err(e) => {
                    // One error per line (check-config reports them all),
                    // each prefixed, as Postfix logs them line by line.
                    for line in e.message.lines() {
                        eprintln!("mailkeep: {line}");
                    }
                    e.code
                }
            }
        }
        Err(e) => {
            // Help shown because a subcommand is missing is a usage error:
            // `mailbox_command = mailkeep --config X` without `pipe` must
            // not report deliveries as successful.
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::OK
                }
                _ => Exit::USAGE,
            };
            let _ = e.print();
            code
        }
    };
    std::process::exit(code.0);
}

/// Makes glibc's malloc serve every allocation of 1 MiB or more with its
/// own mapping, returned to the system when freed. By default glibc raises
/// that threshold to the largest block freed so far (up to 32 MiB), after
/// which large blocks come from per-thread arenas that keep them: 100
/// sessions finishing 25 MB messages into the store then peaked at 451 MB
/// of RSS though at most one message was being read and parsed at a time;
/// with the threshold fixed, 57 MB (bench/memory.sh, docs/decisions.md).
/// Messages up to the spool threshold (1 MiB) never reach it.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes a malloc parameter; it is called once,
    // before any thread is started, and its result needs no cleanup (0 =
    // not applied, which only costs memory).
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn init_logging(default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Postfix copies pipe(8) stderr into delivery status and the mail log.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
