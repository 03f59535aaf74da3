//! The MongoDB wire protocol as far as the proxy speaks it, without I/O: message headers,
//! OP_MSG (sections and checksum), the legacy OP_QUERY handshake and OP_REPLY, and error
//! documents.

use bson::{Document, doc};

/// `OP_REPLY` (answers to OP_QUERY).
pub const OP_REPLY: i32 = 1;
/// `OP_QUERY` (legacy; drivers still send their first `hello` with it).
pub const OP_QUERY: i32 = 2004;
/// `OP_COMPRESSED`.
pub const OP_COMPRESSED: i32 = 2012;
/// `OP_MSG`.
pub const OP_MSG: i32 = 2013;
/// The largest message a server accepts (`maxMessageSizeBytes`).
pub const MAX_MESSAGE: usize = 48_000_000;
/// A header's size.
pub const HEADER: usize = 16;
/// OP_MSG flag: a CRC-32C checksum follows the sections.
pub const CHECKSUM_PRESENT: u32 = 1;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length is outside 16..=48,000,000.
    #[error("message length {0} is outside 16..={MAX_MESSAGE}")]
    BadLength(i64),
    /// A part runs past the message's end or is not valid.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Invalid BSON.
    #[error("invalid BSON in {what}: {reason}")]
    Bson { what: &'static str, reason: String },
    /// An opcode the proxy does not relay.
    #[error("opcode {0} is not supported (only OP_MSG, and OP_QUERY for the handshake)")]
    Opcode(i32),
    /// Compression.
    #[error("compressed messages (OP_COMPRESSED) are not supported: connect without compressors")]
    Compressed,
    /// A well-formed message that could be read two ways (a field twice, a `$db` in another
    /// case, a document sequence named like a body field): refused, never guessed at.
    #[error("Portcullis refuses an ambiguous command{}: {reason}", command.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Ambiguous {
        /// The command's name as the body's first field, when there is one.
        command: Option<String>,
        /// What was ambiguous.
        reason: String,
        /// The document as relaxed extended JSON with every field as sent, repeats included.
        document: String,
    },
}

impl CodecError {
    /// Whether the message was well-formed but ambiguous: the command is refused, the session
    /// goes on.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, CodecError::Ambiguous { .. })
    }
}

/// The top-level field names of a BSON document, in order.
fn top_level_keys(bytes: &[u8]) -> Vec<String> {
    let Ok(raw) = bson::RawDocument::from_bytes(bytes) else {
        return Vec::new();
    };
    raw.iter_elements().map_while(Result::ok).map(|e| e.key().as_str().to_owned()).collect()
}

