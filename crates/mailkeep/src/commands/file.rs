//! `mailkeep file DIR [--into DEST] [--dry-run]`: file loose `.eml` files
//! into `YYYY/MM/DD/` (see `mailkeep_destinations::filer`).

use crate::cli::FileArgs;
use crate::exit::{Exit, Failure};
use mailkeep_destinations::filer::{self, DateSource, Filed};

pub fn run(args: FileArgs) -> Result<Exit, Failure> {
    let into = args.into.clone().unwrap_or_else(|| args.dir.clone());
    let moves = filer::plan(&args.dir, &into)
        .map_err(|e| Failure::new(Exit::IOERR, format!("{}: {e}", args.dir.display())))?;
    let mut failed = 0;
    for m in &moves {
        let by = match m.dated_by {
            DateSource::Header => "Date header",
            DateSource::Mtime => "file time",
        };
        if args.dry_run {
            println!(
                "would file {} -> {}/ ({by})",
                m.from.display(),
                m.dir.display()
            );
            continue;
        }
        match filer::apply(m) {
            Ok(Filed::Moved(to)) => {
                println!("filed {} -> {} ({by})", m.from.display(), to.display())
            }
            Ok(Filed::Duplicate(at)) => println!(
                "removed {}: identical to {}",
                m.from.display(),
                at.display()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("mailkeep: {}: {e}", m.from.display());
            }
        }
    }
    println!(
        "{} file(s) {}{}",
        moves.len(),
        if args.dry_run { "to file" } else { "processed" },
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 { Exit::IOERR } else { Exit::OK })
}
