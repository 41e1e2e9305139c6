//! Tests of the administrative subcommands (being written).
