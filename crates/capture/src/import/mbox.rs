//! Splitting an mbox into messages, sans-IO: bytes go in as they come (any
//! chunking), and a [`Sink`] hears where each message starts and ends and
//! gets its unquoted bytes.
//!
//! A message starts at a `From ` line at the start of the file or right
//! after an empty line (`\n` or `\r\n`); that empty line is the separator
//! written by every mbox writer (mailkeep's included), not message content,
//! and so is a final empty line at the end of the file. A `From ` line
//! *not* preceded by an empty line stays message content: writers that
//! quote (mboxrd, mboxo) never leave such a line, while non-quoting ones
//! (and a broken concatenation) do leave body lines starting `From `, so
//! splitting there would cut real messages apart. The one thing lost is a
//! message appended by a writer that forgot the empty line; it stays glued
//! to the message before it rather than being dropped.
//!
//! Memory stays constant whatever the input: ordinary lines are passed on
//! piece by piece, a run of `>` at a line start is counted, not buffered,
//! and only the first [`MAX_FROM_LINE`] bytes of a From_ line are kept.

use super::MboxFormat;

const FROM: &[u8] = b"From ";

/// From_ lines are kept up to this length, the rest is dropped: real ones
/// are well under 100 bytes, and only the sender and date are read from it.
pub(crate) const MAX_FROM_LINE: usize = 1000;

/// Receives the messages of an mbox.
pub(crate) trait Sink {
    /// A message starts; `from_line` is its From_ line without the newline
    /// (cut at [`MAX_FROM_LINE`]).
    fn start(&mut self, from_line: &[u8]);
    /// The next bytes of the current message, unquoted.
    fn data(&mut self, bytes: &[u8]);
    /// The current message is complete.
    fn end(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line, nothing of it seen yet.
    LineStart,
    /// A `\r` at the start of a line: maybe a CRLF empty line.
    Cr,
    /// `gt` times `>` then the first `from` bytes of `From ` at a line start.
    Quote { gt: u64, from: usize },
    /// Inside an ordinary line.
    Body,
    /// Inside a From_ line.
    FromLine,
}

/// The mbox state machine (see the module documentation).
#[derive(Debug)]
pub(crate) struct Splitter {
    format: MboxFormat,
    state: State,
    /// The last empty line seen, held back: it is the separator if a From_
    /// line follows, content otherwise.
    held_blank: Option<&'static [u8]>,
    /// A message has started (bytes before the first From_ line belong to
    /// no message and are dropped).
    open: bool,
    from_line: Vec<u8>,
}

impl Splitter {
    pub(crate) fn new(format: MboxFormat) -> Splitter {
        Splitter {
            format,
            state: State::LineStart,
            held_blank: None,
            open: false,
            from_line: Vec::new(),
        }
    }

