//! A dated tree of `.eml` files: `DIR/YYYY/MM/DD/NAME.eml`, one message per
//! file. The file is written and fsynced under a hidden temporary name in
//! the same directory, then hard-linked to its final name (which fails
//! rather than overwrite) and the directory fsynced.

use crate::durable::{create_copy, create_dir_all_durable, fsync_dir};
use crate::unique::unique_name;
use chrono::{DateTime, Datelike, Local, Utc};
use mailkeep_envelope::RawMessage;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// `DIR/YYYY/MM/DD` for a time, in local time.
pub fn dated_dir(dir: &Path, when: DateTime<Utc>) -> PathBuf {
    let l = when.with_timezone(&Local);
    dir.join(format!("{:04}", l.year()))
        .join(format!("{:02}", l.month()))
        .join(format!("{:02}", l.day()))
}

/// A copy written under a temporary name, not yet under its final one.
#[derive(Debug)]
pub struct Prepared {
    file: File,
    tmp: PathBuf,
    dir: PathBuf,
    stem: String,
}

/// Writes the copy into `DIR/YYYY/MM/DD/` under a temporary name (not yet
/// fsynced).
pub fn prepare(
    dir: &Path,
    received: DateTime<Utc>,
    host: &str,
    headers: &str,
    message: &RawMessage,
) -> io::Result<Prepared> {
    let day = dated_dir(dir, received);
    create_dir_all_durable(&day)?;
    let stem = format!(
        "{}-{}",
        received.with_timezone(&Local).format("%Y%m%dT%H%M%S"),
        unique_name(host)
    );
    let tmp = day.join(format!(".tmp-{stem}"));
    let file = create_copy(&tmp, headers, message)?;
    Ok(Prepared {
        file,
        tmp,
        dir: day,
        stem,
    })
}

/// Links `tmp` to `dir/stem.eml` (or `stem-N.eml` if taken), never
/// overwriting. Not durable until `dir` is fsynced.
pub fn link_unique(tmp: &Path, dir: &Path, stem: &str) -> io::Result<PathBuf> {
    for n in 0u32..10_000 {
        let name = if n == 0 {
            format!("{stem}.eml")
        } else {
            format!("{stem}-{n}.eml")
        };
        let target = dir.join(name);
        match fs::hard_link(tmp, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {stem}.eml in {}", dir.display()),
    ))
}

/// [`link_unique`], then fsync `dir`, then remove `tmp`: at every instant
/// the message has at least one durable name.
pub fn link_into(tmp: &Path, dir: &Path, stem: &str) -> io::Result<PathBuf> {
    let target = link_unique(tmp, dir, stem)?;
    fsync_dir(dir)?;
    fs::remove_file(tmp)?;
    Ok(target)
}

impl Prepared {
    /// The open copy, to be fsynced before [`Prepared::publish`].
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives the copy its final name; returns it and the directory that
    /// must be fsynced to make it durable.
    pub fn publish(&self) -> io::Result<(PathBuf, PathBuf)> {
        Ok((
            link_unique(&self.tmp, &self.dir, &self.stem)?,
            self.dir.clone(),
        ))
    }

    /// Removes the temporary name (after publishing, or to abort).
    pub fn remove_tmp(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let when = Utc::now();
        let msg = RawMessage::from_bytes(b"x\n".to_vec());
        let p = prepare(dir.path(), when, "h", "", &msg).unwrap();
        p.file().sync_all().unwrap();
        let (a, day) = p.publish().unwrap();
        fsync_dir(&day).unwrap();
        p.remove_tmp();
        assert!(a.starts_with(dated_dir(dir.path(), when)));
        assert_eq!(fs::read(&a).unwrap(), b"x\n");
        let tmp = dir.path().join("t");
        fs::write(&tmp, b"other").unwrap();
        let stem = a.file_stem().unwrap().to_str().unwrap();
        let b = link_into(&tmp, a.parent().unwrap(), stem).unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"x\n");
    }
}
