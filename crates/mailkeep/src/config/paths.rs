//! What a directory mailkeep keeps for itself (the spool, the filter's
//! dedup ledger, the forward queue) must not be: shared with the archive,
//! or creatable by another local user.
//!
//! The dedup ledger is pruned by age, so a ledger that overlaps a
//! destination or the store would delete archived mail; a directory that
//! another user can create first (a predictable name in `/tmp`) lets them
//! plant a link that points mailkeep's clean-up at the archive. Both are
//! refused when the configuration loads, before anything runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// `p` with `.` components and repeated or trailing slashes removed
/// (`..` is kept: it is only resolved against the file system).
pub fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// `p` with its longest existing ancestor resolved through symbolic links
/// (the rest is appended as written), so that two spellings of one
/// directory compare equal.
fn resolved(p: &Path) -> PathBuf {
    let p = normal(p);
    let mut base = p.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return p,
        }
    }
}

/// How `own` relates to `archive`, when they overlap.
pub fn overlap(own: &Path, archive: &Path) -> Option<&'static str> {
    let relation = |a: &Path, b: &Path| {
        if a == b {
            Some("is")
        } else if a.starts_with(b) {
            Some("is inside")
        } else if b.starts_with(a) {
            Some("contains")
        } else {
            None
        }
    };
    relation(&normal(own), &normal(archive))
        .or_else(|| relation(&resolved(own), &resolved(archive)))
}

fn world_writable(m: &std::fs::Metadata) -> bool {
    m.mode() & 0o002 != 0
}

fn sticky(m: &std::fs::Metadata) -> bool {
    m.mode() & 0o1000 != 0
}

/// Why another local user could create or replace `dir` (or a directory
/// above it) before mailkeep uses it, if they could: it would be created
/// in a world-writable directory, or it lies in one without the sticky bit,
/// or in a sticky one but owned by someone other than root or the user
/// checking.
pub fn hijackable(dir: &Path) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == me;
    let dir = normal(dir);
    for a in dir.ancestors() {
        let Some(parent) = a.parent() else { break };
        let Ok(pm) = parent.symlink_metadata() else {
            continue;
        };
        let Ok(am) = a.symlink_metadata() else {
            if world_writable(&pm) {
                return Some(format!(
                    "{} does not exist and would be created in {}, which every local user can write: \
                     another user could create it first, or a link in its place",
                    dir.display(),
                    parent.display()
                ));
            }
            continue;
        };
        if world_writable(&pm) && !(sticky(&pm) && trusted(am.uid())) {
            return Some(format!(
                "{} is in {}, which every local user can write, and is owned by uid {}: \
                 another user could have made it, or replace it with a link",
                a.display(),
                parent.display(),
                am.uid()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn overlaps() {
        let o = |a: &str, b: &str| overlap(Path::new(a), Path::new(b));
        assert_eq!(o("/var/archive", "/var/archive/"), Some("is"));
        assert_eq!(o("/var/archive/./x", "/var/archive"), Some("is inside"));
        assert_eq!(o("/var", "/var//archive"), Some("contains"));
        assert_eq!(o("/var/archive2", "/var/archive"), None);
        assert_eq!(o("/var/lib/mailkeep/spool", "/var/archive"), None);
    }

    #[test]
    fn overlap_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("archive")).unwrap();
        std::os::unix::fs::symlink(d.path().join("archive"), d.path().join("link")).unwrap();
        assert_eq!(
            overlap(&d.path().join("link/dedup"), &d.path().join("archive")),
            Some("is inside")
        );
    }

    #[test]
    fn world_writable_parents() {
        let d = tempfile::tempdir().unwrap();
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let m = hijackable(&open.join("dedup")).expect("would be created in a 0777 directory");
        assert!(m.contains("would be created in"), "{m}");
        assert!(hijackable(&open.join("a/b")).is_some());
        // Sticky, and made by root or us: nobody else could have made it.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::create_dir(open.join("mine")).unwrap();
        assert_eq!(hijackable(&open.join("mine/dedup")), None);
        // Not sticky: anyone can rename it away and put a link there.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(hijackable(&open.join("mine/dedup")).is_some());
        assert_eq!(hijackable(&d.path().join("private/dedup")), None);
        assert!(hijackable(Path::new("/tmp/mailkeep-filter-dedup-xyz")).is_some());
    }
}
