//! Filing loose `.eml` files (one message per file) into the dated tree
//! `DEST/YYYY/MM/DD/` that the `eml:` destination writes, by each message's
//! `Date:` header, or the file's modification time when the header is
//! missing or unparsable.
//!
//! A move is a hard link to the new name (which never replaces an existing
//! file), a directory fsync, then removal of the old name and a second
//! fsync: at every instant the message has at least one durable name. A
//! file whose identical twin already sits at the target is a duplicate: the
//! loose copy is removed. Running the command again finds nothing to do.
//! Across filesystems the file is copied (and fsynced) first.

use crate::durable::{create_dir_all_durable, fsync_dir};
use crate::eml::link_into;
use chrono::{DateTime, Datelike, Local, TimeZone, Utc};
use mail_parser::MessageParser;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Where a message's date came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSource {
    /// The `Date:` header.
    Header,
    /// The file's modification time.
    Mtime,
}

/// One loose file and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The loose file.
    pub from: PathBuf,
    /// The dated directory it belongs in.
    pub dir: PathBuf,
    /// Its name there, without `.eml`.
    pub stem: String,
    /// How its date was found.
    pub dated_by: DateSource,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// Moved to this path.
    Moved(PathBuf),
    /// An identical copy was already at this path; the loose one was removed.
    Duplicate(PathBuf),
}

/// Finds the loose `.eml` files directly in `dir` (not in subdirectories,
/// not hidden, not symlinks) and where each belongs under `into`.
pub fn plan(dir: &Path, into: &Path) -> io::Result<Vec<Move>> {
    let mut moves = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ft = entry.file_type()?;
        if !ft.is_file() || name.starts_with('.') {
            continue;
        }
        let Some(stem) = name
            .len()
            .checked_sub(4)
            .filter(|&i| name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".eml"))
            .map(|i| &name[..i])
        else {
            continue;
        };
        let path = entry.path();
        let (when, dated_by) = match header_date(&path)? {
            Some(t) => (t, DateSource::Header),
            None => (
                DateTime::<Utc>::from(entry.metadata()?.modified()?),
                DateSource::Mtime,
            ),
        };
        let l = when.with_timezone(&Local);
        moves.push(Move {
            from: path,
            dir: into
                .join(format!("{:04}", l.year()))
                .join(format!("{:02}", l.month()))
                .join(format!("{:02}", l.day())),
            stem: stem.to_string(),
            dated_by,
        });
    }
    moves.sort_by(|a, b| a.from.cmp(&b.from));
    Ok(moves)
}

/// The `Date:` header of the message in `path`, if present and valid.
fn header_date(path: &Path) -> io::Result<Option<DateTime<Utc>>> {
    let mut head = Vec::new();
    File::open(path)?.take(256 * 1024).read_to_end(&mut head)?;
    let Some(msg) = MessageParser::default().parse_headers(&head) else {
        return Ok(None);
    };
    Ok(msg
        .date()
        .filter(|d| {
            // mail-parser accepts day 31 in any month; the calendar decides.
            d.is_valid()
                && chrono::NaiveDate::from_ymd_opt(d.year.into(), d.month.into(), d.day.into())
                    .and_then(|n| n.and_hms_opt(d.hour.into(), d.minute.into(), d.second.into()))
                    .is_some()
        })
        .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single()))
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (ma, mb) = (fs::metadata(a)?, fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Carries out one move.
pub fn apply(m: &Move) -> io::Result<Filed> {
    create_dir_all_durable(&m.dir)?;
    for n in 0u32.. {
        let name = if n == 0 {
            format!("{}.eml", m.stem)
        } else {
            format!("{}-{n}.eml", m.stem)
        };
        let existing = m.dir.join(name);
        if !existing.exists() {
            break;
        }
        if same_content(&m.from, &existing)? {
            fs::remove_file(&m.from)?;
            fsync_dir(m.from.parent().unwrap_or(Path::new(".")))?;
            return Ok(Filed::Duplicate(existing));
        }
    }
    let source_dir = m.from.parent().unwrap_or(Path::new(".")).to_path_buf();
    let target = match link_into(&m.from, &m.dir, &m.stem) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: another filesystem. Copy beside the target, fsync,
            // then link that copy into place and remove the original.
            let tmp = m.dir.join(format!(".tmp-{}", m.stem));
            fs::copy(&m.from, &tmp)?;
            File::open(&tmp)?.sync_all()?;
            let t = link_into(&tmp, &m.dir, &m.stem)?;
            fs::remove_file(&m.from)?;
            t
        }
        Err(e) => return Err(e),
    };
    fsync_dir(&source_dir)?;
    Ok(Filed::Moved(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_dates_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.eml");
        fs::write(&p, b"Date: Mon, 31 Feb 2024 12:00:00 +0000\n\nx\n").unwrap();
        assert_eq!(header_date(&p).unwrap(), None);
        fs::write(&p, b"Date: Thu, 29 Feb 2024 12:00:00 +0000\n\nx\n").unwrap();
        assert_eq!(
            header_date(&p).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 12, 0, 0).single()
        );
    }
}
