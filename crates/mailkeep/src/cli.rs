//! The command line.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Email archiving for Postfix and Sendmail.
#[derive(Debug, Parser)]
#[command(name = "mailkeep", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: /etc/mailkeep/mailkeep.toml, or the
    /// embedded default when that does not exist]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log level when `MAILKEEP_LOG` is not set.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve => "info",
            _ => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the capture listeners until SIGTERM or Ctrl-C (SIGHUP reloads).
    Serve,
    /// Archive one message from standard input (Postfix pipe(8), mailbox_command).
    Pipe(PipeArgs),
    /// Move loose .eml files into YYYY/MM/DD/ by their Date header.
    File(FileArgs),
    /// Check the configuration; exit 0 when valid, 78 otherwise.
    CheckConfig,
    /// Work with the rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Print Postfix configuration lines for a capture path.
    PostfixSnippet(SnippetArgs),
}

/// `mailkeep pipe`.
#[derive(Debug, Args)]
pub struct PipeArgs {
    /// Envelope sender; empty or `<>` is the null sender (Postfix: `--sender=${sender}` with `null_sender=`).
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    pub sender: Option<String>,
    /// Envelope recipient; repeat for each (Postfix: `--recipient=${recipient}`).
    #[arg(long = "recipient", value_name = "R")]
    pub recipients: Vec<String>,
    /// SASL login of the submitter; empty means none (Postfix: `--login=${sasl_username}`).
    #[arg(long, value_name = "L")]
    pub login: Option<String>,
    /// Client IP address (Postfix: `${client_address}`).
    #[arg(long, value_name = "A")]
    pub client_address: Option<String>,
    /// Client host name (Postfix: `${client_hostname}`).
    #[arg(long, value_name = "H")]
    pub client_hostname: Option<String>,
    /// Client HELO name (Postfix: `${client_helo}`).
    #[arg(long, value_name = "H")]
    pub client_helo: Option<String>,
    /// MTA queue id (Postfix: `${queue_id}`).
    #[arg(long, value_name = "Q")]
    pub queue_id: Option<String>,
    /// A label for rules (`tag = [...]`) and the archived copy; repeatable.
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Drop a leading mbox `From ` line from the input (local(8) adds one
    /// for mailbox_command).
    #[arg(long)]
    pub strip_from_line: bool,
    /// After archiving, hand the message back: `smtp://HOST:PORT` or `sendmail`.
    #[arg(long, value_name = "TARGET", conflicts_with = "command")]
    pub reinject: Option<String>,
    /// The sendmail program for `--reinject sendmail`.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/sendmail")]
    pub sendmail: String,
    /// After archiving, run this command with the message on its standard
    /// input and exit with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `mailkeep file`.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Directory holding loose .eml files.
    pub dir: PathBuf,
    /// File them under this directory instead of DIR.
    #[arg(long, value_name = "DEST")]
    pub into: Option<PathBuf>,
    /// Show what would move, move nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Show which rule matches each recipient and the exact paths written.
    Test(RulesTestArgs),
}

/// `mailkeep rules test`.
#[derive(Debug, Args)]
pub struct RulesTestArgs {
    /// Envelope sender (empty or `<>`: null sender).
    #[arg(long, value_name = "S", default_value = "", allow_hyphen_values = true)]
    pub sender: String,
    /// Envelope recipient; repeatable.
    #[arg(long = "recipient", value_name = "R")]
    pub recipients: Vec<String>,
    /// SASL login.
    #[arg(long, value_name = "L")]
    pub login: Option<String>,
    /// A header line such as 'From: a@example.com'; repeatable.
    #[arg(long = "header", value_name = "LINE")]
    pub headers: Vec<String>,
    /// Use this message file (its headers and size) instead of --header.
    #[arg(long, value_name = "FILE", conflicts_with = "headers")]
    pub message: Option<PathBuf>,
    /// Client IP address.
    #[arg(long, value_name = "A")]
    pub client_address: Option<String>,
    /// Client host name.
    #[arg(long, value_name = "H")]
    pub client_hostname: Option<String>,
    /// Capture path to simulate.
    #[arg(long, value_name = "PATH", default_value = "pipe")]
    pub capture: String,
    /// Tag; repeatable.
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// MTA queue id.
    #[arg(long, value_name = "Q")]
    pub queue_id: Option<String>,
}

/// `mailkeep postfix-snippet`.
#[derive(Debug, Args)]
pub struct SnippetArgs {
    /// Which capture path.
    #[arg(value_enum)]
    pub kind: SnippetKind,
    /// Path of the mailkeep binary in the snippet.
    #[arg(long, default_value = "/usr/local/bin/mailkeep")]
    pub binary: String,
    /// Unprivileged user pipe(8) runs mailkeep as.
    #[arg(long, default_value = "mailkeep")]
    pub user: String,
    /// Port of the reinjection smtpd (pipe).
    #[arg(long, default_value_t = 10026)]
    pub reinject_port: u16,
    /// The milter address (milter), as in `[milter] listen`.
    #[arg(long, default_value = "inet:127.0.0.1:8894")]
    pub listen: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SnippetKind {
    /// Postfix pipe(8) content filter and mailbox_command wrapper.
    Pipe,
    /// Postfix smtpd_milters (and the Sendmail INPUT_MAIL_FILTER line).
    Milter,
    /// The SMTP content filter: after-queue, behind amavisd, before-queue.
    Filter,
}
