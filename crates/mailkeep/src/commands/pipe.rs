//! `mailkeep pipe`: read a message on stdin, archive it, pass it on.

use crate::cli::PipeArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_capture::pipe::{self, Onward, Outcome};
use mailkeep_capture::reinject::Reinject;
use mailkeep_envelope::{normalize_address_arg, CapturePath, Client, Envelope, RawMessage};
use std::io;

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

pub fn run(mut settings: Settings, args: PipeArgs) -> Result<Exit, Failure> {
    // An unavailable store is a temporary failure: the MTA retries.
    settings
        .attach_store()
        .map_err(|e| Failure::new(Exit::TEMPFAIL, e))?;
    settings.create_spool_dir();
    let onward = match (&args.reinject, args.command.is_empty()) {
        (Some(target), _) => Onward::Reinject(
            Reinject::parse(target, &args.sendmail).map_err(|m| Failure::new(Exit::USAGE, m))?,
        ),
        (None, false) => Onward::Command(args.command.clone()),
        (None, true) => Onward::Nothing,
    };
    let recipients: Vec<String> = args
        .recipients
        .iter()
        .filter_map(|r| normalize_address_arg(r))
        .collect();
    if matches!(onward, Onward::Reinject(_)) && recipients.is_empty() {
        return Err(Failure::new(
            Exit::USAGE,
            "--reinject needs at least one --recipient",
        ));
    }
    let stdin = io::stdin().lock();
    let input: Box<dyn io::Read> = if args.strip_from_line {
        Box::new(
            pipe::strip_from_line(stdin)
                .map_err(|e| Failure::new(Exit::TEMPFAIL, format!("reading the message: {e}")))?,
        )
    } else {
        Box::new(stdin)
    };
    let message = RawMessage::from_reader(
        input,
        &settings.spool_dir,
        settings.spool_threshold,
        settings.max_message_size,
    )
    .map_err(|e| match e.kind() {
        io::ErrorKind::FileTooLarge => Failure::new(Exit::DATAERR, format!("message refused: {e}")),
        _ => Failure::new(Exit::TEMPFAIL, format!("reading the message: {e}")),
    })?;
    let mut env = Envelope::new(CapturePath::Pipe, message);
    env.sender = normalize_address_arg(args.sender.as_deref().unwrap_or(""));
    env.recipients = recipients;
    env.login = non_empty(args.login);
    env.queue_id = non_empty(args.queue_id);
    env.client = Client {
        address: non_empty(args.client_address),
        port: None,
        hostname: non_empty(args.client_hostname),
        helo: non_empty(args.client_helo),
    };
    env.tags = args.tags.into_iter().filter(|t| !t.is_empty()).collect();
    match pipe::run(&settings.archiver, &env, &onward, &settings.hostname) {
        Ok(Outcome::Done(_)) => Ok(Exit::OK),
        Ok(Outcome::CommandExited(_, status)) => Ok(match status.code() {
            Some(code) => Exit(code),
            // Killed by a signal: the copy is archived but delivery is unknown.
            None => Exit::TEMPFAIL,
        }),
        // Printed once by main, on stderr, which Postfix keeps as the
        // deferral reason.
        Err(e) => Err(Failure::from_error(Exit::TEMPFAIL, &e)),
    }
}
