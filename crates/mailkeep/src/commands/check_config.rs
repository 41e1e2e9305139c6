//! `mailkeep check-config`: load and validate, say where it is wrong.

use crate::config;
use crate::exit::{Exit, Failure};
use std::path::Path;

pub fn run(path: Option<&Path>) -> Result<Exit, Failure> {
    let settings = config::load(path).map_err(|e| Failure::new(Exit::CONFIG, e.to_string()))?;
    let rules = settings.archiver.rules().rules();
    println!("{}: OK, {} rule(s)", settings.source, rules.len());
    for (i, r) in rules.iter().enumerate() {
        println!("  {}. {}", i + 1, r.name());
    }
    Ok(Exit::OK)
}
