//! Maildir delivery: write the copy in `tmp/`, fsync it, link it into
//! `new/`, fsync `new/`, then remove the `tmp/` name. The link is the commit
//! point, so a crash leaves at worst a complete file in `tmp/` (which
//! Maildir readers clean up after 36 hours), never a partial message in
//! `new/`. A hard link, unlike rename(2), fails rather than replace a file
//! that already has the name.
//!
//! The steps are separate calls so a batch of messages can share the
//! fsyncs (see the crate documentation).

use crate::durable::{create_copy, create_dir_all_durable};
use crate::unique::unique_name;
use mailkeep_envelope::RawMessage;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// A copy written in `tmp/`, not yet visible in `new/`.
#[derive(Debug)]
pub struct Prepared {
    file: File,
    tmp: PathBuf,
    new: PathBuf,
}

/// Writes the copy into `maildir/tmp/` (not yet fsynced).
pub fn prepare(
    maildir: &Path,
    host: &str,
    headers: &str,
    message: &RawMessage,
) -> io::Result<Prepared> {
    for sub in ["cur", "new", "tmp"] {
        create_dir_all_durable(&maildir.join(sub))?;
    }
    let size = headers.len() as u64 + message.len();
    loop {
        let name = format!("{},S={size}", unique_name(host));
        let tmp = maildir.join("tmp").join(&name);
        match create_copy(&tmp, headers, message) {
            Ok(file) => {
                return Ok(Prepared {
                    file,
                    new: maildir.join("new").join(&name),
                    tmp,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Prepared {
    /// The open copy, to be fsynced before [`Prepared::publish`].
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Links the copy into `new/`; returns the new path and the directory
    /// that must be fsynced to make it durable.
    pub fn publish(&self) -> io::Result<(PathBuf, PathBuf)> {
        fs::hard_link(&self.tmp, &self.new)?;
        let dir = self.new.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok((self.new.clone(), dir))
    }

    /// Removes the `tmp/` name (after publishing, or to abort).
    pub fn remove_tmp(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::fsync_dir;

    #[test]
    fn delivers_to_new() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("md");
        let msg = RawMessage::from_bytes(b"Subject: x\n\nbody\n".to_vec());
        let p = prepare(&md, "host/a:b", "H: 1\n", &msg).unwrap();
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 0);
        p.file().sync_all().unwrap();
        let (path, new_dir) = p.publish().unwrap();
        fsync_dir(&new_dir).unwrap();
        p.remove_tmp();
        assert_eq!(fs::read(&path).unwrap(), b"H: 1\nSubject: x\n\nbody\n");
        assert!(path.to_str().unwrap().contains("host\\057a\\072b,S=22"));
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let p = prepare(&md, "h", "", &msg).unwrap();
        p.remove_tmp();
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 1);
    }
}
