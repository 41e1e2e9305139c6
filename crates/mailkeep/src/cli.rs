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
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the capture listeners until SIGTERM or Ctrl-C (SIGHUP reloads).
    Serve(ServeArgs),
    /// Archive one message from standard input (Postfix pipe(8), mailbox_command).
    Pipe(PipeArgs),
    /// Move loose .eml files into YYYY/MM/DD/ by their Date header.
    File(FileArgs),
    /// Check the configuration, and that USER can write where it says;
    /// exit 0 when valid, 78 otherwise.
    CheckConfig(CheckConfigArgs),
    /// Work with the rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Print Postfix configuration lines for a capture path.
    PostfixSnippet(SnippetArgs),
    /// Search the store, newest first; exit 1 when nothing matches.
    Search(SearchArgs),
    /// Show one archived delivery.
    Show(ShowArgs),
    /// Export the deliveries a query matches as mbox, .eml files or zip.
    Export(ExportArgs),
    /// Import mbox files, Maildirs and .eml files (recursively) into the store.
    Import(ImportArgs),
    /// Store totals: messages, deliveries, bytes, dedup and compression.
    Stats(StatsArgs),
    /// Re-read every message and check the hash chain; exit 65 on damage.
    Verify(VerifyArgs),
    /// Write the chain head (signed when a key is configured) for auditors.
    Checkpoint(CheckpointArgs),
    /// The audit log: every access to the store, who, when, what, from where.
    Audit(AuditArgs),
    /// Local accounts for the web interface (argon2id).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Legal holds: what they cover is never expired or erased while they stand.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Remove the deliveries past their retention that no hold covers, for good.
    Expire(ExpireArgs),
    /// Remove what a query matches (an erasure request), except what a hold covers.
    Erase(EraseArgs),
    /// How long deliveries are kept: which policy applies, and what expires when.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// The spool of archive copies waiting for `[forward] relay`.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every spooled copy: age, attempts, next try, last error; STUCK past max_age.
    List {
        /// One JSON object per copy.
        #[arg(long)]
        json: bool,
    },
    /// Try every spooled copy now, whatever its back-off; exit 75 if any remain.
    Flush,
    /// Take a copy out of the queue (kept in SPOOL/dropped/ with the reason).
    Drop {
        /// Queue id, from `mailkeep queue list`.
        id: String,
        /// Why; recorded beside the dropped copy and logged.
        #[arg(long)]
        reason: String,
    },
}

/// `mailkeep check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Check that this user can write the store, every destination's
    /// directory, the spool and the dedup ledger, and read the keys
    /// [default, as root: mailkeep, when that user exists]
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
}

/// `mailkeep search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// e.g. 'from:alice (subject:invoice OR has:attachment) -login:bob
    /// received:2026-12-01..2026-12-02T12:00 "exact phrase" words'; '' lists
    /// everything. A query may start with `-` (no `--` needed). The keys,
    /// operators and dates are described in docs/search.md.
    #[arg(value_name = "QUERY", allow_hyphen_values = true)]
    pub query: String,
    /// At most this many results.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Delivery id (from `mailkeep search`).
    pub id: i64,
    /// The exact original bytes.
    #[arg(long, group = "what")]
    pub raw: bool,
    /// The message's header section.
    #[arg(long, group = "what")]
    pub headers: bool,
    /// The envelope as JSON.
    #[arg(long, group = "what")]
    pub envelope: bool,
    /// Everything as JSON.
    #[arg(long, group = "what")]
    pub json: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One mboxrd file; each message carries its envelope headers.
    Mbox,
    /// A directory of ID.eml files (exact bytes) plus manifest.json.
    Eml,
    /// A zip of messages/ID.eml (exact bytes) plus manifest.json.
    Zip,
}

/// `mailkeep export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Which deliveries ('' for all); the language of `search`, and may
    /// start with `-` too.
    #[arg(value_name = "QUERY", allow_hyphen_values = true)]
    pub query: String,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output file (mbox, zip) or directory (eml); must not exist yet.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// `mailkeep import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// mbox files, Maildirs, .eml files, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// How `>From ` lines are unquoted: mboxrd (mailkeep, mutt, dovecot) or mboxo.
    #[arg(long, value_enum, default_value = "mboxrd")]
    pub mbox_format: MboxFlavour,
    /// Larger messages are skipped (and listed).
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub max_message_size: String,
    /// File each message by the configuration's [[rule]]s (mbox, Maildir,
    /// eml, store, forward), as `serve` and `pipe` would, instead of only
    /// into the store.
    #[arg(long)]
    pub rules: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// mbox variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MboxFlavour {
    /// `^>+From ` loses one `>`.
    Mboxrd,
    /// `^>From ` loses its `>`.
    Mboxo,
}

