//! `mailkeep pipe`: the capture path for Postfix `pipe(8)` and
//! `mailbox_command`.
//!
//! The message arrives on standard input with its envelope as arguments.
//! It is archived first; only when every copy is durable does the message
//! move on, in one of three ways:
//! - nowhere (archive only);
//! - to a command whose standard input is the original message, whose exit
//!   status becomes ours (the archiver.pl wrapper, e.g. in front of
//!   procmail or dovecot-lda);
//! - back to the MTA with its original envelope ([`crate::reinject`]), the
//!   after-queue content filter.
//!
//! The outcome maps to a sysexits code in the binary: never success unless
//! the copy is durable and the onward step succeeded.

use crate::reinject::{self, Reinject, ReinjectError};
use mailkeep_destinations::{ArchiveError, Archiver, Report};
use mailkeep_envelope::Envelope;
use std::ffi::OsString;
use std::io;
use std::process::{Command, ExitStatus, Stdio};

/// What happens after the message is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onward {
    /// Archive only.
    Nothing,
    /// Reinject with the original envelope.
    Reinject(Reinject),
    /// Run this command (program and arguments) with the message on stdin.
    Command(Vec<OsString>),
}

/// How a pipe run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Archived; the onward step, if any, succeeded.
    Done(Report),
    /// Archived; the command ran and exited with this status.
    CommandExited(Report, ExitStatus),
}

/// Why a pipe run failed. Every variant is temporary for the MTA.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// Archiving failed: nothing was archived.
    #[error("archiving failed: {0}")]
    Archive(#[from] ArchiveError),
    /// Archived, but the reinjection failed.
    #[error("archived, but reinjection failed: {0}")]
    Reinject(#[source] ReinjectError),
    /// Archived, but the command could not be run.
    #[error("archived, but the command {command:?} could not be run: {source}")]
    Command {
        /// The program.
        command: OsString,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Archives `env` and sends it onward.
pub fn run(
    archiver: &Archiver,
    env: &Envelope,
    onward: &Onward,
    helo_name: &str,
) -> Result<Outcome, PipeError> {
    let report = archiver.archive(env)?;
    crate::log_report(env.queue_id.as_deref(), &report);
    match onward {
        Onward::Nothing => Ok(Outcome::Done(report)),
        Onward::Reinject(target) => {
            reinject::reinject(target, env, helo_name).map_err(PipeError::Reinject)?;
            Ok(Outcome::Done(report))
        }
        Onward::Command(argv) => {
            let status = run_command(argv, env).map_err(|source| PipeError::Command {
                command: argv.first().cloned().unwrap_or_default(),
                source,
            })?;
            Ok(Outcome::CommandExited(report, status))
        }
    }
}

fn run_command(argv: &[OsString], env: &Envelope) -> io::Result<ExitStatus> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin pipe"))?;
    let copied = env.message.write_to(&mut stdin);
    drop(stdin);
    let status = child.wait()?;
    match copied {
        // A command may stop reading early (a filter that only needs the
        // header); its exit status is what counts.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(status),
    }
}

/// Drops a leading mbox `From ` line (as local(8) puts before a message it
/// hands to `mailbox_command`), streaming: the line is skipped without being
/// held in memory, and input that does not start with `From ` passes unchanged.
pub fn strip_from_line<R: io::BufRead>(mut input: R) -> io::Result<impl io::Read> {
    use io::Read;
    let mut head = Vec::with_capacity(5);
    (&mut input).take(5).read_to_end(&mut head)?;
    if head == b"From " {
        input.skip_until(b'\n')?;
        head.clear();
    }
    Ok(io::Cursor::new(head).chain(input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn strip(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        strip_from_line(input)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn strips_only_a_leading_from_line() {
        assert_eq!(
            strip(b"From a@b Sat Nov 21 10:00:00 2026\nSubject: x\n\nFrom y\n"),
            b"Subject: x\n\nFrom y\n"
        );
        assert_eq!(strip(b"Subject: x\n\nbody\n"), b"Subject: x\n\nbody\n");
        assert_eq!(strip(b"From"), b"From");
        assert_eq!(strip(b""), b"");
        assert_eq!(strip(b"From x"), b"");
    }
}