/// A BSON document as relaxed extended JSON with its top-level fields as sent, repeated ones
/// included (a parsed `Document` keeps only the last of equal keys).
fn raw_json(bytes: &[u8]) -> String {
    let Ok(raw) = bson::RawDocument::from_bytes(bytes) else {
        return String::new();
    };
    let fields: Vec<String> = raw
        .iter_elements()
        .map_while(Result::ok)
        .map(|e| {
            let value =
                e.value().ok().and_then(|v| bson::Bson::try_from(v).ok()).map(|b| b.into_relaxed_extjson().to_string()).unwrap_or_else(|| "null".into());
            format!("{}:{value}", serde_json::Value::String(e.key().as_str().to_owned()))
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Why a command whose top-level fields are `keys` (and whose document sequences are named
/// `sequences`) could be read two ways, if it could: a server might act on the first of two
/// equal fields while the proxy checked the last.
fn ambiguity(keys: &[String], sequences: &[&str]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    for key in keys {
        if !seen.insert(key.as_str()) {
            return Some(format!("the field {key:?} appears twice"));
        }
        if key != "$db" && key.eq_ignore_ascii_case("$db") {
            return Some(format!("the field {key:?} is \"$db\" in another case"));
        }
    }
    for name in sequences {
        if !seen.insert(name) {
            return Some(format!("the document sequence {name:?} repeats a field of the command"));
        }
    }
    None
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The whole message's length, header included.
    pub length: usize,
    /// The sender's id for this message.
    pub request_id: i32,
    /// The id of the message this answers.
    pub response_to: i32,
    /// The opcode.
    pub opcode: i32,
}

impl Header {
    /// Parses and checks a header.
    pub fn parse(bytes: &[u8; HEADER]) -> Result<Header, CodecError> {
        let int = |i: usize| i32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let length = int(0);
        if !(HEADER as i32 + 1..=MAX_MESSAGE as i32).contains(&length) {
            return Err(CodecError::BadLength(i64::from(length)));
        }
        Ok(Header { length: length as usize, request_id: int(4), response_to: int(8), opcode: int(12) })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.length as i32, self.request_id, self.response_to, self.opcode] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A client message the proxy understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// OP_MSG: the body, and the document sequences (identifier, documents).
    Msg { flags: u32, body: Document, sequences: Vec<(String, Vec<Document>)> },
    /// OP_QUERY: the namespace and the query.
    Query { flags: i32, collection: String, skip: i32, limit: i32, query: Document },
}

fn document(bytes: &[u8], what: &'static str) -> Result<(Document, usize), CodecError> {
    let len = bytes.get(..4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(CodecError::Malformed(what))?;
    if len < 5 || len as usize > bytes.len() {
        return Err(CodecError::Malformed(what));
    }
    let doc = Document::from_reader(&mut &bytes[..len as usize]).map_err(|e| CodecError::Bson { what, reason: e.to_string() })?;
    Ok((doc, len as usize))
}

fn cstring(bytes: &[u8], what: &'static str) -> Result<(String, usize), CodecError> {
    let end = bytes.iter().position(|&b| b == 0).ok_or(CodecError::Malformed(what))?;
    let s = std::str::from_utf8(&bytes[..end]).map_err(|_| CodecError::Malformed(what))?;
    Ok((s.to_owned(), end + 1))
}

/// Parses the body (after the header) of a client message.
pub fn parse(header: &Header, body: &[u8]) -> Result<Message, CodecError> {
    match header.opcode {
        OP_MSG => {
            let flags = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(CodecError::Malformed("OP_MSG flags"))?;
            let end = if flags & CHECKSUM_PRESENT != 0 { body.len().checked_sub(4).ok_or(CodecError::Malformed("OP_MSG checksum"))? } else { body.len() };
            let mut rest = body.get(4..end).ok_or(CodecError::Malformed("OP_MSG"))?;
            let (mut main, mut sequences) = (None, Vec::new());
            while let Some((&kind, after)) = rest.split_first() {
                match kind {
                    0 => {
                        if main.is_some() {
                            return Err(CodecError::Malformed("OP_MSG (two body sections)"));
                        }
                        let (doc, n) = document(after, "OP_MSG body")?;
                        main = Some((doc, top_level_keys(&after[..n]), &after[..n]));
                        rest = &after[n..];
                    }
                    1 => {
                        let size =
                            after.get(..4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(CodecError::Malformed("OP_MSG document sequence"))?;
                        if size < 4 || size as usize > after.len() {
                            return Err(CodecError::Malformed("OP_MSG document sequence size"));
                        }
                        let section = &after[4..size as usize];
                        let (identifier, n) = cstring(section, "OP_MSG sequence identifier")?;
                        let mut docs_bytes = &section[n..];
                        let mut docs = Vec::new();
                        while !docs_bytes.is_empty() {
                            let (doc, n) = document(docs_bytes, "OP_MSG sequence document")?;
                            docs.push(doc);
                            docs_bytes = &docs_bytes[n..];
                        }
                        sequences.push((identifier, docs));
                        rest = &after[size as usize..];
                    }
                    _ => return Err(CodecError::Malformed("OP_MSG section kind")),
                }
            }
            let (body, keys, body_bytes) = main.ok_or(CodecError::Malformed("OP_MSG (no body section)"))?;
            let names: Vec<&str> = sequences.iter().map(|(name, _)| name.as_str()).collect();
            if let Some(reason) = ambiguity(&keys, &names) {
                return Err(CodecError::Ambiguous { command: keys.first().cloned(), reason, document: raw_json(body_bytes) });
            }
            Ok(Message::Msg { flags, body, sequences })
        }
        OP_QUERY => {
            let flags = body.get(..4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(CodecError::Malformed("OP_QUERY"))?;
            let (collection, n) = cstring(&body[4..], "OP_QUERY collection")?;
            let at = 4 + n;
            let ints = body.get(at..at + 8).ok_or(CodecError::Malformed("OP_QUERY"))?;
            let skip = i32::from_le_bytes([ints[0], ints[1], ints[2], ints[3]]);
            let limit = i32::from_le_bytes([ints[4], ints[5], ints[6], ints[7]]);
            let (query, n) = document(&body[at + 8..], "OP_QUERY query")?;
            let bytes = &body[at + 8..at + 8 + n];
            let keys = top_level_keys(bytes);
            if let Some(reason) = ambiguity(&keys, &[]) {
                return Err(CodecError::Ambiguous { command: keys.first().cloned(), reason, document: raw_json(bytes) });
            }
            Ok(Message::Query { flags, collection, skip, limit, query })
        }
        OP_COMPRESSED => Err(CodecError::Compressed),
        other => Err(CodecError::Opcode(other)),
    }
}

/// Encodes an OP_MSG with one body section (no checksum).
pub fn encode_msg(request_id: i32, response_to: i32, body: &Document) -> Vec<u8> {
    let mut doc = Vec::new();
    body.to_writer(&mut doc).expect("writing to a Vec");
    let mut out = Vec::with_capacity(HEADER + 5 + doc.len());
    Header { length: HEADER + 5 + doc.len(), request_id, response_to, opcode: OP_MSG }.encode(&mut out);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&doc);
    out
}

/// Re-encodes a client message (after the proxy changed it), keeping its request id.
pub fn encode(request_id: i32, message: &Message) -> Vec<u8> {
    match message {
        Message::Msg { flags, body, sequences } => {
            let mut payload = Vec::new();
            payload.extend_from_slice(&(flags & !CHECKSUM_PRESENT).to_le_bytes());
            payload.push(0);
            body.to_writer(&mut payload).expect("writing to a Vec");
            for (identifier, docs) in sequences {
                let mut section = Vec::new();
                section.extend_from_slice(identifier.as_bytes());
                section.push(0);
                for d in docs {
                    d.to_writer(&mut section).expect("writing to a Vec");
                }
                payload.push(1);
                payload.extend_from_slice(&((section.len() + 4) as i32).to_le_bytes());
                payload.extend_from_slice(&section);
            }
            let mut out = Vec::with_capacity(HEADER + payload.len());
            Header { length: HEADER + payload.len(), request_id, response_to: 0, opcode: OP_MSG }.encode(&mut out);
            out.extend_from_slice(&payload);
            out
        }
        Message::Query { flags, collection, skip, limit, query } => {
            let mut payload = Vec::new();
            payload.extend_from_slice(&flags.to_le_bytes());
            payload.extend_from_slice(collection.as_bytes());
            payload.push(0);
            payload.extend_from_slice(&skip.to_le_bytes());
            payload.extend_from_slice(&limit.to_le_bytes());
            query.to_writer(&mut payload).expect("writing to a Vec");
            let mut out = Vec::with_capacity(HEADER + payload.len());
            Header { length: HEADER + payload.len(), request_id, response_to: 0, opcode: OP_QUERY }.encode(&mut out);
            out.extend_from_slice(&payload);
            out
        }
    }
}

/// An OP_REPLY with one document (the answer to an OP_QUERY); `failed` sets QueryFailure.
pub fn encode_reply(request_id: i32, response_to: i32, document: &Document, failed: bool) -> Vec<u8> {
    let mut doc = Vec::new();
    document.to_writer(&mut doc).expect("writing to a Vec");
    let mut out = Vec::new();
    Header { length: HEADER + 20 + doc.len(), request_id, response_to, opcode: OP_REPLY }.encode(&mut out);
    out.extend_from_slice(&(if failed { 2i32 } else { 0 }).to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    out.extend_from_slice(&doc);
    out
}

/// The first document of a server's reply (OP_MSG body or OP_REPLY's first document).
pub fn reply_document(header: &Header, body: &[u8]) -> Result<Document, CodecError> {
    match header.opcode {
        OP_MSG => match parse(header, body)? {
            Message::Msg { body, .. } => Ok(body),
            Message::Query { .. } => Err(CodecError::Malformed("reply")),
        },
        OP_REPLY => {
            let docs = body.get(20..).ok_or(CodecError::Malformed("OP_REPLY"))?;
            Ok(document(docs, "OP_REPLY document")?.0)
        }
        other => Err(CodecError::Opcode(other)),
    }
}

/// A MongoDB error document.
pub fn error_document(code: i32, code_name: &str, message: &str) -> Document {
    doc! { "ok": 0.0, "errmsg": message, "code": code, "codeName": code_name }
}

impl Message {
    /// The command's name (the body's first key), for OP_MSG, or the query's for OP_QUERY.
    pub fn command(&self) -> Option<&str> {
        match self {
            Message::Msg { body, .. } => body.keys().next().map(String::as_str),
            Message::Query { query, .. } => query
                .keys()
                .next()
                .map(|k| k.as_str())
                .filter(|k| *k != "$query")
                .or_else(|| query.get_document("$query").ok().and_then(|q| q.keys().next().map(String::as_str))),
        }
    }

    /// The command's database: `$db`, or the OP_QUERY namespace's database.
    pub fn database(&self) -> Option<&str> {
        match self {
            Message::Msg { body, .. } => body.get_str("$db").ok(),
            Message::Query { collection, .. } => collection.split_once('.').map(|(db, _)| db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_msg_round_trips_with_document_sequences() {
        let message = Message::Msg {
            flags: 0,
            body: doc! { "insert": "items", "$db": "orders" },
            sequences: vec![("documents".into(), vec![doc! { "a": 1 }, doc! { "b": "two" }])],
        };
        let wire = encode(7, &message);
        let header = Header::parse(wire[..HEADER].try_into().unwrap()).unwrap();
        assert_eq!((header.length, header.request_id, header.opcode), (wire.len(), 7, OP_MSG));
        let back = parse(&header, &wire[HEADER..]).unwrap();
        assert_eq!(back, message);
        assert_eq!((back.command(), back.database()), (Some("insert"), Some("orders")));
    }

    #[test]
    fn op_query_hello_is_understood_and_answered_with_op_reply() {
        let message =
            Message::Query { flags: 0, collection: "admin.$cmd".into(), skip: 0, limit: -1, query: doc! { "isMaster": 1, "client": { "driver": "x" } } };
        let wire = encode(3, &message);
        let header = Header::parse(wire[..HEADER].try_into().unwrap()).unwrap();
        let back = parse(&header, &wire[HEADER..]).unwrap();
        assert_eq!((back.command(), back.database()), (Some("isMaster"), Some("admin")));
        let reply = encode_reply(9, 3, &error_document(13, "Unauthorized", "no"), true);
        let h = Header::parse(reply[..HEADER].try_into().unwrap()).unwrap();
        assert_eq!((h.response_to, h.opcode), (3, OP_REPLY));
        assert_eq!(reply_document(&h, &reply[HEADER..]).unwrap().get_i32("code").unwrap(), 13);
    }

    #[test]
    fn lying_lengths_invalid_bson_and_other_opcodes_are_errors() {
        let mut bad = [0u8; HEADER];
        bad[..4].copy_from_slice(&(MAX_MESSAGE as i32 + 1).to_le_bytes());
        assert!(matches!(Header::parse(&bad), Err(CodecError::BadLength(_))));
        bad[..4].copy_from_slice(&3i32.to_le_bytes());
        assert!(Header::parse(&bad).is_err());
        let h = Header { length: 30, request_id: 1, response_to: 0, opcode: OP_MSG };
        assert!(parse(&h, &[0, 0, 0, 0, 0, 10, 0, 0, 0, 0x10, b'a', 0]).is_err());
        assert!(matches!(parse(&Header { opcode: OP_COMPRESSED, ..h }, &[]), Err(CodecError::Compressed)));
        assert!(matches!(parse(&Header { opcode: 2002, ..h }, &[]), Err(CodecError::Opcode(2002))));
        let good = encode(1, &Message::Msg { flags: 0, body: doc! { "ping": 1, "$db": "admin" }, sequences: vec![] });
        for cut in 0..good.len() - HEADER {
            let _ = parse(&h, &good[HEADER..HEADER + cut]);
        }
    }
}
