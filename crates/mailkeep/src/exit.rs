//! Exit codes: sysexits(3), because Postfix `pipe(8)` and `mailbox_command`
//! interpret them (75 defers and retries, 64-78 others bounce or defer as
//! Postfix documents).

/// A process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl Exit {
    /// Success.
    pub const OK: Exit = Exit(0);
    /// `mailkeep search`-style "nothing found"; also `rules test` when no rule matched.
    pub const NOTHING: Exit = Exit(1);
    /// EX_USAGE: bad command line.
    pub const USAGE: Exit = Exit(64);
    /// EX_DATAERR: the input message was refused (e.g. over the size limit).
    pub const DATAERR: Exit = Exit(65);
    /// EX_SOFTWARE: an internal error.
    pub const SOFTWARE: Exit = Exit(70);
    /// EX_OSERR: the system refused (e.g. the listen address is in use).
    pub const OSERR: Exit = Exit(71);
    /// EX_CANTCREAT: an output file cannot be created.
    pub const CANTCREAT: Exit = Exit(73);
    /// EX_IOERR: an I/O error outside message delivery.
    pub const IOERR: Exit = Exit(74);
    /// EX_TEMPFAIL: not archived (or not passed on); the MTA should retry.
    pub const TEMPFAIL: Exit = Exit(75);
    /// EX_NOPERM: the operating system refused access (permission denied,
    /// a read-only file system), or `check-config --as` another user
    /// without being root.
    pub const NOPERM: Exit = Exit(77);
    /// EX_CONFIG: the configuration is invalid.
    pub const CONFIG: Exit = Exit(78);
}

/// An error that ends the process with a specific code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Exit,
    /// One line for standard error (the cause chain, joined with `: `).
    pub message: String,
}

impl Failure {
    /// A failure with a message.
    pub fn new(code: Exit, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A store failure: [`Exit::NOPERM`] when access was refused, else
    /// `code`.
    pub fn from_store(code: Exit, error: &mailkeep_store::StoreError) -> Failure {
        let code = if error.is_permission_denied() {
            Exit::NOPERM
        } else {
            code
        };
        Failure::from_error(code, error)
    }

    /// A failure whose message is an error's whole cause chain.
    pub fn from_error(code: Exit, error: &(dyn std::error::Error + 'static)) -> Failure {
        Failure {
            code,
            message: mailkeep_capture::error_chain(error),
        }
    }
}
