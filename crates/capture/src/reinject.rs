//! Handing an archived message back to the MTA with its original envelope:
//! over SMTP to a reinjection listener (Postfix FILTER_README's
//! `127.0.0.1:10026` smtpd), or through `sendmail -G -i -f SENDER -- RCPT...`.
//!
//! The SMTP client is deliberately strict: any recipient refused, or any
//! reply that is not a success, fails the whole reinjection (after `RSET`),
//! so the pipe exits with EX_TEMPFAIL and Postfix retries the message for
//! every recipient. A partial delivery would either lose the refused
//! recipients or duplicate the accepted ones on retry.
//!
//! The dialogue is `mailkeep-smtp`'s client (the one the filter's relay
//! and `forward:` use), with Postfix's timeouts: lines go out with CRLF
//! and leading dots doubled; a bare LF in the message becomes CRLF on the
//! wire (SMTP cannot carry a bare LF, and Postfix stores lines without CR
//! anyway).

use mailkeep_envelope::Envelope;
use mailkeep_smtp::smtp_proto::{EXT_8BIT_MIME, EXT_SIZE, EXT_SMTP_UTF8};
use mailkeep_smtp::{blocking, xtext, Client, Timeouts};
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where to hand the message back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reinject {
    /// SMTP to `host:port`.
    Smtp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// The `sendmail` program at this path.
    Sendmail(PathBuf),
}

