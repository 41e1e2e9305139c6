//! `mailkeep postfix-snippet`: the Postfix lines for a capture path, ready
//! to paste. The pipe content filter follows Postfix FILTER_README's
//! after-queue layout with SMTP reinjection.
//!
//! Each capture path's Postfix settings are described once, as
//! [`PostfixLines`], and written either as main.cf/master.cf excerpts with
//! explanations or (`--postconf`) as the `postconf` commands that make them,
//! which is what README's recipes run (a test holds the two to each other).

use crate::cli::{SnippetArgs, SnippetKind};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::exit::{Exit, Failure};
use mailkeep_capture::listen::ListenSpec;
use std::path::Path;

pub fn run(config: Option<&Path>, args: SnippetArgs) -> Result<Exit, Failure> {
    let config = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_string());
    if args.postconf || args.revert {
        let lines = match args.kind {
            SnippetKind::Pipe => pipe_lines(&args.binary, &config, &args.user, args.reinject_port),
            SnippetKind::Filter => filter_lines(args.reinject_port),
            SnippetKind::Milter => milter_lines(
                &ListenSpec::parse(&args.listen).map_err(|e| Failure::new(Exit::USAGE, e))?,
            ),
        };
        print!(
            "{}",
            if args.revert {
                lines.revert()
            } else {
                lines.postconf()
            }
        );
        return Ok(Exit::OK);
    }
    match args.kind {
        SnippetKind::Pipe => print!(
            "{}",
            pipe_snippet(&args.binary, &config, &args.user, args.reinject_port)
        ),
        SnippetKind::Filter => print!("{}", filter_snippet(args.reinject_port)),
        SnippetKind::Milter => {
            let listen =
                ListenSpec::parse(&args.listen).map_err(|e| Failure::new(Exit::USAGE, e))?;
            print!("{}", milter_snippet(&listen))
        }
    }
    Ok(Exit::OK)
}

/// One master.cf service.
struct Service {
    /// Service name and type: `mailkeep`, `unix`.
    name: String,
    kind: &'static str,
    /// The fields after the type: private, unpriv, chroot, wakeup, maxproc,
    /// command.
    fields: &'static str,
    /// Command arguments on continuation lines (pipe's flags and argv).
    args: Vec<String>,
    /// `-o name=value` overrides.
    options: Vec<(&'static str, &'static str)>,
}

/// The Postfix settings of one capture path.
struct PostfixLines {
    main: Vec<(&'static str, String)>,
    services: Vec<Service>,
}

impl PostfixLines {
    /// The main.cf lines.
    fn main_cf(&self) -> String {
        self.main
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }

    /// The master.cf entries.
    fn master_cf(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            out.push_str(&format!("{:<9} {:<4} {}\n", s.name, s.kind, s.fields));
            for a in &s.args {
                out.push_str(&format!("  {a}\n"));
            }
            for (k, v) in &s.options {
                out.push_str(&format!("  -o {k}={v}\n"));
            }
        }
        out
    }

    /// The `postconf` commands that make these settings: services first, so
    /// a content_filter never names a transport that does not exist yet.
    fn postconf(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let entry = [s.name.as_str(), s.kind, s.fields]
                .into_iter()
                .chain(s.args.iter().map(String::as_str))
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "postconf -M {}\n",
                sh_quote(&format!("{}/{}={entry}", s.name, s.kind))
            ));
            if !s.options.is_empty() {
                let opts: Vec<String> = s
                    .options
                    .iter()
                    .map(|(k, v)| sh_quote(&format!("{}/{}/{k}={v}", s.name, s.kind)))
                    .collect();
                out.push_str(&format!("postconf -P {}\n", opts.join(" ")));
            }
        }
        if !self.main.is_empty() {
            let main: Vec<String> = self
                .main
                .iter()
                .map(|(k, v)| sh_quote(&format!("{k}={v}")))
                .collect();
            out.push_str(&format!("postconf -e {}\n", main.join(" ")));
        }
        out
    }
}

