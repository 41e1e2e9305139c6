//! Maildir delivery: write and fsync in `tmp/`, then link into `new/`,
//! fsync `new/` and remove the `tmp/` name. The link is the commit point, so
//! a crash leaves at worst a complete file in `tmp/` (which Maildir readers
//! clean up after 36 hours), never a partial message in `new/`.

use crate::durable::{create_dir_all_durable, fsync_dir, write_new_file};
use crate::unique::unique_name;
use mailkeep_envelope::RawMessage;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A message written and fsynced in `tmp/`, not yet visible in `new/`.
#[derive(Debug)]
pub struct Prepared {
    tmp: PathBuf,
    new: PathBuf,
}

/// Writes the copy into `maildir/tmp/`.
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
        match write_new_file(&tmp, headers, message) {
            Ok(()) => {
                return Ok(Prepared {
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
    /// Moves the message into `new/` and makes the rename durable.
    /// A hard link, unlike rename(2), fails rather than replace a file
    /// that already has the name.
    pub fn commit(self) -> io::Result<PathBuf> {
        fs::hard_link(&self.tmp, &self.new)?;
        fsync_dir(self.new.parent().unwrap_or(Path::new(".")))?;
        let _ = fs::remove_file(&self.tmp);
        Ok(self.new)
    }

    /// Removes the file from `tmp/`.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_to_new() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("md");
        let msg = RawMessage::from_bytes(b"Subject: x\n\nbody\n".to_vec());
        let p = prepare(&md, "host/a:b", "H: 1\n", &msg).unwrap();
        assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 0);
        let path = p.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"H: 1\nSubject: x\n\nbody\n");
        assert!(path.to_str().unwrap().contains("host\\057a\\072b,S=22"));
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let p = prepare(&md, "h", "", &msg).unwrap();
        p.abort();
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }
}
