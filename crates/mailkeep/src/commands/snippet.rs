//! `mailkeep postfix-snippet`: the Postfix lines for a capture path, ready
//! to paste. The pipe content filter follows Postfix FILTER_README's
//! after-queue layout with SMTP reinjection.

use crate::cli::{SnippetArgs, SnippetKind};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::exit::{Exit, Failure};
use mailkeep_capture::listen::ListenSpec;
use std::path::Path;

pub fn run(config: Option<&Path>, args: SnippetArgs) -> Result<Exit, Failure> {
    let config = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| DEFAULT_CONFIG_PATH.to_string());
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

/// The pipe content filter and the mailbox_command wrapper.
pub fn pipe_snippet(binary: &str, config: &str, user: &str, port: u16) -> String {
    let reinjection = reinjection_service(port);
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
content_filter = mailkeep:dummy
#    (or, to archive only mail received over SMTP, leave main.cf alone and add
#     "-o content_filter=mailkeep:dummy" under the smtp/submission services)

# /etc/postfix/master.cf
mailkeep  unix  -       n       n       -       10      pipe
  flags=q user={user} null_sender=
  argv={binary} --config {config} pipe
    --sender=${{sender}} --recipient=${{recipient}} --login=${{sasl_username}}
    --client-address=${{client_address}} --client-hostname=${{client_hostname}}
    --client-helo=${{client_helo}} --queue-id=${{queue_id}}
    --reinject smtp://127.0.0.1:{port}
{reinjection}
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
    let (postfix, sendmail) = match listen {
        ListenSpec::Inet { host, port } => {
            (format!("inet:{host}:{port}"), format!("inet:{port}@{host}"))
        }
        ListenSpec::Unix(p) => (
            format!("unix:{}", p.display()),
            format!("local:{}", p.display()),
        ),
    };
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
smtpd_milters = {postfix}
non_smtpd_milters = {postfix}
milter_protocol = 6
milter_default_action = tempfail
# mailkeep asks Postfix for the macros it needs (SETSYMLIST), so these are
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
    let reinjection = reinjection_service(reinject_port);
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
# /etc/postfix/main.cf
content_filter = mailkeep:[127.0.0.1]:10025
# Postfix writes "(Authenticated sender: LOGIN)" into its Received header;
# mailkeep takes the SASL login from there.
smtpd_sasl_authenticated_header = yes

# /etc/postfix/master.cf
mailkeep  unix  -       -       n       -       10      smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
{reinjection}
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
fn reinjection_service(port: u16) -> String {
    format!(
        "127.0.0.1:{port} inet n  -       n       -       10      smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"
    )
}