impl PostfixLines {
    /// The `postconf` commands that take these settings out again: main.cf
    /// parameters back to their defaults, the services removed.
    fn revert(&self) -> String {
        let mut out = String::new();
        if !self.main.is_empty() {
            let names: Vec<&str> = self.main.iter().map(|(k, _)| *k).collect();
            out.push_str(&format!("postconf -X {}\n", names.join(" ")));
        }
        if !self.services.is_empty() {
            let names: Vec<String> = self
                .services
                .iter()
                .map(|s| sh_quote(&format!("{}/{}", s.name, s.kind)))
                .collect();
            out.push_str(&format!("postconf -MX {}\n", names.join(" ")));
        }
        out
    }
}

/// `text` as one shell word.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The pipe(8) content filter (layout A of [`pipe_snippet`]).
fn pipe_lines(binary: &str, config: &str, user: &str, port: u16) -> PostfixLines {
    PostfixLines {
        main: vec![("content_filter", "mailkeep:dummy".into())],
        services: vec![
            Service {
                name: "mailkeep".into(),
                kind: "unix",
                fields: "-       n       n       -       10      pipe",
                args: vec![
                    format!("flags=q user={user} null_sender="),
                    format!("argv={binary} --config {config} pipe"),
                    "  --sender=${sender} --recipient=${recipient} --login=${sasl_username}".into(),
                    "  --client-address=${client_address} --client-hostname=${client_hostname}"
                        .into(),
                    "  --client-helo=${client_helo} --queue-id=${queue_id}".into(),
                    format!("  --reinject smtp://127.0.0.1:{port}"),
                ],
                options: vec![],
            },
            reinjection_service(port),
        ],
    }
}

/// The after-queue SMTP content filter (layout (a) of [`filter_snippet`]).
fn filter_lines(port: u16) -> PostfixLines {
    PostfixLines {
        main: vec![
            ("content_filter", "mailkeep:[127.0.0.1]:10025".into()),
            ("smtpd_sasl_authenticated_header", "yes".into()),
        ],
        services: vec![
            Service {
                name: "mailkeep".into(),
                kind: "unix",
                fields: "-       -       n       -       10      smtp",
                args: vec![],
                options: vec![
                    ("smtp_send_xforward_command", "yes"),
                    ("disable_mime_output_conversion", "yes"),
                    ("smtp_generic_maps", ""),
                ],
            },
            reinjection_service(port),
        ],
    }
}

/// The milter settings.
fn milter_lines(listen: &ListenSpec) -> PostfixLines {
    let postfix = match listen {
        ListenSpec::Inet { host, port } => format!("inet:{host}:{port}"),
        ListenSpec::Unix(p) => format!("unix:{}", p.display()),
    };
    PostfixLines {
        main: vec![
            ("smtpd_milters", postfix.clone()),
            ("non_smtpd_milters", postfix),
            ("milter_protocol", "6".into()),
            ("milter_default_action", "tempfail".into()),
        ],
        services: vec![],
    }
}

