//! `mailkeep checkpoint`: the chain head, for an auditor to keep.

use crate::cli::CheckpointArgs;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use std::io::Write;

pub fn run(settings: &Settings, args: CheckpointArgs) -> Result<Exit, Failure> {
    let store = settings.open_store()?;
    let audit = settings.audit(&store)?;
    audit.record(
        "checkpoint",
        serde_json::json!({"out": args.out.as_ref().map(|p| p.display().to_string())}),
    )?;
    // The audit log's head, this checkpoint's own entry included.
    let audit_head = audit
        .log()
        .verify()
        .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?
        .head;
    let cp = store
        .checkpoint_with(audit_head)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    let text = cp.to_text();
    match args.out {
        None => print!("{text}"),
        Some(path) => {
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    mailkeep_store::fsync_dir(dir)?;
                }
                Ok(())
            };
            write().map_err(|e| Failure::new(Exit::IOERR, format!("{}: {e}", path.display())))?;
            eprintln!(
                "checkpoint of entry {} written to {}{}",
                cp.entry,
                path.display(),
                if cp.signature.is_some() {
                    " (signed)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(Exit::OK)
}
