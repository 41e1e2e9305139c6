//! `mailkeep_query::parse` on any text a user (or, later, a web client)
//! can send.
//!
//! Invariants: a parsed query has at most `MAX_TERMS` terms and its tree
//! nests no deeper than the parenthesis limit allows, and printing it with
//! `Display` and parsing that again gives the same tree (the printed form
//! is what error messages and logs show, so it must mean the same thing);
//! when the printed query would exceed `MAX_QUERY_BYTES`, each term is
//! round-tripped on its own instead, and a term that alone prints longer
//! than the limit must give `TooLong`. An error's `position()` is a char
//! boundary inside the input (for `TooLong`: the limit, inside an input
//! longer than it), and its message is not empty.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_query::{parse, Expr, Query, QueryError, MAX_QUERY_BYTES, MAX_TERMS, MAX_TREE_DEPTH};

/// Parsing `printed` gives `want` back. Escaping can make the printed form
/// longer than the input (`\\` for a lone backslash in a phrase), so a query
/// near the limit may print to more than `MAX_QUERY_BYTES`; then `TooLong`
/// is the only acceptable answer.
fn round_trip(input: &str, printed: &str, want: &Query) {
    let again = parse(printed);
    if printed.len() > MAX_QUERY_BYTES {
        assert!(
            matches!(again, Err(QueryError::TooLong { .. })),
            "input {input:?} printed {printed:?}: {again:?}"
        );
    } else {
        assert_eq!(
            again.as_ref(),
            Ok(want),
            "input {input:?} printed {printed:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // A lossy front end turns bytes into text this way; it also keeps the
    // fuzzer from wasting runs on invalid UTF-8.
    let input = String::from_utf8_lossy(data);
    match parse(&input) {
        Ok(q) => {
            assert!(
                q.terms().len() <= MAX_TERMS,
                "{input:?}: {} terms",
                q.terms().len()
            );
            let depth = q.expr.as_ref().map_or(0, Expr::depth);
            assert!(depth <= MAX_TREE_DEPTH, "{input:?}: depth {depth}");
            let printed = q.to_string();
            if printed.len() <= MAX_QUERY_BYTES {
                round_trip(&input, &printed, &q);
            } else {
                for term in q.terms() {
                    let want = Query {
                        expr: Some(Expr::Term(term.clone())),
                    };
                    round_trip(&input, &term.to_string(), &want);
                }
            }
        }
        Err(e) => {
            let pos = e.position();
            if let QueryError::TooLong { len } = e {
                assert_eq!(len, input.len());
                assert!(input.len() > MAX_QUERY_BYTES);
                assert_eq!(pos, MAX_QUERY_BYTES);
            } else {
                assert!(pos < input.len(), "{input:?}: {e:?}");
                assert!(input.is_char_boundary(pos), "{input:?}: {e:?}");
            }
            assert!(!e.to_string().is_empty());
        }
    }
});