/// `mailkeep stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also check that the chain still matches this checkpoint.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint must be signed by this ed25519 public key (hex).
    #[arg(long, value_name = "HEX", requires = "checkpoint")]
    pub public_key: Option<String>,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep expire`.
#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// What to remove: the language of `mailkeep search`.
    #[arg(long, allow_hyphen_values = true)]
    pub query: String,
    /// Why (the request; recorded in each tombstone and the audit log).
    #[arg(long)]
    pub reason: String,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Needed when the query matches every delivery in the store.
    #[arg(long)]
    pub yes: bool,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account, or replace the role, addresses and password of one.
    Add(UserAddArgs),
    /// The accounts (never their passwords).
    List(UserListArgs),
    /// Remove an account.
    Remove(UserRemoveArgs),
}

/// `mailkeep user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The login name (an address, or a plain name with `--address`).
    pub name: String,
    /// user (their own mail), auditor (all, read-only) or admin.
    #[arg(long)]
    pub role: String,
    /// A file holding the password (its first line; at least 12 characters).
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// An address whose mail is theirs; repeatable.
    #[arg(long = "address", value_name = "A")]
    pub addresses: Vec<String>,
}

/// `mailkeep user list`.
#[derive(Debug, Args)]
pub struct UserListArgs {
    /// One JSON object per account.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep user remove`.
#[derive(Debug, Args)]
pub struct UserRemoveArgs {
    /// The login name.
    pub name: String,
}

/// `mailkeep hold ...`.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold on what QUERY matches now and what arrives later.
    Add(HoldAddArgs),
    /// The holds in force.
    List(HoldListArgs),
    /// One hold: what it covers now.
    Show(HoldShowArgs),
    /// Release a hold.
    Release(HoldReleaseArgs),
}

/// `mailkeep hold add`.
#[derive(Debug, Args)]
pub struct HoldAddArgs {
    /// The hold's name (unique among the holds in force), e.g. a matter number.
    pub name: String,
    /// What it covers: the language of `mailkeep search`, e.g.
    /// 'login:bob OR to:bob@example.com OR from:bob@example.com'.
    #[arg(long, allow_hyphen_values = true)]
    pub query: String,
    /// Why (recorded with it).
    #[arg(long)]
    pub reason: String,
}

/// `mailkeep hold list`.
#[derive(Debug, Args)]
pub struct HoldListArgs {
    /// One JSON object per hold.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep hold show`.
#[derive(Debug, Args)]
pub struct HoldShowArgs {
    /// The hold's name.
    pub name: String,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep hold release`.
#[derive(Debug, Args)]
pub struct HoldReleaseArgs {
    /// The hold's name.
    pub name: String,
    /// Why (recorded with the release).
    #[arg(long)]
    pub reason: String,
}

/// `mailkeep retention ...`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Which policy keeps one delivery, from when, until when.
    Show(RetentionShowArgs),
    /// For the current policies: how many deliveries expire in each month.
    Plan(RetentionPlanArgs),
}

/// `mailkeep retention show`.
#[derive(Debug, Args)]
pub struct RetentionShowArgs {
    /// Delivery id (from `mailkeep search`).
    pub id: i64,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep retention plan`.
#[derive(Debug, Args)]
pub struct RetentionPlanArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries from this time on: `2026-12-01` (UTC midnight) or an RFC 3339
    /// time like `2026-12-01T14:00:00Z`.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Entries by this user only.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// One JSON object per line (the log's own lines).
    #[arg(long)]
    pub json: bool,
}

/// `mailkeep checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Write here (durably) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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

/// `mailkeep serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Write the daemon's process id to FILE once it listens (removed when
    /// it stops), for `kill -HUP "$(cat FILE)"`.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
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
    /// Print the `postconf` commands that make the settings instead of
    /// main.cf and master.cf excerpts (README's recipes run these).
    #[arg(long)]
    pub postconf: bool,
    /// Print the `postconf` commands that undo `--postconf` (parameters back
    /// to Postfix's defaults, services removed).
    #[arg(long, conflicts_with = "postconf")]
    pub revert: bool,
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
