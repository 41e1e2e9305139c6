//! `mailkeep export`: the deliveries a query matches, oldest first, as
//! mbox (each message with its envelope headers, which `mailkeep import`
//! turns back into the envelope), a directory of exact `.eml` files, or a
//! zip; the last two carry `manifest.json` with each message's BLAKE3 and
//! SHA-256 and its whole envelope, plus the chain head at export time.

use crate::cli::{ExportArgs, ExportFormat};
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_destinations::mbox;
use mailkeep_envelope::block::{envelope_headers, line_ending};
use mailkeep_envelope::SpoolWriter;
use mailkeep_store::export::{manifest, stream_into, ExportError, ZipExport};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

fn io_fail(path: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(Exit::IOERR, format!("{}: {e}", path.display()))
}

/// A failed export as the CLI reports it.
fn failed(e: ExportError, path: &Path) -> Failure {
    match e {
        ExportError::Damaged { id, source } => Failure::new(
            Exit::DATAERR,
            format!(
                "delivery {id}: {}; the export is not written (run `mailkeep verify`)",
                mailkeep_capture::error_chain(&source)
            ),
        ),
        ExportError::Store(e) => Failure::from_store(Exit::IOERR, &e),
        e => Failure::new(Exit::IOERR, format!("{}: {e}", path.display())),
    }
}

pub fn run(settings: &Settings, args: ExportArgs) -> Result<Exit, Failure> {
    let query =
        mailkeep_query::parse(&args.query).map_err(|e| Failure::new(Exit::USAGE, e.to_string()))?;
    if args.out.exists() {
        return Err(Failure::new(
            Exit::USAGE,
            format!(
                "{}: already exists; export never overwrites",
                args.out.display()
            ),
        ));
    }
    let store = settings.open_store()?;
    let mut hits = store
        .search(&query, None)
        .map_err(|e| Failure::from_store(Exit::IOERR, &e))?;
    hits.reverse();
    let ids: Vec<i64> = hits.iter().map(|h| h.record.id).collect();
    settings.audit(&store)?.record(
        "export",
        json!({
            "query": args.query,
            "format": format!("{:?}", args.format).to_lowercase(),
            "out": args.out.display().to_string(),
            "results": hits.len(),
            "ids": mailkeep_lifecycle::audit::id_ranges(&ids),
        }),
    )?;
    if hits.is_empty() {
        // Nothing is written: an empty file would look like an export.
        eprintln!("nothing matched; {} not written", args.out.display());
        return Ok(Exit::NOTHING);
    }
    let out = &args.out;
    let tmp = out.with_extension("zip.partial");
    let written = (|| -> Result<(), Failure> {
        match args.format {
            ExportFormat::Mbox => {
                // The error names the mbox (and a lock's holder).
                let mut locked = mbox::lock(out, std::time::Duration::from_secs(10))
                    .map_err(|e| Failure::new(Exit::IOERR, e.to_string()))?;
                for hit in &hits {
                    // Through the spool (memory up to its threshold, an unnamed
                    // file past it): the mbox writer needs the whole message.
                    let spool = SpoolWriter::new(&settings.spool_dir, settings.spool_threshold);
                    let message = stream_into(&store, hit, spool)
                        .map_err(|e| failed(e, &settings.spool_dir))?
                        .out
                        .finish()
                        .map_err(io_fail(&settings.spool_dir))?;
                    let head = message.head().map_err(io_fail(&settings.spool_dir))?;
                    let eol = line_ending(&head);
                    let env = mailkeep_store::envelope_of(&hit.record, message);
                    let headers = envelope_headers(&env, &settings.hostname, eol);
                    locked
                        .append(env.received, env.sender.as_deref(), &headers, &env.message)
                        .map_err(io_fail(out))?;
                }
                locked.sync().map_err(io_fail(out))?;
            }
            ExportFormat::Eml => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(out)
                    .map_err(io_fail(out))?;
                let mut entries = Vec::new();
                for hit in &hits {
                    let name = format!("{}.eml", hit.record.id);
                    let path = out.join(&name);
                    let file = private_file(&path)?;
                    let d = match stream_into(&store, hit, std::io::BufWriter::new(file)) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            return Err(failed(e, &path));
                        }
                    };
                    entries.push(d.entry(hit, &name, json!(hit.record)));
                    let file = d
                        .out
                        .into_inner()
                        .map_err(|e| io_fail(&path)(e.into_error()))?;
                    file.sync_all().map_err(io_fail(&path))?;
                }
                let m = manifest(&store, &args.query, entries).map_err(|e| failed(e, out))?;
                write_durable(&out.join("manifest.json"), m.as_bytes())?;
                mailkeep_store::fsync_dir(out).map_err(io_fail(out))?;
            }
            ExportFormat::Zip => {
                // Written under a temporary name and renamed when complete, so
                // a crash never leaves a zip that looks whole.
                let mut zip = ZipExport::new(private_file(&tmp)?);
                for hit in &hits {
                    zip.add(&store, hit, json!(hit.record))
                        .map_err(|e| failed(e, &tmp))?;
                }
                let file = zip
                    .finish(&store, &args.query)
                    .map_err(|e| failed(e, &tmp))?;
                file.sync_all().map_err(io_fail(&tmp))?;
                std::fs::rename(&tmp, out).map_err(io_fail(out))?;
                if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                    mailkeep_store::fsync_dir(dir).map_err(io_fail(dir))?;
                }
            }
        }
        Ok(())
    })();
    if let Err(f) = written {
        // Nothing of a failed export stays behind to look like one (the
        // target did not exist before: export never overwrites).
        let _ = std::fs::remove_file(&tmp);
        if out.is_dir() {
            let _ = std::fs::remove_dir_all(out);
        } else {
            let _ = std::fs::remove_file(out);
        }
        return Err(f);
    }
    eprintln!("exported {} message(s) to {}", hits.len(), out.display());
    Ok(if hits.is_empty() {
        Exit::NOTHING
    } else {
        Exit::OK
    })
}

/// A new file only its owner can read: exports are archived mail.
fn private_file(path: &Path) -> Result<std::fs::File, Failure> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_fail(path))
}

fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut f = private_file(path)?;
    f.write_all(bytes).map_err(io_fail(path))?;
    f.sync_all().map_err(io_fail(path))
}
