//! The command phase: whole client messages are read, parsed and checked before they go on —
//! the command's database against the AccessRoles' `dbNames`, no client authentication (the
//! proxy logged in for the client), no compression — and each data command is audited.

use bson::{Bson, Document};

use super::codec::{self, CodecError, HEADER, Header, Message};
use crate::proxy::audit::{DocumentCommand, SessionFields, shown_text};
pub use crate::proxy::relay::DatabaseCheck;
use crate::proxy::relay::{ClientFilter, Step};
use crate::proxy::session::SessionError;

/// Command documents are shown in audit events up to this size.
pub const MAX_AUDITED_COMMAND: usize = 4 * 1024;
/// OP_MSG flag: the sender expects no reply.
const MORE_TO_COME: u32 = 1 << 1;

/// Commands that are part of running a connection, not data access: allowed on any database and
/// not audited (drivers send them constantly).
const HOUSEKEEPING: &[&str] = &[
    "hello",
    "isMaster",
    "ismaster",
    "ping",
    "buildInfo",
    "buildinfo",
    "endSessions",
    "hostInfo",
    "getParameter",
    "whatsmyuri",
    "connectionStatus",
    "getLastError",
    "getFreeMonitoringStatus",
    "getLog",
    "atlasVersion",
    "getCmdLineOpts",
];
/// Commands by which a client would authenticate itself: refused.
const AUTHENTICATION: &[&str] = &["saslStart", "saslContinue", "authenticate", "logout", "copydbsaslstart", "getnonce"];
/// Fields of `hello` the proxy removes: compression would make the relay blind, speculative
/// authentication would be the client's own login.
const HELLO_FIELDS_REMOVED: &[&str] = &["compression", "speculativeAuthenticate", "saslSupportedMechs"];

/// The client side of a MongoDB session.
pub struct CommandFilter {
    buf: Vec<u8>,
    audit: bool,
    check_database: DatabaseCheck,
    next_id: i32,
}

/// What to do with one message.
enum Verdict {
    Forward(Option<Vec<u8>>),
    Refuse { code: i32, code_name: &'static str, message: String },
}

impl CommandFilter {
    /// A filter at a message boundary.
    pub fn new(audit: bool, check_database: DatabaseCheck) -> Self {
        Self { buf: Vec::new(), audit, check_database, next_id: 1_000_000 }
    }

    fn judge(&self, header: &Header, message: &mut Message, fields: &SessionFields) -> Verdict {
        let command = message.command().unwrap_or("").to_owned();
        let is_hello = matches!(command.as_str(), "hello" | "isMaster" | "ismaster");
        if let Message::Query { collection, .. } = message
            && !(is_hello && collection.ends_with(".$cmd"))
        {
            return Verdict::Refuse {
                code: 352,
                code_name: "UnsupportedOpQueryCommand",
                message: "OP_QUERY is only accepted for the hello handshake; use OP_MSG (MongoDB drivers 3.6+)".into(),
            };
        }
        if AUTHENTICATION.contains(&command.as_str()) {
            return Verdict::Refuse {
                code: 13,
                code_name: "Unauthorized",
                message: format!(
                    "{command} is not allowed through Portcullis: the proxy logs in to the database for you with MONGODB-AWS; connect without credentials or authMechanism"
                ),
            };
        }
        if is_hello {
            let doc = match message {
                Message::Msg { body, .. } => body,
                Message::Query { query, .. } => query,
            };
            let before = doc.len();
            for field in HELLO_FIELDS_REMOVED {
                doc.remove(*field);
            }
            return Verdict::Forward((doc.len() != before).then(|| codec::encode(header.request_id, message)));
        }
        if HOUSEKEEPING.contains(&command.as_str()) {
            return Verdict::Forward(None);
        }
        let database = message.database().unwrap_or("").to_owned();
        match (self.check_database)(fields, &database) {
            Ok(()) => Verdict::Forward(None),
            Err(reason) => {
                Verdict::Refuse { code: 13, code_name: "Unauthorized", message: format!("not authorized on {database} to execute command {command}: {reason}") }
            }
        }
    }

