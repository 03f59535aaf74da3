//! Finds message boundaries in the client's byte stream during the relay, without buffering
//! whole messages, and reports each statement (`Query`, `Parse`) for the audit trail.

use super::codec::{CodecError, MAX_MESSAGE_LEN};
use crate::proxy::audit::{Statement, StatementCapture, shown_text};

/// What the scanner saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A statement was sent (simple `Query` or extended `Parse`).
    Statement(Statement),
    /// The client said goodbye (`Terminate`).
    Terminate,
}

/// Scans the frontend message stream. Feed it every byte in order.
#[derive(Debug)]
pub struct ClientScanner {
    state: State,
    capture_statements: bool,
}

#[derive(Debug)]
enum State {
    Header { buf: [u8; 5], have: usize },
    Body { tag: u8, remaining: usize, capture: Option<Capture> },
}

/// Prepared statement names are shown up to this many bytes.
const MAX_NAME: usize = 1024;
/// Bytes of a name kept: one more than shown, so a character cut at the limit is seen as cut
/// (and dropped, as for statements) rather than shown as a replacement character.
const KEPT_NAME: usize = MAX_NAME + 1;

#[derive(Debug)]
struct Capture {
    kind: &'static str,
    /// For `Parse`: the statement name collected so far, until its NUL.
    name: Option<Vec<u8>>,
    in_statement: bool,
    done: bool,
    text: StatementCapture,
}

impl Capture {
    fn new(tag: u8) -> Option<Capture> {
        let (kind, name) = match tag {
            b'Q' => ("query", None),
            b'P' => ("parse", Some(Vec::new())),
            _ => return None,
        };
        Some(Capture { kind, in_statement: name.is_none(), name, done: false, text: StatementCapture::default() })
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done {
            if !self.in_statement {
                let name = self.name.get_or_insert_with(Vec::new);
                match data.iter().position(|&b| b == 0) {
                    Some(i) => {
                        if name.len() < KEPT_NAME {
                            name.extend_from_slice(&data[..i.min(KEPT_NAME - name.len())]);
                        }
                        data = &data[i + 1..];
                        self.in_statement = true;
                    }
                    None => {
                        if name.len() < KEPT_NAME {
                            name.extend_from_slice(&data[..data.len().min(KEPT_NAME - name.len())]);
                        }
                        return;
                    }
                }
                continue;
            }
            let (part, ends) = match data.iter().position(|&b| b == 0) {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            self.text.push(part);
            self.done = ends;
            data = &data[part.len()..];
        }
    }

    fn finish(self) -> Statement {
        let prepared_name = self.name.map(|n| shown_text(&n, MAX_NAME));
        self.text.finish(self.kind, prepared_name)
    }
}

impl ClientScanner {
    /// A scanner at a message boundary. With `capture_statements` false, statements are not
    /// reported (the AccessRole turned query audit off).
    pub fn new(capture_statements: bool) -> Self {
        Self { state: State::Header { buf: [0; 5], have: 0 }, capture_statements }
    }

