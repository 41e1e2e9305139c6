//! Who owns the files a store creates, and with which modes.
//!
//! The store belongs to the user that runs `mailkeep serve`. Admins run
//! `mailkeep import` (and everything else) as root out of habit; a segment,
//! a lock or a catalog created by root with mode 0600 would then be
//! unwritable for the daemon, and every message after it would be deferred.
//! So every file and directory the store creates takes the store
//! directory's owner and group when the writer runs as root (SQLite does the
//! same for its `-wal` and `-shm` files when run as root: it gives them the
//! database file's owner). A store directory created by root takes the owner
//! of the directory it is created in, so `install -d -o mailkeep /var/archive`
//! followed by a root import of `/var/archive/store` gives mailkeep's store.
//!
//! Modes: 0600 for files and 0700 for directories; with `[store] group`,
//! 0640 and 2750 (set-group-id, so what is created inside keeps the group),
//! and an existing store is brought to that group and those modes when a
//! writer opens it, so members of the group (auditors) can search and
//! verify it without any write access.

use rustix::fs::{Gid, Mode, Uid};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// Owner and modes for what a store creates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    /// Give new files this owner and group (the writer runs as root).
    owner: Option<(u32, u32)>,
    /// The configured group.
    group: Option<u32>,
}

impl Ownership {
    /// The rule for a store at `dir` (which exists), written by this process.
    pub fn for_store(dir: &Path, group: Option<u32>) -> io::Result<Ownership> {
        let st = rustix::fs::stat(dir)?;
        let owner = (rustix::process::geteuid().is_root() && st.st_uid != 0)
            .then_some((st.st_uid, group.unwrap_or(st.st_gid)));
        Ok(Ownership { owner, group })
    }

    /// Mode for new files.
    pub fn file_mode(&self) -> u32 {
        if self.group.is_some() {
            0o640
        } else {
            0o600
        }
    }

    /// Mode for new directories.
    pub fn dir_mode(&self) -> u32 {
        if self.group.is_some() {
            0o2750
        } else {
            0o700
        }
    }

    /// Gives a file or directory just created (or being repaired) its
    /// owner, group and mode.
    pub fn apply(&self, fd: impl AsFd, is_dir: bool) -> io::Result<()> {
        let fd = fd.as_fd();
        match (self.owner, self.group) {
            (Some((uid, gid)), _) => {
                rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?
            }
            (None, Some(gid)) => {
                if rustix::fs::fstat(fd)?.st_gid != gid {
                    rustix::fs::fchown(fd, None, Some(Gid::from_raw(gid))).map_err(|e| {
                        io::Error::new(
                            io::Error::from(e).kind(),
                            format!(
                                "cannot give it group {gid} (store.group): {e}; the user \
                                 mailkeep runs as must be a member of that group"
                            ),
                        )
                    })?;
                }
            }
            (None, None) => return Ok(()),
        }
        if self.group.is_some() {
            let mode = if is_dir {
                self.dir_mode()
            } else {
                self.file_mode()
            };
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
        }
        Ok(())
    }

    /// [`Ownership::apply`] to a path, if it exists.
    pub fn apply_path(&self, path: &Path) -> io::Result<()> {
        if self.owner.is_none() && self.group.is_none() {
            return Ok(());
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let is_dir = file.metadata()?.is_dir();
        self.apply(&file, is_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Creates the store directory `dir` (and missing parents) for its owner:
/// when root creates it, it takes the owner and group of the directory it is
/// created in.
pub fn create_store_dir(dir: &Path, group: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let mode = Ownership { owner: None, group }.dir_mode();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    if rustix::process::geteuid().is_root() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let pst = rustix::fs::stat(parent)?;
            if pst.st_uid != 0 {
                rustix::fs::chown(
                    dir,
                    Some(Uid::from_raw(pst.st_uid)),
                    Some(Gid::from_raw(group.unwrap_or(pst.st_gid))),
                )?;
            }
        }
    }
    Ok(())
}

/// The user this process runs as, for error messages: `name (uid N)`.
pub fn current_user() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?;
            (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}
