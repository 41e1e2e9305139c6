//! `check-config --as USER`: can that user write every place the
//! configuration makes mailkeep write, and read its keys?
//!
//! The kernel answers, not a computation from mode bits: a child process
//! becomes the user (supplementary groups, then gid, then uid, as a service
//! manager would start the daemon) and asks `access(2)` about each path,
//! so ACLs, read-only mounts and group membership count exactly as they
//! will for `serve`. A directory that does not exist yet must be creatable:
//! its nearest existing ancestor must be writable.
//!
//! `check-config` forks before any thread is started (no runtime, no
//! store), which is what makes running ordinary code in the child sound.

use crate::config::{Need, Place};
use nix::unistd::{access, AccessFlags, User};
use std::io::{Read, Write};
use std::path::Path;

/// Why `user` could not do what `places[i]` needs, for each `i` that fails.
/// Runs in-process when `user` is the caller; otherwise needs root.
pub fn check(user: &User, places: &[Place]) -> Result<Vec<(usize, String)>, String> {
    if user.uid == nix::unistd::geteuid() {
        return Ok(check_all(places));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "--as {}: checking as another user needs root",
            user.name
        ));
    }
    as_user(user, places)
}

fn check_all(places: &[Place]) -> Vec<(usize, String)> {
    places
        .iter()
        .enumerate()
        .filter_map(|(i, p)| check_place(p).err().map(|m| (i, m)))
        .collect()
}

#[allow(unsafe_code)]
fn as_user(user: &User, places: &[Place]) -> Result<Vec<(usize, String)>, String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // Nothing buffered may be written twice, once by each process.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: check-config has started no thread (no runtime, no store, no
    // logging thread), so the child is a full copy of a single-threaded
    // process and may run ordinary code; it leaves through `_exit`.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(read_end);
            let mut out = std::fs::File::from(write_end);
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match become_user(user) {
                    Err(m) => {
                        let _ = writeln!(out, "-\t{m}");
                        false
                    }
                    Ok(()) => {
                        for (i, m) in check_all(places) {
                            let _ = writeln!(out, "{i}\t{}", m.replace('\n', " "));
                        }
                        out.flush().is_ok()
                    }
                }
            }));
            // SAFETY: `_exit` ends the child at once, without the parent's
            // exit handlers or a second flush of inherited buffers.
            unsafe { nix::libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut text = String::new();
            let read = std::fs::File::from(read_end).read_to_string(&mut text);
            let status = waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            read.map_err(|e| format!("reading the check's answer: {e}"))?;
            let mut failures = Vec::new();
            for line in text.lines() {
                let (i, m) = line.split_once('\t').unwrap_or(("-", line));
                match i.parse::<usize>() {
                    Ok(i) => failures.push((i, m.to_string())),
                    Err(_) => return Err(format!("--as {}: {m}", user.name)),
                }
            }
            match status {
                WaitStatus::Exited(_, 0) => Ok(failures),
                other => Err(format!(
                    "--as {}: the check as that user failed ({other:?})",
                    user.name
                )),
            }
        }
    }
}

/// Takes on `user`'s groups, gid and uid, in that order (after the uid
/// changes, the groups can no longer be).
fn become_user(user: &User) -> Result<(), String> {
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|e| e.to_string())?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|e| format!("the groups of {}: {e}", user.name))?;
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}

/// What is wrong with `p` for the current user, if anything.
fn check_place(p: &Place) -> Result<(), String> {
    let path = p.path.as_path();
    match p.need {
        Need::Dir => writable_dir(path),
        Need::Store => {
            writable_dir(path)?;
            for name in [
                "lock",
                "catalog.sqlite",
                "catalog.sqlite-wal",
                "catalog.sqlite-shm",
            ] {
                writable_if_exists(&path.join(name), AccessFlags::R_OK | AccessFlags::W_OK)?;
            }
            let segments = path.join("segments");
            writable_if_exists(&segments, AccessFlags::W_OK | AccessFlags::X_OK)?;
            // The newest segment is the one appended to.
            if let Ok(entries) = std::fs::read_dir(&segments) {
                let newest = entries.flatten().map(|e| e.path()).max();
                if let Some(seg) = newest {
                    writable_if_exists(&seg, AccessFlags::R_OK | AccessFlags::W_OK)?;
                }
            }
            Ok(())
        }
        Need::Mbox => {
            // The dotlock is created beside the file.
            writable_dir(path.parent().unwrap_or(Path::new("/")))?;
            writable_if_exists(path, AccessFlags::R_OK | AccessFlags::W_OK)
        }
        Need::Read => access(path, AccessFlags::R_OK)
            .map_err(|e| format!("cannot read {}: {}", path.display(), e.desc())),
        Need::ReadOrCreate => match std::fs::symlink_metadata(path) {
            Ok(_) => access(path, AccessFlags::R_OK)
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.desc())),
            Err(_) => writable_dir(path.parent().unwrap_or(Path::new("/"))),
        },
    }
}

fn writable_if_exists(path: &Path, mode: AccessFlags) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot reach {}: {}", path.display(), e.kind())),
        Ok(_) => {
            access(path, mode).map_err(|e| format!("cannot write {}: {}", path.display(), e.desc()))
        }
    }
}

/// A directory the user can write in, or create.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if !m.is_dir() => {
                return Err(format!("{} is not a directory", at.display()));
            }
            Ok(_) => {
                return access(at, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
                    if at == dir {
                        format!("cannot write {}: {}", dir.display(), e.desc())
                    } else {
                        format!(
                            "cannot create {}: {}: {}",
                            dir.display(),
                            at.display(),
                            e.desc()
                        )
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(format!("cannot create {}", dir.display())),
            },
            Err(e) => return Err(format!("cannot reach {}: {}", dir.display(), e.kind())),
        }
    }
}
