//! Administration that cannot break the archive: mailkeep's own directories
//! are never another user's, clean-up never follows a link, commands run as
//! root leave the store usable by its owner, and readers need no write
//! access.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Runs `serve` with `config` for at most `for_at_most` (it is killed then);
/// returns its exit code if it exited by itself, and its stderr.
fn serve_briefly(dir: &Path, config: &str, for_at_most: Duration) -> (Option<i32>, String) {
    let cfg = write_config(dir, config);
    let log = dir.join("serve-briefly.log");
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + for_at_most;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Files like an archive's, two levels deep, last changed long before the
/// dedup ledger's 8-day horizon.
fn old_archive(dir: &Path) -> Vec<PathBuf> {
    let files = vec![
        dir.join("bob/sent.mbox"),
        dir.join("segments/00000001.seg"),
        dir.join("catalog.sqlite"),
    ];
    let old = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    for f in &files {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"archived mail").unwrap();
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    files
}

fn filter_config(port: u16, dedup_lines: &str, archive: &Path) -> String {
    format!(
        "{dedup_lines}\n[filter]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[rule]]\nname = \"all\"\narchive = [\"mbox:{}/{{login}}/sent.mbox\"]\n",
        archive.display()
    )
}

fn assert_all_there(files: &[PathBuf]) {
    for f in files {
        assert!(f.exists(), "{} was deleted", f.display());
    }
}

/// The classic attack on a predictable name in a world-writable directory:
/// another user plants `SPOOL/mailkeep-filter-dedup` as a link into the
/// archive before mailkeep first starts. serve must refuse the ledger and
/// delete nothing.
#[test]
fn serve_refuses_a_planted_link_at_the_dedup_location_and_deletes_nothing() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    let shared = dir.path().join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    // Where the ledger goes when `dedup_dir` is not set.
    std::os::unix::fs::symlink(&archive, shared.join("mailkeep-filter-dedup")).unwrap();
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}\"\n", shared.display()),
        &archive,
    );
    let (code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert_eq!(code, Some(78), "serve must refuse the ledger: {log}");
    assert!(log.contains("symbolic link"), "{log}");
}

/// `dedup_dir` set to an explicit path that is a link into the archive.
#[test]
fn serve_refuses_a_dedup_dir_that_is_a_link() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    let link = dir.path().join("ledger");
    std::os::unix::fs::symlink(&archive, &link).unwrap();
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}\"\n", dir.path().display()),
        &archive,
    )
    .replace(
        "[filter]\n",
        &format!("[filter]\ndedup_dir = \"{}\"\n", link.display()),
    );
    let (code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("filter.dedup_dir"), "{log}");
}

/// `dedup_dir` pointed at the archive itself (an admin's mistake): whether
/// the configuration is refused or serve runs, no archive file goes.
#[test]
fn a_dedup_dir_pointed_at_the_archive_deletes_nothing() {
    let dir = sandbox();
    let archive = dir.path().join("archive");
    let files = old_archive(&archive);
    set_mode(&archive, 0o700);
    let config = filter_config(
        free_port(),
        &format!("[spool]\ndir = \"{}\"\n", dir.path().display()),
        &archive,
    )
    .replace(
        "[filter]\n",
        &format!("[filter]\ndedup_dir = \"{}\"\n", archive.display()),
    );
    let (_code, log) = serve_briefly(dir.path(), &config, Duration::from_secs(3));
    assert_all_there(&files);
    assert!(!log.contains("old dedup keys removed"), "{log}");
}
