//! One module per subcommand.

mod audit;
mod check_config;
mod checkpoint;
mod expire;
mod export;
mod file;
mod hold;
mod import;
mod output;
mod pipe;
mod queue;
mod retention;
mod rules_test;
mod search;
mod serve;
mod show;
mod snippet;
mod stats;
mod user;
mod verify;

use crate::cli::{Cli, Command, RulesCommand};
use crate::config;
use crate::exit::{Exit, Failure};

fn load(cli_config: Option<&std::path::Path>) -> Result<config::Settings, Failure> {
    config::load(cli_config).map_err(|e| Failure::new(Exit::CONFIG, e.to_string()))
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> Result<Exit, Failure> {
    let cfg = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => serve::run(cfg, args),
        Command::Pipe(args) => pipe::run(load(cfg)?, args),
        Command::File(args) => file::run(args),
        Command::CheckConfig(args) => check_config::run(cfg, args.as_user.as_deref()),
        Command::Rules {
            command: RulesCommand::Test(args),
        } => rules_test::run(&load(cfg)?, args),
        Command::PostfixSnippet(args) => snippet::run(cfg, args),
        Command::Search(args) => search::run(&load(cfg)?, args),
        Command::Show(args) => show::run(&load(cfg)?, args),
        Command::Export(args) => export::run(&load(cfg)?, args),
        Command::Import(args) => import::run(&mut load(cfg)?, args),
        Command::Stats(args) => stats::run(&load(cfg)?, args),
        Command::Verify(args) => verify::run(&load(cfg)?, args),
        Command::Checkpoint(args) => checkpoint::run(&load(cfg)?, args),
        Command::Audit(args) => audit::run(&load(cfg)?, args),
        Command::Retention { command } => retention::run(&load(cfg)?, command),
        Command::Hold { command } => hold::run(&load(cfg)?, command),
        Command::User { command } => user::run(&load(cfg)?, command),
        Command::Expire(args) => expire::expire(&load(cfg)?, args),
        Command::Erase(args) => expire::erase(&load(cfg)?, args),
        Command::Queue { command } => queue::run(&load(cfg)?, command),
    }
}