    /// Consumes `data`, pushing what it completes onto `events`.
    pub fn feed(&mut self, mut data: &[u8], events: &mut Vec<ClientEvent>) -> Result<(), CodecError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header { buf, have } => {
                    let n = (5 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == 5 {
                        let tag = buf[0];
                        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                        if len < 4 || (len as usize - 4) > MAX_MESSAGE_LEN {
                            return Err(CodecError::BadLength(i64::from(len)));
                        }
                        let capture = if self.capture_statements { Capture::new(tag) } else { None };
                        if tag == b'X' {
                            events.push(ClientEvent::Terminate);
                        }
                        self.state = State::Body { tag, remaining: len as usize - 4, capture };
                        self.finish_if_empty(events);
                    }
                }
                State::Body { remaining, capture, .. } => {
                    let n = (*remaining).min(data.len());
                    if let Some(c) = capture.as_mut() {
                        c.feed(&data[..n]);
                    }
                    *remaining -= n;
                    data = &data[n..];
                    self.finish_if_empty(events);
                }
            }
        }
        Ok(())
    }

    fn finish_if_empty(&mut self, events: &mut Vec<ClientEvent>) {
        if let State::Body { remaining: 0, .. } = self.state {
            let previous = std::mem::replace(&mut self.state, State::Header { buf: [0; 5], have: 0 });
            if let State::Body { capture: Some(c), tag, .. } = previous {
                let _ = tag;
                events.push(ClientEvent::Statement(c.finish()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::audit::MAX_STATEMENT;
    use crate::proxy::postgres::codec::encode_message;
    use sha2::{Digest, Sha256};

    fn parse_msg(name: &str, query: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(query.as_bytes());
        body.push(0);
        body.extend_from_slice(&0u16.to_be_bytes());
        encode_message(b'P', &body).to_vec()
    }

    fn scan_in_chunks(stream: &[u8], chunk: usize) -> Vec<ClientEvent> {
        let mut scanner = ClientScanner::new(true);
        let mut events = Vec::new();
        for part in stream.chunks(chunk) {
            scanner.feed(part, &mut events).unwrap();
        }
        events
    }

    #[test]
    fn statements_are_found_whatever_the_chunking() {
        let mut stream = encode_message(b'Q', b"select 1\0").to_vec();
        stream.extend(parse_msg("s1", "select $1::int"));
        stream.extend(encode_message(b'B', b"\0s1\0\0\0\0\0\0\0").to_vec());
        stream.extend(encode_message(b'S', b"").to_vec());
        stream.extend(encode_message(b'X', b"").to_vec());
        for chunk in [1, 2, 3, 7, 1000] {
            let events = scan_in_chunks(&stream, chunk);
            assert_eq!(events.len(), 3, "chunk {chunk}: {events:?}");
            let ClientEvent::Statement(q) = &events[0] else { panic!() };
            assert_eq!((q.kind, q.statement.as_str()), ("query", "select 1"));
            let ClientEvent::Statement(p) = &events[1] else { panic!() };
            assert_eq!((p.kind, p.statement.as_str(), p.prepared_name.as_deref()), ("parse", "select $1::int", Some("s1")));
            assert_eq!(events[2], ClientEvent::Terminate);
        }
    }

    #[test]
    fn a_character_cut_at_the_name_limit_is_dropped_not_replaced() {
        // 1023 bytes, then a 2-byte character across the 1024-byte limit (found by pg_client_stream).
        let name = format!("{}é{}", "n".repeat(MAX_NAME - 1), "n".repeat(300));
        for chunk in [1, 7, 5000] {
            let events = scan_in_chunks(&parse_msg(&name, "select 1"), chunk);
            let ClientEvent::Statement(p) = &events[0] else { panic!() };
            assert_eq!(p.prepared_name.as_deref(), Some("n".repeat(MAX_NAME - 1).as_str()), "chunk {chunk}");
        }
        let exact = "n".repeat(MAX_NAME);
        let events = scan_in_chunks(&parse_msg(&exact, "select 1"), 100);
        let ClientEvent::Statement(p) = &events[0] else { panic!() };
        assert_eq!(p.prepared_name.as_deref(), Some(exact.as_str()), "a name of exactly the limit is whole");
    }

    #[test]
    fn huge_statement_is_truncated_but_hashed_whole() {
        let text = "x".repeat(MAX_STATEMENT * 2);
        let mut body = text.clone().into_bytes();
        body.push(0);
        let events = scan_in_chunks(&encode_message(b'Q', &body), 4096);
        let ClientEvent::Statement(s) = &events[0] else { panic!() };
        assert!(s.truncated);
        assert_eq!(s.statement_length, text.len());
        assert_eq!(s.statement.len(), MAX_STATEMENT);
        assert_eq!(s.statement_sha256, hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[test]
    fn lying_length_is_a_protocol_error() {
        let mut scanner = ClientScanner::new(true);
        let mut events = Vec::new();
        assert!(scanner.feed(&[b'Q', 0, 0, 0, 2], &mut events).is_err());
        let mut scanner = ClientScanner::new(true);
        assert!(scanner.feed(&[b'Q', 0x7f, 0xff, 0xff, 0xff], &mut events).is_err());
    }

    #[test]
    fn audit_off_reports_no_statements() {
        let mut scanner = ClientScanner::new(false);
        let mut events = Vec::new();
        scanner.feed(&encode_message(b'Q', b"select 1\0"), &mut events).unwrap();
        assert!(events.is_empty());
    }
}
