//! Reads an SSE body as it arrives and pulls out only what the tester needs: the `seq`, `ts` and
//! `ack` numbers inside each `data:` line. Comments, `id:`, `event:` and other lines are skipped.

/// What one `data:` line held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// A payload from this tester's publisher: its sequence number, send time (µs), and the
    /// publisher's acknowledged prefix when it was sent (0 if the template has no `{ack}`).
    Stamped { seq: u64, ts_us: u64, ack: u64 },
    /// A data line without `"seq":` and `"ts":` numbers (someone else's event).
    Foreign,
}

/// Longest line kept across reads; longer lines are skipped (a stamped payload is far shorter).
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits an SSE body into lines across read boundaries. Only a line cut by a read boundary is
/// copied (into `partial`); whole lines are scanned in place.
#[derive(Debug, Default)]
pub struct LineScanner {
    partial: Vec<u8>,
    /// The last byte fed was CR: a following LF belongs to the same line end.
    after_cr: bool,
    /// The current partial line grew past MAX_LINE_BYTES and is being skipped.
    skipping: bool,
}

impl LineScanner {
    /// Feeds body bytes; `out` gets each complete `data:` line's content.
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(Data)) {
        if self.after_cr && input.first() == Some(&b'\n') {
            input = &input[1..];
        }
        self.after_cr = false;
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let line = &input[..end];
            if self.partial.is_empty() && !self.skipping {
                scan_line(line, out);
            } else {
                if !self.skipping {
                    self.partial.extend_from_slice(line);
                    scan_line(&self.partial, out);
                }
                self.partial.clear();
                self.skipping = false;
            }
            let mut next = end + 1;
            if input[end] == b'\r' {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            input = &input[next..];
        }
        if !input.is_empty() && !self.skipping {
            if self.partial.len() + input.len() > MAX_LINE_BYTES {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(input);
            }
        }
    }
}

/// Hands out a `data:` line's stamp; other lines are ignored.
fn scan_line(line: &[u8], out: &mut impl FnMut(Data)) {
    if let Some(value) = line.strip_prefix(b"data:") {
        out(extract(value));
    }
}

/// Finds `"seq":N`, `"ts":N` and `"ack":N` in a data value. The default payload starts with
/// them, so the common case is a prefix check; other templates are searched.
pub fn extract(value: &[u8]) -> Data {
    let value = value.strip_prefix(b" ").unwrap_or(value);
    if let Some(rest) = value.strip_prefix(b"{\"seq\":")
        && let Some((seq, rest)) = number(rest)
        && let Some(rest) = rest.strip_prefix(b",\"ts\":")
        && let Some((ts_us, rest)) = number(rest)
        && let Some(rest) = rest.strip_prefix(b",\"ack\":")
        && let Some((ack, _)) = number(rest)
    {
        return Data::Stamped { seq, ts_us, ack };
    }
    let field = |key: &[u8]| {
        memchr::memmem::find(value, key).and_then(|at| number(&value[at + key.len()..]))
    };
    match (field(b"\"seq\":"), field(b"\"ts\":")) {
        (Some((seq, _)), Some((ts_us, _))) => Data::Stamped {
            seq,
            ts_us,
            ack: field(b"\"ack\":").map_or(0, |(ack, _)| ack),
        },
        _ => Data::Foreign,
    }
}

/// A run of ASCII digits at the start of `s` (at most 19) and what follows it.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take(20).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = s[..digits]
        .iter()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Some((value, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(wire: &[u8], piece: usize) -> Vec<Data> {
        let mut scanner = LineScanner::default();
        let mut found = Vec::new();
        for part in wire.chunks(piece) {
            scanner.feed(part, &mut |d| found.push(d));
        }
        found
    }

    /// Stamped data lines are found whatever the read boundaries and line endings; comments and
    /// other fields are skipped.
    #[test]
    fn data_lines_are_found_across_any_split() {
        let wire = b": connected\n\nid: 1\ndata: {\"seq\":7,\"ts\":1700000000000001,\"ack\":6,\"pad\":\"xx\"}\n\n: keep-alive\r\n\r\nid: 2\r\nevent: x\r\ndata: hello\r\n\r\ndata:{\"a\":1,\"ts\":5,\"seq\":9}\r\r";
        let expected = vec![
            Data::Stamped {
                seq: 7,
                ts_us: 1_700_000_000_000_001,
                ack: 6,
            },
            Data::Foreign,
            Data::Stamped {
                seq: 9,
                ts_us: 5,
                ack: 0,
            },
        ];
        for piece in 1..=wire.len() {
            assert_eq!(scan_in_pieces(wire, piece), expected, "piece {piece}");
        }
    }

    /// A CRLF split between two reads ends one line, not two.
    #[test]
    fn crlf_split_over_reads_is_one_line_end() {
        let mut scanner = LineScanner::default();
        let mut found = Vec::new();
        scanner.feed(b"data: {\"seq\":1,\"ts\":2}\r", &mut |d| found.push(d));
        scanner.feed(b"\ndata: {\"seq\":2,\"ts\":3}\n", &mut |d| found.push(d));
        assert_eq!(found.len(), 2);
    }

    /// Values without both numbers, or with absurd ones, are foreign.
    #[test]
    fn malformed_stamps_are_foreign() {
        assert_eq!(extract(b" {\"seq\":,\"ts\":1}"), Data::Foreign);
        assert_eq!(extract(b"{\"seq\":1}"), Data::Foreign);
        assert_eq!(
            extract(b"{\"seq\":123456789012345678901,\"ts\":1}"),
            Data::Foreign
        );
    }

    /// Over-long lines are skipped without growing the buffer without bound.
    #[test]
    fn overlong_lines_are_skipped() {
        let mut scanner = LineScanner::default();
        let mut found = Vec::new();
        let junk = vec![b'a'; 1000];
        for _ in 0..100 {
            scanner.feed(&junk, &mut |d| found.push(d));
        }
        assert!(scanner.partial.capacity() <= 2 * MAX_LINE_BYTES);
        scanner.feed(b"\ndata: {\"seq\":3,\"ts\":4}\n", &mut |d| found.push(d));
        assert_eq!(
            found,
            vec![Data::Stamped {
                seq: 3,
                ts_us: 4,
                ack: 0
            }]
        );
    }
}
