//! README's recipes hold: the Postfix lines it pastes are exactly what
//! `mailkeep postfix-snippet KIND --postconf` / `--revert` print (one source
//! for them), and those commands apply to a real Postfix configuration and
//! undo cleanly.

use crate::util::*;
use std::path::Path;
use std::process::Command;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(path).expect("README.md")
}

fn snippet(args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("postfix-snippet")
        .args(args)
        .output()
        .expect("run mailkeep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every `# mailkeep postfix-snippet ...` line in README's code blocks is
/// followed by exactly the commands that invocation prints.
#[test]
fn readme_postfix_lines_are_the_snippet_commands_output() {
    let text = readme();
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(args) = line.strip_prefix("# mailkeep postfix-snippet ") else {
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let quoted: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with("postconf "))
            .copied()
            .collect();
        let printed = snippet(&args);
        let printed: Vec<&str> = printed.lines().collect();
        assert_eq!(quoted, printed, "README after `{line}`");
        checked.push(args.join(" "));
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "filter --postconf",
            "filter --revert",
            "milter --postconf",
            "milter --revert",
            "pipe --postconf",
            "pipe --revert",
        ],
        "each capture recipe quotes its commands and its way back"
    );
}

/// Runs one `postconf ...` line against the configuration in `dir`.
fn postconf_in(dir: &Path, line: &str) {
    let rest = line.strip_prefix("postconf ").expect("a postconf line");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("postconf -c '{}' {rest}", dir.display()))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postconf_query(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("postconf")
        .arg("-c")
        .arg(dir)
        .args(args)
        .output()
        .expect("postconf (package postfix)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commands, run by a real `postconf` on a copy of a stock
/// configuration, give the settings the excerpts show, and `--revert`
/// brings the configuration back to what it was.
#[test]
fn snippet_commands_apply_to_a_real_postfix_and_revert_cleanly() {
    let dir = sandbox();
    let stock_master = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .or_else(|_| std::fs::read_to_string("/etc/postfix/master.cf"))
        .expect("a stock master.cf (package postfix)");
    for kind in ["milter", "filter", "pipe"] {
        let conf = dir.path().join(kind);
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("main.cf"), "compatibility_level = 3.6\n").unwrap();
        std::fs::write(conf.join("master.cf"), &stock_master).unwrap();
        let before = (
            postconf_query(&conf, &["-n"]),
            postconf_query(&conf, &["-M"]),
            postconf_query(&conf, &["-P"]),
        );
        for line in snippet(&[kind, "--postconf"]).lines() {
            postconf_in(&conf, line);
        }
        let main = postconf_query(&conf, &["-n"]);
        let excerpt = snippet(&[kind]);
        let main_section: Vec<&str> = excerpt
            .lines()
            .skip_while(|l| !l.starts_with("# /etc/postfix/main.cf"))
            .skip(1)
            .take_while(|l| !l.starts_with("# /etc/postfix/master.cf") && !l.contains("Sendmail"))
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .collect();
        assert!(
            !main_section.is_empty(),
            "{kind}: no main.cf lines in:\n{excerpt}"
        );
        for l in &main_section {
            if l.starts_with("milter_") && l.contains("_macros") {
                continue; // for reference only, not set by the recipe
            }
            assert!(main.contains(l), "{kind}: main.cf lacks {l:?}:\n{main}");
        }
        if kind != "milter" {
            let services = postconf_query(&conf, &["-M", "mailkeep/unix", "127.0.0.1:10026/inet"]);
            assert!(services.contains("mailkeep"), "{kind}: {services}");
            assert!(services.contains("127.0.0.1:10026"), "{kind}: {services}");
            let params = postconf_query(&conf, &["-P"]);
            assert!(
                params.contains("127.0.0.1:10026/inet/receive_override_options = no_unknown_recipient_checks,no_header_body_checks,no_milters"),
                "{kind}: {params}"
            );
        }
        for line in snippet(&[kind, "--revert"]).lines() {
            postconf_in(&conf, line);
        }
        let after = (
            postconf_query(&conf, &["-n"]),
            postconf_query(&conf, &["-M"]),
            postconf_query(&conf, &["-P"]),
        );
        assert_eq!(
            before, after,
            "{kind}: --revert did not restore the configuration"
        );
    }
}
