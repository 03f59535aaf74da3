//! Fuzzes the relay's client-stream scanner (`ClientScanner`), which sees every byte a client
//! sends after login, split however TCP happens to split it.
//!
//! Input layout (kept simple so seeds can be written by hand):
//!
//! ```text
//! byte 0        flags: bits 0-3 = k, the number of schedule bytes (0-15)
//!                      bit 4    = audit off (`ClientScanner::new(false)`)
//! bytes 1..=k   chunk schedule, used cyclically; for each byte b:
//!                      chunk size = (b & 0x3f) + 1          (1-64 bytes)
//!                      repeat     = [1, 2, 64, 1024][b >> 6] (the chunk is fed that many times)
//!               with k = 0 the whole stream is fed in one call
//! the rest      the client byte stream
//! ```
//!
//! Repeating a chunk lets a small input build a statement past the 64 KiB audit cap; the bytes
//! actually fed are capped at 72 KiB per run: enough to cross the cap, and cheap enough to hash.
//!
//! Checks, beyond "no panic":
//! * the events and the error are the same as when the same bytes are fed in one call
//!   (chunking must not matter), and the same as a whole-message reference model built on
//!   `Statement::from_text`;
//! * each `Statement`: `statement.len() <= 64 KiB` and `statement_length >= statement.len()`,
//!   `truncated == (statement_length > 64 KiB)`, a 64-hex-digit SHA-256, `prepared_name` only for
//!   `parse` and at most 1024 characters.
//!
//! `statement` is lossy UTF-8 capped at 64 KiB of bytes; `statement_length` (raw bytes) bounds its
//! character count. See docs/fuzzing.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::audit::{MAX_STATEMENT, Statement};
use portcullis::proxy::postgres::codec::{CodecError, MAX_MESSAGE_LEN};
use portcullis::proxy::postgres::scanner::{ClientEvent, ClientScanner};

const MAX_FED: usize = 72 * 1024;
const REPEATS: [usize; 4] = [1, 2, 64, 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let k = usize::from(flags & 0x0f).min(rest.len());
    let capture = flags & 0x10 == 0;
    let (schedule, stream) = rest.split_at(k);

    // Feed in chunks, as the relay does, stopping at the first error (the relay ends the session).
    let mut scanner = ClientScanner::new(capture);
    let mut events = Vec::new();
    let mut fed = Vec::new();
    let mut result = Ok(());
    if schedule.is_empty() {
        result = scanner.feed(stream, &mut events);
        fed.extend_from_slice(stream);
    } else {
        let mut pos = 0;
        'feed: for &b in schedule.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let size = usize::from(b & 0x3f) + 1;
            let chunk = &stream[pos..(pos + size).min(stream.len())];
            pos += chunk.len();
            for _ in 0..REPEATS[usize::from(b >> 6)] {
                if fed.len() + chunk.len() > MAX_FED {
                    break 'feed;
                }
                fed.extend_from_slice(chunk);
                result = scanner.feed(chunk, &mut events);
                if result.is_err() {
                    break 'feed;
                }
            }
        }
    }

    // Chunking must not matter.
    let mut whole_events = Vec::new();
    let whole_result = ClientScanner::new(capture).feed(&fed, &mut whole_events);
    assert_eq!(result, whole_result, "chunked vs one-shot result");
    assert_eq!(events, whole_events, "chunked vs one-shot events");

    // Nor may the streaming capture differ from decoding whole messages.
    let (model_events, model_result) = model(&fed, capture);
    assert_eq!(result, model_result, "scanner vs model result");
    assert_eq!(events, model_events, "scanner vs model events");

    for event in &events {
        if let ClientEvent::Statement(s) = event {
            assert!(capture, "a statement was reported with audit off");
            check_statement(s);
        }
    }
});

fn check_statement(s: &Statement) {
    // `statement` is UTF-8 (invalid bytes become U+FFFD) capped at 64 KiB of bytes;
    // `statement_length` counts the raw bytes, so it bounds the number of characters.
    assert!(s.statement.len() <= MAX_STATEMENT, "statement of {} bytes exceeds the 64 KiB cap", s.statement.len());
    let chars = s.statement.chars().count();
    assert!(chars <= s.statement_length, "{chars} chars from {} bytes", s.statement_length);
    assert_eq!(s.truncated, s.statement_length > MAX_STATEMENT);
    assert_eq!(s.statement_sha256.len(), 64);
    assert!(s.statement_sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    match s.kind {
        "query" => assert!(s.prepared_name.is_none()),
        "parse" => assert!(s.prepared_name.as_ref().is_some_and(|n| n.chars().count() <= 1024)),
        other => panic!("unexpected statement kind {other:?}"),
    }
}

/// A reference scanner that works on whole messages: what the streaming scanner must report.
fn model(mut rest: &[u8], capture: bool) -> (Vec<ClientEvent>, Result<(), CodecError>) {
    let mut events = Vec::new();
    while rest.len() >= 5 {
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 || (len as usize - 4) > MAX_MESSAGE_LEN {
            return (events, Err(CodecError::BadLength(i64::from(len))));
        }
        if tag == b'X' {
            events.push(ClientEvent::Terminate);
        }
        let body_len = len as usize - 4;
        let Some(body) = rest.get(5..5 + body_len) else { break };
        rest = &rest[5 + body_len..];
        if !capture {
            continue;
        }
        match tag {
            b'Q' => events.push(ClientEvent::Statement(Statement::from_text("query", until_nul(body), None))),
            b'P' => {
                let name = until_nul(body);
                let text = body.get(name.len() + 1..).map(until_nul).unwrap_or_default();
                let shown_name = portcullis::proxy::audit::shown_text(name, 1024);
                events.push(ClientEvent::Statement(Statement::from_text("parse", text, Some(shown_name))));
            }
            _ => {}
        }
    }
    (events, Ok(()))
}

fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}