    fn record(&self, message: &Message, error: Option<String>, steps: &mut Vec<Step>) {
        let command = message.command().unwrap_or("").to_owned();
        if !self.audit || HOUSEKEEPING.contains(&command.as_str()) {
            return;
        }
        let (collection, text) = match message {
            Message::Msg { body, sequences, .. } => {
                let collection = body.get(&command).and_then(Bson::as_str).map(str::to_owned);
                let mut shown = body.clone();
                for (identifier, docs) in sequences {
                    shown.insert(identifier.clone(), docs.iter().cloned().map(Bson::Document).collect::<Vec<_>>());
                }
                (collection, relaxed_json(&shown))
            }
            Message::Query { query, collection, .. } => (Some(collection.clone()), relaxed_json(query)),
        };
        let event = DocumentCommand {
            command,
            database: message.database().unwrap_or("").to_owned(),
            collection,
            document: shown_text(text.as_bytes(), MAX_AUDITED_COMMAND),
            document_length: text.len(),
            truncated: text.len() > MAX_AUDITED_COMMAND,
        };
        steps.push(Step::AuditCommand { command: event, error });
    }
}

fn relaxed_json(doc: &Document) -> String {
    Bson::Document(doc.clone()).into_relaxed_extjson().to_string()
}

impl ClientFilter for CommandFilter {
    fn feed(&mut self, mut input: &[u8], fields: &SessionFields, steps: &mut Vec<Step>) -> Result<(), SessionError> {
        while !input.is_empty() {
            let need = if self.buf.len() < HEADER {
                HEADER - self.buf.len()
            } else {
                let header = Header::parse(self.buf[..HEADER].try_into().expect("16 bytes"))?;
                header.length - self.buf.len()
            };
            let n = need.min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.buf.len() < HEADER {
                continue;
            }
            if self.buf.len() == HEADER {
                // Check the length as soon as it is known: a lie ends the session at once.
                Header::parse(self.buf[..HEADER].try_into().expect("16 bytes"))?;
                continue;
            }
            let header = Header::parse(self.buf[..HEADER].try_into().expect("16 bytes"))?;
            if self.buf.len() < header.length {
                continue;
            }
            let raw = std::mem::take(&mut self.buf);
            let mut message = codec::parse(&header, &raw[HEADER..])?;
            let expects_reply = !matches!(&message, Message::Msg { flags, .. } if flags & MORE_TO_COME != 0);
            match self.judge(&header, &mut message, fields) {
                Verdict::Forward(rewritten) => {
                    self.record(&message, None, steps);
                    steps.push(Step::ForwardOwned(rewritten.unwrap_or(raw)));
                }
                Verdict::Refuse { code, code_name, message: text } => {
                    self.record(&message, Some(text.clone()), steps);
                    if expects_reply {
                        self.next_id = self.next_id.wrapping_add(1);
                        let doc = codec::error_document(code, code_name, &text);
                        let reply = match message {
                            Message::Query { .. } => codec::encode_reply(self.next_id, header.request_id, &doc, true),
                            Message::Msg { .. } => codec::encode_msg(self.next_id, header.request_id, &doc),
                        };
                        steps.push(Step::Reply(reply));
                    }
                }
            }
        }
        Ok(())
    }
}

impl From<CodecError> for SessionError {
    fn from(e: CodecError) -> Self {
        SessionError::ClientProtocol(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn msg(id: i32, body: Document) -> Vec<u8> {
        codec::encode(id, &Message::Msg { flags: 0, body, sequences: vec![] })
    }

    /// What the filter made of a stream: bytes forwarded, replies, audited commands.
    type Outcome = (Vec<u8>, Vec<Vec<u8>>, Vec<(DocumentCommand, Option<String>)>);

    fn run(stream: &[u8], chunk: usize) -> Outcome {
        let check: DatabaseCheck = Box::new(|_, db| if db == "orders" { Ok(()) } else { Err("not in dbNames".into()) });
        let mut filter = CommandFilter::new(true, check);
        let (mut up, mut replies, mut audits) = (Vec::new(), Vec::new(), Vec::new());
        let mut steps = Vec::new();
        for part in stream.chunks(chunk) {
            filter.feed(part, &SessionFields::default(), &mut steps).unwrap();
            for step in steps.drain(..) {
                match step {
                    Step::ForwardOwned(b) => up.extend(b),
                    Step::Forward(r) => up.extend_from_slice(&part[r]),
                    Step::Reply(b) => replies.push(b),
                    Step::AuditCommand { command, error } => audits.push((command, error)),
                    _ => {}
                }
            }
        }
        (up, replies, audits)
    }

    #[test]
    fn commands_are_checked_by_database_and_client_authentication_is_refused() {
        let hello = msg(1, doc! { "hello": 1, "compression": ["zstd"], "$db": "admin" });
        let insert = msg(2, doc! { "insert": "items", "documents": [{ "a": 1 }], "$db": "orders" });
        let other = msg(3, doc! { "find": "secrets", "$db": "hr" });
        let sasl = msg(4, doc! { "saslStart": 1, "mechanism": "SCRAM-SHA-256", "$db": "admin" });
        let stream = [hello.clone(), insert.clone(), other, sasl].concat();
        for chunk in [1, 7, 16, 17, 1000] {
            let (up, replies, audits) = run(&stream, chunk);
            let clean_hello = msg(1, doc! { "hello": 1, "$db": "admin" });
            assert_eq!(up, [clean_hello, insert.clone()].concat(), "chunk {chunk}: hello without compression, then the insert");
            assert_eq!(replies.len(), 2);
            let h = Header::parse(replies[0][..HEADER].try_into().unwrap()).unwrap();
            let refused = codec::reply_document(&h, &replies[0][HEADER..]).unwrap();
            assert_eq!((h.response_to, refused.get_i32("code").unwrap()), (3, 13));
            assert!(refused.get_str("errmsg").unwrap().contains("not authorized on hr to execute command find"));
            let h = Header::parse(replies[1][..HEADER].try_into().unwrap()).unwrap();
            let sasl_refused = codec::reply_document(&h, &replies[1][HEADER..]).unwrap();
            assert!(sasl_refused.get_str("errmsg").unwrap().contains("saslStart is not allowed"), "{sasl_refused}");
            let names: Vec<_> = audits.iter().map(|(c, e)| (c.command.as_str(), c.database.as_str(), e.is_some())).collect();
            assert_eq!(names, [("insert", "orders", false), ("find", "hr", true), ("saslStart", "admin", true)]);
            assert_eq!(audits[0].0.collection.as_deref(), Some("items"));
        }
    }

    #[test]
    fn a_lying_length_ends_the_session() {
        let check: DatabaseCheck = Box::new(|_, _| Ok(()));
        let mut filter = CommandFilter::new(true, check);
        let mut steps = Vec::new();
        let mut header = (49_000_000i32).to_le_bytes().to_vec();
        header.extend([0u8; 12]);
        assert!(filter.feed(&header, &SessionFields::default(), &mut steps).is_err());
    }
}
