//! The `[retention]` section of a configuration file read and replaced
//! as text (the web interface's retention page), everything else in the
//! file left as it was written, comments included.

use toml_edit::{DocumentMut, Item, Table};

/// The section of the file `text` as TOML (with its comments), or an
/// empty string when it has none.
pub fn retention_section(text: &str) -> Result<String, String> {
    let doc: DocumentMut = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    let mut out = DocumentMut::new();
    if let Some(item) = doc.get("retention") {
        out["retention"] = item.clone();
    }
    Ok(out.to_string())
}

/// The file `text` with its `[retention]` section replaced by `section`,
/// TOML that holds `[retention]` and nothing else (or nothing at all: the
/// section is removed). The new section goes at the end of the file.
pub fn with_retention_section(text: &str, section: &str) -> Result<String, String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("the configuration file is not TOML: {e}"))?;
    let new: DocumentMut = section
        .parse()
        .map_err(|e| format!("the section is not TOML: {e}"))?;
    if let Some((key, _)) = new.iter().find(|(k, _)| *k != "retention") {
        return Err(format!(
            "only [retention] is changed here; `{key}` is not part of it"
        ));
    }
    doc.remove("retention");
    if let Some(item) = new.get("retention") {
        if !item.is_table() {
            return Err("`retention` is a section: write it as [retention]".into());
        }
        let mut item = item.clone();
        let mut next = last_position(doc.as_table()) + 1;
        place(&mut item, &mut next);
        doc["retention"] = item;
    }
    Ok(doc.to_string())
}

/// The highest position of any table in `t`.
fn last_position(t: &Table) -> usize {
    let mut last = t.position().unwrap_or(0);
    for (_, item) in t.iter() {
        match item {
            Item::Table(t) => last = last.max(last_position(t)),
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    last = last.max(last_position(t));
                }
            }
            _ => {}
        }
    }
    last
}

/// Numbers the tables of `item` from `next` on, in their order, so they
/// are written after everything else and in the order given.
fn place(item: &mut Item, next: &mut usize) {
    let number = |t: &mut Table, next: &mut usize| {
        t.set_position(*next);
        *next += 1;
        for (_, child) in t.iter_mut() {
            place(child, next);
        }
    };
    match item {
        Item::Table(t) => number(t, next),
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                number(t, next);
            }
        }
        _ => {}
    }
}

/// Replaces the file at `path` with `text` atomically (see
/// [`mailkeep_store::replace_file`]), keeping its mode and, where allowed,
/// its owner. A symbolic link is followed: the file it names is replaced
/// and the link stays.
pub fn replace_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = &std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(path)?;
    mailkeep_store::replace_file(
        path,
        text.as_bytes(),
        meta.mode() & 0o7777,
        Some((meta.uid(), meta.gid())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# the site's archive\n[store]\npath = \"/var/lib/mailkeep\" # here\n\n\
        # how long\n[retention]\ndefault = \"1y\"\n\n[[retention.policy]]\nname = \"news\"\nfrom = [\"*@news.*\"]\nkeep = \"90d\"\n\n\
        [[rule]]\nname = \"all\"\narchive = [\"store\"]\n";

    #[test]
    fn the_section_round_trips_and_the_rest_of_the_file_stays_as_written() {
        let section = retention_section(FILE).unwrap();
        assert!(
            section.contains("# how long\n[retention]\ndefault = \"1y\""),
            "{section}"
        );
        assert!(
            section.contains("[[retention.policy]]\nname = \"news\""),
            "{section}"
        );
        assert_eq!(retention_section("[store]\npath = \"x\"\n").unwrap(), "");

        let changed = with_retention_section(
            FILE,
            "[retention]\ndefault = \"2y\" # longer\n\n[[retention.policy]]\nname = \"finance\"\nlogin = [\"*@finance.example\"]\nkeep = \"10y\"\n",
        )
        .unwrap();
        assert!(
            changed.starts_with(
                "# the site's archive\n[store]\npath = \"/var/lib/mailkeep\" # here\n"
            ),
            "{changed}"
        );
        assert!(
            changed.contains("[[rule]]\nname = \"all\"\narchive = [\"store\"]\n"),
            "{changed}"
        );
        assert!(!changed.contains("news"), "{changed}");
        let at = |s: &str| changed.find(s).unwrap();
        assert!(at("[[rule]]") < at("[retention]"), "{changed}");
        assert!(at("[retention]") < at("[[retention.policy]]"), "{changed}");
        assert!(changed.contains("default = \"2y\" # longer"), "{changed}");
        let parsed: toml::Value = toml::from_str(&changed).unwrap();
        assert_eq!(parsed["retention"]["default"].as_str(), Some("2y"));
        assert_eq!(
            parsed["retention"]["policy"][0]["keep"].as_str(),
            Some("10y")
        );
        assert_eq!(parsed["rule"][0]["name"].as_str(), Some("all"));

        // Removed: nothing kept for it, the rest unchanged.
        let removed = with_retention_section(FILE, "").unwrap();
        assert!(!removed.contains("retention"), "{removed}");
        assert!(removed.contains("[[rule]]"), "{removed}");
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_leaves_nothing_beside_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailkeep.toml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mailkeep.toml"]);
        assert!(replace_file(&dir.path().join("missing.toml"), "x").is_err());

        // Through a link: the file it names is replaced, the link stays.
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        replace_file(&link, "newer\n").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer\n");
    }

    #[test]
    fn nothing_but_the_section_is_changed() {
        for (section, why) in [
            ("[web]\nauth = [\"local\"]\n", "`web` is not part of it"),
            (
                "[retention]\ndefault = \"1y\"\n[store]\npath = \"/tmp\"\n",
                "`store`",
            ),
            ("retention = \"forever\"\n", "write it as [retention]"),
            ("[retention\n", "not TOML"),
        ] {
            let e = with_retention_section(FILE, section).unwrap_err();
            assert!(e.contains(why), "{section}: {e}");
        }
    }
}
