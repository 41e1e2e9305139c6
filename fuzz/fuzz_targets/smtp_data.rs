//! SMTP DATA both ways: `mailkeep_smtp::DataEncoder` (what the forward
//! destination and the filter's relay send) and the filter's `DataDecoder`
//! (what a client sends us).
//!
//! Input: one byte choosing the chunk size, then the message.
//!
//! Invariants:
//! - `decode(encode(x))` is `x` with every bare LF turned into CRLF (the
//!   encoder's normalisation; CR LF is kept as it is) and, if `x` does not
//!   end with LF, a CRLF appended (the encoder ends the last line). The
//!   decoder reports the end exactly at the encoder's terminating `.` line,
//!   so pipelined bytes after it are not eaten. Both hold whatever the
//!   chunking.
//! - The raw input fed to the decoder never panics, output is never longer
//!   than the input consumed, and `Done(n)` has `n <= input.len()`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailkeep_capture::filter::data::{DataDecoder, Feed};
use mailkeep_smtp::DataEncoder;
use mailkeep_fuzz::crlf_normalised;

/// Decodes `input` in `chunk`-byte pieces: the message and, if the end was
/// found, how many input bytes it took.
fn decode(input: &[u8], chunk: usize) -> (Vec<u8>, Option<usize>) {
    let mut d = DataDecoder::default();
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in input.chunks(chunk) {
        if let Feed::Done(n) = d.feed(piece, &mut out) {
            assert!(n >= 1 && n <= piece.len());
            return (out, Some(offset + n));
        }
        offset += piece.len();
    }
    (out, None)
}

fn encode(x: &[u8], chunk: usize) -> Vec<u8> {
    let mut e = DataEncoder::default();
    let mut out = Vec::new();
    for piece in x.chunks(chunk) {
        e.write(piece, &mut out).unwrap();
    }
    e.finish(&mut out).unwrap();
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, x)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(c % 16) + 1;

    // Round trip, with the next pipelined command behind the message.
    let mut wire = encode(x, chunk);
    assert_eq!(
        wire,
        encode(x, x.len().max(1)),
        "encoding depends on chunking"
    );
    let end = wire.len();
    wire.extend_from_slice(b"QUIT\r\n");
    let (msg, done) = decode(&wire, chunk);
    assert_eq!(done, Some(end), "end of DATA misplaced");
    assert_eq!(msg, crlf_normalised(x));

    // Anything at all.
    let (out, done) = decode(x, chunk);
    let used = done.unwrap_or(x.len());
    assert!(used <= x.len());
    assert!(out.len() <= used, "{} bytes out of {used}", out.len());
    let (whole, whole_done) = decode(x, x.len().max(1));
    assert_eq!(
        (&whole, whole_done),
        (&out, done),
        "decoding depends on chunking"
    );
});