/// The pipe content filter and the mailbox_command wrapper.
pub fn pipe_snippet(binary: &str, config: &str, user: &str, port: u16) -> String {
    let lines = pipe_lines(binary, config, user, port);
    let (main_cf, master_cf) = (lines.main_cf(), lines.master_cf());
    format!(
        r#"# ---------------------------------------------------------------------------
# A. mailkeep as an after-queue content filter (Postfix pipe(8)).
#    Every message Postfix queues is archived by the rules in
#    {config}, then reinjected over SMTP into a second smtpd on
#    127.0.0.1:{port} that does not filter again. If archiving or reinjection
#    fails, mailkeep exits 75 (EX_TEMPFAIL) and Postfix keeps the message
#    and retries; it is never passed on unarchived.
#
#    The user "{user}" must be able to write every archive directory:
#      useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin {user}
#
# /etc/postfix/main.cf
{main_cf}#    (or, to archive only mail received over SMTP, leave main.cf alone and add
#     "-o content_filter=mailkeep:dummy" under the smtp/submission services)

# /etc/postfix/master.cf
{master_cf}
# Then: postfix check && postfix reload

# ---------------------------------------------------------------------------
# B. mailkeep as a mailbox_command wrapper (local(8) deliveries only).
#    Each message delivered to a local mailbox is archived, then handed to
#    the real delivery program, whose exit status mailkeep returns. local(8)
#    runs the command as the recipient, so the archive directories must be
#    writable by every local user (e.g. a group-writable directory per user).
#    local(8) puts a "From sender date" line first; --strip-from-line keeps
#    it out of the archive and away from the delivery program (which gets
#    the sender from -f).
#
# /etc/postfix/main.cf
mailbox_command = {binary} --config {config} pipe --strip-from-line --sender="$SENDER" --recipient="$RECIPIENT" --login="$SASL_USERNAME" --client-address="$CLIENT_ADDRESS" --client-hostname="$CLIENT_HOSTNAME" --client-helo="$CLIENT_HELO" --tag=mailbox -- /usr/lib/dovecot/dovecot-lda -f "$SENDER" -a "$RECIPIENT"
"#
    )
}