impl Reinject {
    /// Parses `smtp://HOST:PORT`, `smtp://[::1]:PORT`, or `sendmail`
    /// (`sendmail_path` is then the program used).
    pub fn parse(spec: &str, sendmail_path: &str) -> Result<Reinject, String> {
        if spec == "sendmail" {
            return Ok(Reinject::Sendmail(PathBuf::from(sendmail_path)));
        }
        let rest = spec
            .strip_prefix("smtp://")
            .ok_or_else(|| format!("{spec:?}: expected smtp://HOST:PORT or sendmail"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (h, p) = v6
                    .split_once("]:")
                    .ok_or_else(|| format!("{spec:?}: expected smtp://[ADDR]:PORT"))?;
                (h, p)
            }
            None => rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{spec:?}: the port is missing"))?,
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{spec:?}: {port:?} is not a port"))?;
        if host.is_empty() {
            return Err(format!("{spec:?}: the host is missing"));
        }
        Ok(Reinject::Smtp {
            host: host.to_string(),
            port,
        })
    }
}

/// Why a reinjection failed. All are temporary from Postfix's point of view.
#[derive(Debug, thiserror::Error)]
pub enum ReinjectError {
    /// Network or pipe trouble.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server refused, or the dialogue failed.
    #[error("{0}")]
    Smtp(#[from] mailkeep_smtp::Error),
    /// `sendmail` exited unsuccessfully.
    #[error("sendmail exited with {0}")]
    Sendmail(std::process::ExitStatus),
    /// Nothing to deliver to.
    #[error("the envelope has no recipients to reinject to")]
    NoRecipients,
}

/// Sends the message onward with its original envelope.
pub fn reinject(target: &Reinject, env: &Envelope, helo_name: &str) -> Result<(), ReinjectError> {
    if env.recipients.is_empty() {
        return Err(ReinjectError::NoRecipients);
    }
    match target {
        Reinject::Smtp { host, port } => smtp(host, *port, env, helo_name),
        Reinject::Sendmail(path) => sendmail(path, env),
    }
}

fn sendmail(path: &PathBuf, env: &Envelope) -> Result<(), ReinjectError> {
    // Postfix sendmail: -G (not an initial submission: no address rewriting
    // beyond what the reinjection needs), -i (a lone dot is not the end),
    // -f "" for the null sender.
    let mut child = Command::new(path)
        .arg("-G")
        .arg("-i")
        .arg("-f")
        .arg(env.sender.as_deref().unwrap_or(""))
        .arg("--")
        .args(&env.recipients)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", path.display())))?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let copied = env.message.write_to(&mut stdin);
    drop(stdin);
    let status = child.wait()?;
    copied?;
    if status.success() {
        Ok(())
    } else {
        Err(ReinjectError::Sendmail(status))
    }
}

fn smtp(host: &str, port: u16, env: &Envelope, helo_name: &str) -> Result<(), ReinjectError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    blocking::run(async {
        let mut c = Client::connect(&addr, helo_name, Timeouts::POSTFIX).await?;
        let result = match forward_client(&mut c, env).await {
            Ok(()) => transaction(&mut c, env).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            c.reset().await;
        }
        c.quit().await;
        result
    })?
    .map_err(ReinjectError::from)
}

/// Tells a Postfix reinjection smtpd who the original client was (Postfix
/// XFORWARD_README), so its Received header and log name the real client
/// and the original queue id instead of 127.0.0.1. Sent only when the
/// server offers XFORWARD (it does for `smtpd_authorized_xforward_hosts`),
/// one attribute per command to stay far below Postfix's line limit.
async fn forward_client(c: &mut Client, env: &Envelope) -> Result<(), mailkeep_smtp::Error> {
    let client = &env.client;
    let source = if client.address.is_some() {
        "REMOTE"
    } else {
        "LOCAL"
    };
    let attributes = [
        ("NAME", client.hostname.as_deref()),
        ("ADDR", client.address.as_deref()),
        ("HELO", client.helo.as_deref()),
        ("IDENT", env.queue_id.as_deref()),
        ("SOURCE", Some(source)),
    ];
    for (name, value) in attributes {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if c.offer().xforward.iter().any(|o| o == name) {
            c.expect(format!("XFORWARD {name}={}\r\n", xtext(value)), is_2xx)
                .await?;
        }
    }
    Ok(())
}

fn is_2xx(code: u16) -> bool {
    (200..300).contains(&code)
}

async fn transaction(c: &mut Client, env: &Envelope) -> Result<(), mailkeep_smtp::Error> {
    let caps = c.offer().capabilities;
    let mut mail = format!("MAIL FROM:<{}>", env.sender.as_deref().unwrap_or(""));
    if env.message.is_8bit() && caps & EXT_8BIT_MIME != 0 {
        mail.push_str(" BODY=8BITMIME");
    }
    let utf8_addr = env
        .sender
        .iter()
        .chain(&env.recipients)
        .any(|a| !a.is_ascii());
    if utf8_addr && caps & EXT_SMTP_UTF8 != 0 {
        mail.push_str(" SMTPUTF8");
    }
    if caps & EXT_SIZE != 0 {
        mail.push_str(&format!(" SIZE={}", env.message.len()));
    }
    mail.push_str("\r\n");
    c.expect(mail, is_2xx).await?;
    for r in &env.recipients {
        c.expect(format!("RCPT TO:<{r}>\r\n"), is_2xx).await?;
    }
    c.expect("DATA\r\n", |code| code == 354).await?;
    let done = c.data(&mut env.message.reader()).await?;
    if is_2xx(done.code) {
        Ok(())
    } else {
        Err(mailkeep_smtp::Error {
            stage: "end of data".into(),
            peer: c.peer().to_string(),
            failure: mailkeep_smtp::Failure::Rejected(done),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Reinject::parse("smtp://127.0.0.1:10026", "/usr/sbin/sendmail").unwrap(),
            Reinject::Smtp {
                host: "127.0.0.1".into(),
                port: 10026
            }
        );
        assert_eq!(
            Reinject::parse("smtp://[::1]:25", "x").unwrap(),
            Reinject::Smtp {
                host: "::1".into(),
                port: 25
            }
        );
        assert_eq!(
            Reinject::parse("sendmail", "/usr/sbin/sendmail").unwrap(),
            Reinject::Sendmail("/usr/sbin/sendmail".into())
        );
        assert!(Reinject::parse("smtp://host", "x").is_err());
        assert!(Reinject::parse("lmtp://host:24", "x").is_err());
    }
}
