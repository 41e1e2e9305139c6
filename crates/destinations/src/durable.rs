//! The fsync discipline every destination follows.
//!
//! A file is durable once its data is fsynced *and* the directory entry that
//! names it is fsynced; a new directory is durable once its parent is
//! fsynced. Each destination calls these before it reports success.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Fsyncs a directory so the entries created or renamed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing the parent of every
/// directory it creates. New directories are 0700: what lies below them is
/// mail, and even its names (a recipient's address in an eml tree) are
/// private. Existing directories are left as they are.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        // Another writer created it between our check and our mkdir.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` (failing with `AlreadyExists` rather than replacing a
/// file) and writes `headers` then the message. The file is *not* fsynced:
/// the caller syncs it, alone or with a whole batch. On any error after
/// creation the file is removed again, so there is never a partial copy
/// under this name.
pub fn create_copy(
    path: &Path,
    headers: &str,
    message: &mailkeep_envelope::RawMessage,
) -> io::Result<File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = (|| {
        let mut out = io::BufWriter::with_capacity(256 * 1024, &file);
        out.write_all(headers.as_bytes())?;
        message.write_to(&mut out)?;
        out.flush()
    })();
    match written {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}
