//! Fuzzes the DocumentDB engine's message handling the way the relay drives it: a client byte
//! stream goes to `mongodb::filter::CommandFilter` (whole messages are read, parsed, checked and
//! forwarded, answered or refused), cut into chunks whose sizes come from the input's first
//! byte. The same bytes also go to the codec directly (`Header::parse`, `parse`,
//! `reply_document`).
//!
//! Beyond "no panic": feeding in chunks gives exactly what feeding in one call gives; every
//! message forwarded to the database and every reply to the client is itself a well-formed
//! message whose header length is its size; replies carry an error document with a code; and
//! every message the codec accepts re-encodes to one that parses and re-encodes to the same bytes.
//! And what is forwarded is exactly what was authorized: every forwarded message parses
//! unambiguously (no field twice, no `$db` in another case), and its `$db` is one the check
//! allows unless the command is handshake or housekeeping; commitTransaction/abortTransaction
//! go on only on `admin`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::audit::SessionFields;
use portcullis::proxy::mongodb::codec::{self, HEADER, Header, Message};
use portcullis::proxy::mongodb::filter::{CommandFilter, DatabaseCheck, is_unchecked};
use portcullis::proxy::relay::{ClientFilter, Step};

/// What a run produced: forwarded messages, replies, audited (command, refused?), or the error.
type Outcome = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(String, bool)>, Option<String>);

fn run(stream: &[u8], chunk: usize) -> Outcome {
    let check: DatabaseCheck = Box::new(|_, db| if db == "hr" { Err("not in dbNames".into()) } else { Ok(()) });
    let mut filter = CommandFilter::new(true, check);
    let fields = SessionFields::default();
    let (mut up, mut replies, mut audits) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps = Vec::new();
    for part in stream.chunks(chunk.max(1)) {
        let result = filter.feed(part, &fields, &mut steps);
        for step in steps.drain(..) {
            match step {
                Step::ForwardOwned(b) => up.push(b),
                Step::Forward(r) => up.push(part[r].to_vec()),
                Step::Reply(b) => replies.push(b),
                Step::AuditCommand { command, error } => audits.push((command.command, error.is_some())),
                _ => {}
            }
        }
        if let Err(e) = result {
            return (up, replies, audits, Some(e.to_string()));
        }
    }
    (up, replies, audits, None)
}

fn well_formed(message: &[u8]) -> Option<(Header, Vec<u8>)> {
    let header = Header::parse(message.get(..HEADER)?.try_into().ok()?).ok()?;
    assert_eq!(header.length, message.len(), "a message's header length is its size");
    Some((header, message[HEADER..].to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&schedule, stream)) = data.split_first() else { return };
    let whole = run(stream, stream.len().max(1));
    let chunked = run(stream, usize::from(schedule % 64) + 1);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    for message in &whole.0 {
        let (header, body) = well_formed(message).expect("a forwarded message parses");
        let parsed = codec::parse(&header, &body).expect("a forwarded message is valid and unambiguous");
        let command = parsed.command().unwrap_or("");
        if parsed.database() == Some("hr") {
            assert!(is_unchecked(command), "a {command} on the denied database was forwarded");
        }
        if matches!(command, "commitTransaction" | "abortTransaction") {
            assert_eq!(parsed.database(), Some("admin"), "a transaction end off admin was forwarded");
        }
    }
    for reply in &whole.1 {
        let (header, body) = well_formed(reply).expect("a reply parses");
        let doc = codec::reply_document(&header, &body).expect("a reply has a document");
        assert!(doc.get_i32("code").is_ok(), "a reply is an error document: {doc}");
    }

    if let Some(head) = stream.get(..HEADER) {
        if let Ok(header) = Header::parse(head.try_into().unwrap()) {
            assert!((17..=codec::MAX_MESSAGE).contains(&header.length));
            if let Some(body) = stream.get(HEADER..header.length) {
                let _ = codec::reply_document(&header, body);
                if let Ok(message) = codec::parse(&header, body) {
                    let again = codec::encode(header.request_id, &message);
                    let h = Header::parse(again[..HEADER].try_into().unwrap()).unwrap();
                    let back: Message = codec::parse(&h, &again[HEADER..]).expect("re-encoded message parses");
                    // Compared as bytes: a NaN double is not equal to itself.
                    assert_eq!(codec::encode(header.request_id, &back), again, "re-encoding is stable");
                }
            }
        }
    }
});