    /// Consumes `input` and returns how much of it was used: all of it, or
    /// less right after a message ended ([`Sink::end`]), so the caller can
    /// hand that message on before feeding the rest.
    pub(crate) fn feed(&mut self, input: &[u8], sink: &mut impl Sink) -> usize {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Body => match find_newline(&input[i..]) {
                    Some(off) => {
                        self.emit(sink, &input[i..=i + off]);
                        i += off + 1;
                        self.state = State::LineStart;
                    }
                    None => {
                        self.emit(sink, &input[i..]);
                        i = input.len();
                    }
                },
                State::FromLine => {
                    let (line, used) = match find_newline(&input[i..]) {
                        Some(off) => (&input[i..i + off], Some(off + 1)),
                        None => (&input[i..], None),
                    };
                    let room = MAX_FROM_LINE.saturating_sub(self.from_line.len());
                    self.from_line
                        .extend_from_slice(&line[..line.len().min(room)]);
                    match used {
                        Some(n) => {
                            i += n;
                            if self.from_line.last() == Some(&b'\r') {
                                self.from_line.pop();
                            }
                            sink.start(&self.from_line);
                            self.from_line.clear();
                            self.state = State::LineStart;
                        }
                        None => i = input.len(),
                    }
                }
                State::LineStart => match input[i] {
                    b'\n' => {
                        i += 1;
                        self.blank(sink, b"\n");
                    }
                    b'\r' => {
                        i += 1;
                        self.state = State::Cr;
                    }
                    b'>' => {
                        i += 1;
                        self.state = State::Quote { gt: 1, from: 0 };
                    }
                    b'F' => {
                        i += 1;
                        self.state = State::Quote { gt: 0, from: 1 };
                    }
                    _ => {
                        self.release_blank(sink);
                        self.state = State::Body;
                    }
                },
                State::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = State::LineStart;
                        self.blank(sink, b"\r\n");
                    } else {
                        // A line that starts with a lone CR: ordinary text,
                        // the current byte is looked at again in Body.
                        self.release_blank(sink);
                        self.emit(sink, b"\r");
                        self.state = State::Body;
                    }
                }
                State::Quote { gt, from } => {
                    let b = input[i];
                    if from == 0 && b == b'>' {
                        self.state = State::Quote { gt: gt + 1, from };
                        i += 1;
                    } else if b == FROM[from] {
                        i += 1;
                        if from + 1 < FROM.len() {
                            self.state = State::Quote { gt, from: from + 1 };
                        } else if self.on_from(gt, sink) {
                            return i;
                        }
                    } else {
                        self.release_blank(sink);
                        self.emit_quote(sink, gt, from);
                        self.state = State::Body;
                    }
                }
            }
        }
        i
    }

    /// The end of the file: completes the last message. A trailing empty
    /// line is the final separator and is dropped.
    pub(crate) fn finish(&mut self, sink: &mut impl Sink) {
        match self.state {
            State::Cr => {
                self.release_blank(sink);
                self.emit(sink, b"\r");
            }
            State::Quote { gt, from } => {
                self.release_blank(sink);
                self.emit_quote(sink, gt, from);
            }
            State::FromLine => {
                // Cut off inside its From_ line: an empty message, which
                // the sink reports as such.
                sink.start(&self.from_line);
                self.from_line.clear();
            }
            State::LineStart | State::Body => {}
        }
        self.held_blank = None;
        self.state = State::LineStart;
        if self.open {
            self.open = false;
            sink.end();
        }
    }

    /// A full `>…>From ` (gt times `>`) at a line start. Returns true when
    /// it ended a message.
    fn on_from(&mut self, gt: u64, sink: &mut impl Sink) -> bool {
        if gt == 0 && (!self.open || self.held_blank.is_some()) {
            self.held_blank = None;
            let ended = self.open;
            if ended {
                sink.end();
            }
            self.open = true;
            self.from_line.clear();
            self.from_line.extend_from_slice(FROM);
            self.state = State::FromLine;
            return ended;
        }
        self.release_blank(sink);
        let keep = match self.format {
            MboxFormat::Rd => gt.saturating_sub(1),
            MboxFormat::O if gt == 1 => 0,
            MboxFormat::O => gt,
        };
        self.emit_quote(sink, keep, FROM.len());
        self.state = State::Body;
        false
    }

    fn blank(&mut self, sink: &mut impl Sink, eol: &'static [u8]) {
        if !self.open {
            return;
        }
        if let Some(previous) = self.held_blank.replace(eol) {
            sink.data(previous);
        }
    }

    fn release_blank(&mut self, sink: &mut impl Sink) {
        if let Some(b) = self.held_blank.take() {
            sink.data(b);
        }
    }

    fn emit(&self, sink: &mut impl Sink, bytes: &[u8]) {
        if self.open {
            sink.data(bytes);
        }
    }

    fn emit_quote(&self, sink: &mut impl Sink, gt: u64, from: usize) {
        const GT: [u8; 64] = [b'>'; 64];
        let mut left = gt;
        while left > 0 {
            let n = left.min(GT.len() as u64) as usize;
            self.emit(sink, &GT[..n]);
            left -= n as u64;
        }
        self.emit(sink, &FROM[..from]);
    }
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        messages: Vec<(Vec<u8>, Vec<u8>)>,
        open: Option<(Vec<u8>, Vec<u8>)>,
    }

    impl Sink for Collect {
        fn start(&mut self, from_line: &[u8]) {
            assert!(self.open.is_none(), "start without end");
            self.open = Some((from_line.to_vec(), Vec::new()));
        }
        fn data(&mut self, bytes: &[u8]) {
            self.open
                .as_mut()
                .expect("data outside a message")
                .1
                .extend(bytes);
        }
        fn end(&mut self) {
            self.messages
                .push(self.open.take().expect("end without start"));
        }
    }

    fn split_in_chunks(input: &[u8], chunk: usize, format: MboxFormat) -> Vec<(String, String)> {
        let mut s = Splitter::new(format);
        let mut sink = Collect::default();
        for c in input.chunks(chunk) {
            let mut used = 0;
            while used < c.len() {
                used += s.feed(&c[used..], &mut sink);
            }
        }
        s.finish(&mut sink);
        sink.messages
            .into_iter()
            .map(|(f, m)| (String::from_utf8(f).unwrap(), String::from_utf8(m).unwrap()))
            .collect()
    }

    fn check(input: &str, format: MboxFormat, want: &[(&str, &str)]) {
        for chunk in 1..=input.len().max(1) {
            let got = split_in_chunks(input.as_bytes(), chunk, format);
            let got: Vec<(&str, &str)> =
                got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            assert_eq!(got, want, "chunk size {chunk}");
        }
    }

    #[test]
    fn splits_at_from_after_empty_line_only() {
        check(
            "From a@x Sat Nov 21 22:54:14 2026\nA: 1\n\nbody\nFrom here, not a separator\n\n\
             From b@x Sat Nov 21 22:54:15 2026\r\nB: 2\n\nlast\n\n",
            MboxFormat::Rd,
            &[
                (
                    "From a@x Sat Nov 21 22:54:14 2026",
                    "A: 1\n\nbody\nFrom here, not a separator\n",
                ),
                ("From b@x Sat Nov 21 22:54:15 2026", "B: 2\n\nlast\n"),
            ],
        );
    }

    #[test]
    fn only_the_last_empty_line_is_the_separator() {
        check(
            "From a\r\nA: 1\r\n\r\nbody\r\n\r\n\nFrom b\nB: 2\n\n\n\n",
            MboxFormat::Rd,
            &[
                ("From a", "A: 1\r\n\r\nbody\r\n\r\n"),
                ("From b", "B: 2\n\n\n"),
            ],
        );
        // A CRLF empty line separates too.
        check(
            "From a\r\nA: 1\r\n\r\nFrom b\r\nB: 2\r\n",
            MboxFormat::Rd,
            &[("From a", "A: 1\r\n"), ("From b", "B: 2\r\n")],
        );
    }

    #[test]
    fn mboxrd_unquotes_one_level() {
        check(
            "From a\nX: 1\n\n>From x\n>>From y\n>>>From z\n>Fro\n> From\n>\n\r>From \n>From",
            MboxFormat::Rd,
            &[(
                "From a",
                "X: 1\n\nFrom x\n>From y\n>>From z\n>Fro\n> From\n>\n\r>From \n>From",
            )],
        );
    }

    #[test]
    fn mboxo_unquotes_only_single_gt() {
        check(
            "From a\nX: 1\n\n>From x\n>>From y\n>>>From z\n",
            MboxFormat::O,
            &[("From a", "X: 1\n\nFrom x\n>>From y\n>>>From z\n")],
        );
    }

    #[test]
    fn truncated_and_empty_messages() {
        // Ends inside a header line, inside a From_ line, with an empty message.
        check(
            "From a\n\nFrom b\nSubject: cut he",
            MboxFormat::Rd,
            &[("From a", ""), ("From b", "Subject: cut he")],
        );
        check(
            "From a\nX: 1\n\nFrom b",
            MboxFormat::Rd,
            &[("From a", "X: 1\n"), ("From b", "")],
        );
    }

    #[test]
    fn long_from_line_is_cut_and_gt_runs_are_counted() {
        let mut input = b"From ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend_from_slice(b"\nX: 1\n\n");
        input.extend(std::iter::repeat_n(b'>', 300));
        input.extend_from_slice(b"From q\n");
        let got = split_in_chunks(&input, 7, MboxFormat::Rd);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), MAX_FROM_LINE);
        assert_eq!(got[0].1, format!("X: 1\n\n{}From q\n", ">".repeat(299)));
    }
}
