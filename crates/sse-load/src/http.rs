//! Just enough HTTP/1.1 to read responses fast: the response head (status, framing headers),
//! then a body that is chunked, length-delimited or close-delimited, decoded without copying.

use anyhow::bail;

/// Longest response head accepted; SSE and publish responses have short heads.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// The body runs until the server closes the connection.
    Close,
}

/// The parts of a response head the load tester acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)` while it is incomplete; otherwise the
/// head and the number of bytes it took (the body starts there).
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(Head, usize)>> {
    let Some(end) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD_BYTES {
            bail!("response head longer than {MAX_HEAD_BYTES} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| anyhow::anyhow!("non-UTF-8 head"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let http10 = version == "HTTP/1.0";
    let status: u16 = match parts.next().and_then(|s| s.parse().ok()) {
        Some(code) => code,
        None => bail!("bad status line: {status_line:?}"),
    };
    let mut chunked = false;
    let mut length = None;
    let mut close = http10;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            bail!("bad header line: {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) => length = Some(n),
                Err(_) => bail!("bad content-length: {value:?}"),
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let no_body = status / 100 == 1 || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::Close
    };
    Ok(Some((
        Head {
            status,
            framing,
            close,
        },
        end + 4,
    )))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n")
}

/// Where a chunked body's decoder stands between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; `ext` once past `;` (extensions are skipped).
    Size {
        value: u64,
        digits: bool,
        ext: bool,
    },
    /// Saw the CR ending the size line.
    SizeLf {
        value: u64,
    },
    Data(u64),
    /// Expecting the CRLF after a chunk's data; `cr` once CR was seen.
    DataEnd {
        cr: bool,
    },
    /// After the last (zero) chunk: trailer lines, up to an empty line.
    Trailer {
        line_start: bool,
        cr: bool,
    },
    Done,
}

/// Decodes a response body incrementally, handing out slices of the input that are body bytes.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Some for length- and close-delimited bodies: the bytes still expected (u64::MAX = close).
    plain: Option<u64>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let (state, plain) = match framing {
            Framing::Chunked => (
                State::Size {
                    value: 0,
                    digits: false,
                    ext: false,
                },
                None,
            ),
            Framing::Length(0) => (State::Done, Some(0)),
            Framing::Length(n) => (State::Data(0), Some(n)),
            Framing::Close => (State::Data(0), Some(u64::MAX)),
        };
        Self { state, plain }
    }

    /// The whole body has been read (never true for a close-delimited body).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds bytes read from the socket; `out` receives each run of body bytes, in order.
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        mut out: impl FnMut(&'a [u8]),
    ) -> anyhow::Result<()> {
        if let Some(left) = &mut self.plain {
            if *left == u64::MAX {
                if !input.is_empty() {
                    out(input);
                }
                return Ok(());
            }
            let take = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            if take > 0 {
                out(&input[..take]);
            }
            *left -= take as u64;
            if *left == 0 {
                self.state = State::Done;
            }
            return Ok(());
        }
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            self.state = match self.state {
                State::Size { value, digits, ext } => {
                    i += 1;
                    match byte {
                        b'\r' if digits => State::SizeLf { value },
                        b'\n' if digits => after_size(value),
                        _ if ext => State::Size { value, digits, ext },
                        b';' if digits => State::Size {
                            value,
                            digits,
                            ext: true,
                        },
                        b' ' | b'\t' => State::Size { value, digits, ext },
                        _ => {
                            let Some(d) = (byte as char).to_digit(16) else {
                                bail!("bad chunk size byte {byte:#04x}");
                            };
                            let Some(value) = value.checked_mul(16).map(|v| v + u64::from(d))
                            else {
                                bail!("chunk size overflows");
                            };
                            State::Size {
                                value,
                                digits: true,
                                ext,
                            }
                        }
                    }
                }
                State::SizeLf { value } => {
                    i += 1;
                    if byte != b'\n' {
                        bail!("chunk size line without LF");
                    }
                    after_size(value)
                }
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    if left == 0 {
                        State::DataEnd { cr: false }
                    } else {
                        State::Data(left)
                    }
                }
                State::DataEnd { cr } => {
                    i += 1;
                    match byte {
                        b'\r' if !cr => State::DataEnd { cr: true },
                        b'\n' => State::Size {
                            value: 0,
                            digits: false,
                            ext: false,
                        },
                        _ => bail!("chunk data not followed by CRLF"),
                    }
                }
                State::Trailer { line_start, cr } => {
                    i += 1;
                    match byte {
                        b'\n' if line_start => State::Done,
                        b'\r' if line_start => State::Trailer {
                            line_start,
                            cr: true,
                        },
                        b'\n' => State::Trailer {
                            line_start: true,
                            cr: false,
                        },
                        _ if cr => bail!("bad trailer"),
                        _ => State::Trailer {
                            line_start: false,
                            cr: false,
                        },
                    }
                }
                State::Done => return Ok(()),
            };
        }
        Ok(())
    }
}

fn after_size(value: u64) -> State {
    if value == 0 {
        State::Trailer {
            line_start: true,
            cr: false,
        }
    } else {
        State::Data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(framing: Framing, wire: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        for part in wire.chunks(piece) {
            decoder.feed(part, |b| body.extend_from_slice(b)).unwrap();
        }
        (body, decoder.is_done())
    }

    /// A chunked SSE head is recognised and the body offset is right.
    #[test]
    fn chunked_head_parses() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n";
        let (head, used) = parse_head(wire).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.close);
        assert_eq!(&wire[used..], b"7\r\n");
        assert!(parse_head(&wire[..20]).unwrap().is_none());
    }

    /// Length, close-delimited and bodiless responses get the right framing.
    #[test]
    fn framings_follow_the_headers() {
        let head = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap().0;
        assert_eq!(
            head("HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n").framing,
            Framing::Length(12)
        );
        let close = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(close.framing, Framing::Close);
        assert!(close.close);
        assert!(head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").close);
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert!(parse_head(b"SSH-2.0 hello\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    /// Chunked bodies decode the same whatever the read boundaries, extensions and trailers.
    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nC\r\nworld\ndata:x\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in 1..wire.len() {
            let (body, done) = decode_in_pieces(Framing::Chunked, wire, piece);
            assert_eq!(body, b"hello world\ndata:x", "piece {piece}");
            assert!(done);
        }
        let (_, done) = decode_in_pieces(Framing::Chunked, b"3\r\nabc\r\n", 2);
        assert!(!done);
    }

    /// Malformed chunk framing is an error, not a guess.
    #[test]
    fn bad_chunks_are_errors() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX", b"FFFFFFFFFFFFFFFFF\r\n"] {
            let mut decoder = BodyDecoder::new(Framing::Chunked);
            assert!(decoder.feed(wire, |_| {}).is_err(), "{wire:?}");
        }
    }

    /// Length-delimited bodies stop at their length; close-delimited ones pass everything.
    #[test]
    fn plain_bodies_pass_through() {
        let (body, done) = decode_in_pieces(Framing::Length(4), b"abcdef", 3);
        assert_eq!((body.as_slice(), done), (&b"abcd"[..], true));
        let (body, done) = decode_in_pieces(Framing::Close, b"abcdef", 4);
        assert_eq!((body.as_slice(), done), (&b"abcdef"[..], false));
    }
}
