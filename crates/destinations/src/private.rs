//! Directories mailkeep keeps for itself: the spool, the SMTP filter's dedup
//! ledger, the archive-copy queue.
//!
//! They hold mail or decide what happens to it, and mailkeep removes files
//! in some of them, so a directory another local user controls (one they
//! created first at a predictable path in `/tmp`, or a symlink they planted
//! there pointing into the store) must never be taken for ours. Before use,
//! [`ensure_private_dir`] creates what is missing with mode 0700 and then
//! checks the directory itself without following a link: it must be a real
//! directory, owned by the user mailkeep runs as, with no access for others
//! and no write access for the group; and no directory above it may be
//! writable by others without the sticky bit (anyone could rename ours away
//! and put theirs in its place).

use rustix::fs::{FileType, Mode};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` (not its parents: a missing parent is a mistake to report,
/// not a tree to make) with mode 0700 and checks that it is
/// safe to keep private files in; `what` names it in errors ("filter.dedup_dir").
/// A directory of ours that is merely too open is set to 0700.
pub fn ensure_private_dir(dir: &Path, what: &str) -> io::Result<()> {
    if rustix::fs::lstat(dir).is_err() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| annotate(e, format!("{what} {}: cannot create it", dir.display())))?;
    }
    check(dir, what, true)
}

fn check(dir: &Path, what: &str, tighten: bool) -> io::Result<()> {
    let unsafe_dir = |reason: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{what} {}: {reason}", dir.display()),
        )
    };
    let st = rustix::fs::lstat(dir)
        .map_err(|e| annotate(e.into(), format!("{what} {}", dir.display())))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Symlink {
        return Err(unsafe_dir(
            "is a symbolic link; mailkeep keeps its own files only in a real directory".into(),
        ));
    }
    if kind != FileType::Directory {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by the user mailkeep runs as (uid {me}); \
             remove it or give it to that user (chown, chmod 700)",
            st.st_uid
        )));
    }
    let mode = Mode::from_raw_mode(st.st_mode);
    if mode.intersects(Mode::RWXO | Mode::WGRP) {
        if !tighten {
            return Err(unsafe_dir(format!(
                "has mode {:04o}; others may not reach it and the group may not write it (chmod 700)",
                st.st_mode & 0o7777
            )));
        }
        // Ours, only too open (made by an older mailkeep, or by hand with
        // the default umask): closed rather than refused.
        rustix::fs::chmod(dir, Mode::RWXU)
            .map_err(|e| annotate(e.into(), format!("{what} {}: chmod 700", dir.display())))?;
        tracing::warn!(
            "{what} {}: had mode {:04o}, now 0700",
            dir.display(),
            st.st_mode & 0o7777
        );
    }
    let mut parent = dir.parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(pst) = rustix::fs::stat(p) {
            let pm = Mode::from_raw_mode(pst.st_mode);
            if pm.contains(Mode::WOTH) && !pm.contains(Mode::SVTX) {
                return Err(unsafe_dir(format!(
                    "lies under {}, which anyone may write to without the sticky bit",
                    p.display()
                )));
            }
        }
        parent = p.parent();
    }
    Ok(())
}

fn annotate(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_0700_directory() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a");
        ensure_private_dir(&dir, "test").unwrap();
        assert!(
            ensure_private_dir(&top.path().join("x/y"), "test").is_err(),
            "no parents made"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        ensure_private_dir(&dir, "test").unwrap();
    }

    #[test]
    fn refuses_a_symlink_even_to_a_good_directory() {
        let top = tempfile::tempdir().unwrap();
        let real = top.path().join("real");
        ensure_private_dir(&real, "test").unwrap();
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = ensure_private_dir(&link, "filter.dedup_dir").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(e.to_string().contains("filter.dedup_dir"), "{e}");
    }

    #[test]
    fn refuses_open_modes_and_world_writable_parents() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d");
        ensure_private_dir(&dir, "test").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check(&dir, "test", false).unwrap_err();
        assert!(e.to_string().contains("mode 0755"), "{e}");
        ensure_private_dir(&dir, "test").unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "ours, too open: closed");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&dir, "test").unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_private_dir(&dir, "test").unwrap();
    }

    #[test]
    fn refuses_a_directory_of_another_user() {
        if rustix::process::geteuid().as_raw() != 0 {
            return; // only root can give a directory away
        }
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = ensure_private_dir(&dir, "test").unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}