/// The milter lines for Postfix and Sendmail.
pub fn milter_snippet(listen: &ListenSpec) -> String {
    // Postfix writes inet:HOST:PORT and unix:PATH; Sendmail inet:PORT@HOST
    // and local:PATH.
    let (_, sendmail) = match listen {
        ListenSpec::Inet { host, port } => {
            (format!("inet:{host}:{port}"), format!("inet:{port}@{host}"))
        }
        ListenSpec::Unix(p) => (
            format!("unix:{}", p.display()),
            format!("local:{}", p.display()),
        ),
    };
    let main_cf = milter_lines(listen).main_cf();
    format!(
        r#"# ---------------------------------------------------------------------------
# mailkeep as a Postfix milter: every message received by smtpd (and, with
# non_smtpd_milters, by sendmail/pickup) is archived, with its SASL login and
# full envelope, before Postfix answers the client. If mailkeep cannot
# archive (or is not running), Postfix answers 4xx and the client retries.
#
# /etc/mailkeep/mailkeep.toml:
#   [milter]
#   listen = "{listen}"
#
# /etc/postfix/main.cf
{main_cf}# mailkeep asks Postfix for the macros it needs (SETSYMLIST), so these are
# Postfix's defaults plus the client macros, for reference and for MTAs that
# ignore that request; other milters keep what they had:
milter_connect_macros = j {{daemon_name}} {{daemon_addr}} v _ {{client_addr}} {{client_name}} {{client_port}}
milter_helo_macros = {{tls_version}} {{cipher}} {{cipher_bits}} {{cert_subject}} {{cert_issuer}}
milter_mail_macros = i {{auth_type}} {{auth_authen}} {{auth_author}} {{mail_addr}} {{mail_host}} {{mail_mailer}}
milter_end_of_header_macros = i
milter_end_of_data_macros = i
# Then: postfix check && postfix reload
#
# A unix: socket must be reachable from Postfix's smtpd, which Debian runs
# chrooted in /var/spool/postfix: put it below that directory and give it
# to postfix (socket_owner = "postfix", socket_mode = "0660").

# ---------------------------------------------------------------------------
# Sendmail (sendmail.mc), F=T: temporary failure when mailkeep is unreachable
INPUT_MAIL_FILTER(`mailkeep', `S={sendmail}, F=T, T=C:30s;S:5m;R:5m;E:10m')
define(`confMILTER_MACROS_CONNECT', `j, {{daemon_name}}, {{client_addr}}, {{client_name}}, {{client_port}}')
define(`confMILTER_MACROS_HELO', `{{tls_version}}, {{cipher}}, {{cert_subject}}')
define(`confMILTER_MACROS_ENVFROM', `i, {{auth_type}}, {{auth_authen}}, {{auth_author}}, {{mail_addr}}')
define(`confMILTER_MACROS_EOM', `i')
"#
    )
}

/// The SMTP content-filter lines: after-queue, behind amavisd, before-queue.
pub fn filter_snippet(reinject_port: u16) -> String {
    let lines = filter_lines(reinject_port);
    let (main_cf, master_cf) = (lines.main_cf(), lines.master_cf());
    format!(
        r#"# mailkeep's side, /etc/mailkeep/mailkeep.toml (then run `mailkeep serve`):
#   [filter]
#   listen = "127.0.0.1:10025"
#   relay = "127.0.0.1:{reinject_port}"
#
# mailkeep relays MAIL/RCPT/DATA to the reinjection smtpd in step with
# Postfix, archives the message durably, and only then sends the final dot:
# Postfix hears 250 only when the message is archived AND accepted by the
# reinjection smtpd; otherwise 4xx and Postfix retries. A retry of a message
# already archived is not archived twice (queue id from XFORWARD + content).

# ---------------------------------------------------------------------------
# (a) After-queue content filter (Postfix FILTER_README "advanced" layout)
#
# /etc/postfix/main.cf (smtpd_sasl_authenticated_header: Postfix writes
# "(Authenticated sender: LOGIN)" into its Received header; mailkeep takes
# the SASL login from there)
{main_cf}
# /etc/postfix/master.cf
{master_cf}
# ---------------------------------------------------------------------------
# (b) Chained behind amavisd: Postfix -> amavisd (10024) -> mailkeep (10025)
#     -> reinjection smtpd ({reinject_port}). Keep the master.cf lines of (a) for
#     the reinjection smtpd; main.cf keeps amavis as the content filter:
#
# /etc/postfix/main.cf
#   content_filter = amavis:[127.0.0.1]:10024
# /etc/amavis/conf.d/50-user
#   $forward_method = 'smtp:[127.0.0.1]:10025';
#   $notify_method  = 'smtp:[127.0.0.1]:10025';
# (amavisd sends XFORWARD, so mailkeep still sees the client and queue id.)

# ---------------------------------------------------------------------------
# (c) Before-queue proxy filter: mailkeep sits inside the SMTP conversation,
#     so the client hears the final reply only after the archive is durable.
#     Replace the public smtpd line in master.cf and add the after-filter
#     smtpd; in mailkeep.toml, relay = "127.0.0.1:{reinject_port}" as above.
#
# /etc/postfix/master.cf
#   smtp      inet  n       -       n       -       20      smtpd
#     -o smtpd_proxy_filter=127.0.0.1:10025
#     -o smtpd_client_connection_count_limit=10
#   127.0.0.1:{reinject_port} inet n  -       n       -       -       smtpd
#     -o smtpd_authorized_xforward_hosts=127.0.0.0/8
#     -o smtpd_client_restrictions=
#     -o smtpd_helo_restrictions=
#     -o smtpd_sender_restrictions=
#     -o smtpd_relay_restrictions=
#     -o smtpd_recipient_restrictions=permit_mynetworks,reject
#     -o mynetworks=127.0.0.0/8
#     -o receive_override_options=no_unknown_recipient_checks
"#
    )
}

/// The master.cf entry of the reinjection smtpd (FILTER_README): it takes
/// mail back from mailkeep without filtering it again.
fn reinjection_service(port: u16) -> Service {
    Service {
        name: format!("127.0.0.1:{port}"),
        kind: "inet",
        fields: "n       -       n       -       10      smtpd",
        args: vec![],
        options: vec![
            ("content_filter", ""),
            (
                "receive_override_options",
                "no_unknown_recipient_checks,no_header_body_checks,no_milters",
            ),
            ("smtpd_helo_restrictions", ""),
            ("smtpd_client_restrictions", ""),
            ("smtpd_sender_restrictions", ""),
            ("smtpd_relay_restrictions", ""),
            ("smtpd_recipient_restrictions", "permit_mynetworks,reject"),
            ("mynetworks", "127.0.0.0/8"),
            ("smtpd_authorized_xforward_hosts", "127.0.0.0/8"),
        ],
    }
}
