//! Prints what search would see of each message file named on the command
//! line: `cargo run -p mailkeep-index --example dump -- FILE...`.

fn main() {
    let limits = mailkeep_index::Limits::default();
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(raw) => println!("== {path}\n{:#?}", mailkeep_index::extract(&raw, &limits)),
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
