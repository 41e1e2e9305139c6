//! Runs SQL against a store's catalog with the bundled SQLite (the system
//! `sqlite3` may be too old for contentless FTS5 tables): prints rows and
//! the time taken. `cargo run --release -p mailkeep-store --example sql -- CATALOG 'SQL'`

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, sql] = &args[..] else {
        eprintln!("usage: sql CATALOG SQL");
        std::process::exit(64);
    };
    let conn = rusqlite::Connection::open(db).expect("open");
    let t = std::time::Instant::now();
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n = stmt.column_count();
    let mut rows = stmt.query([]).expect("query");
    let mut count = 0;
    while let Some(r) = rows.next().expect("row") {
        count += 1;
        if count <= 20 {
            let cells: Vec<String> = (0..n)
                .map(|i| match r.get_ref(i).expect("cell") {
                    rusqlite::types::ValueRef::Null => "NULL".into(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(v) => String::from_utf8_lossy(v).into_owned(),
                    rusqlite::types::ValueRef::Blob(v) => format!("<{} bytes>", v.len()),
                })
                .collect();
            println!("{}", cells.join(" | "));
        }
    }
    eprintln!(
        "{count} rows in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
