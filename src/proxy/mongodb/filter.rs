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
/// Whether `command` goes on without its database being checked (the handshake and connection
/// housekeeping): every other forwarded command's database was allowed.
pub fn is_unchecked(command: &str) -> bool {
    matches!(command, "hello" | "isMaster" | "ismaster") || HOUSEKEEPING.contains(&command)
}

/// Commands by which a client would authenticate itself: refused.
const AUTHENTICATION: &[&str] = &["saslStart", "saslContinue", "authenticate", "logout", "copydbsaslstart", "getnonce"];
/// Fields of `hello` the proxy removes: compression would make the relay blind, speculative
/// authentication would be the client's own login.
const HELLO_FIELDS_REMOVED: &[&str] = &["compression", "speculativeAuthenticate", "saslSupportedMechs"];

/// Commands that end a transaction: sent to `admin`, allowed when the transaction they end
/// was this session's and ran only commands the proxy allowed.
const TRANSACTION_END: &[&str] = &["commitTransaction", "abortTransaction"];
/// Open transactions remembered per session (a driver has one per logical session at a time).
const MAX_TRANSACTIONS: usize = 1024;

/// The client side of a MongoDB session.
pub struct CommandFilter {
    buf: Vec<u8>,
    audit: bool,
    check_database: DatabaseCheck,
    next_id: i32,
    /// The latest transaction of each logical session (lsid): its txnNumber, and whether one of
    /// its commands was refused. Kept after it ends, as drivers retry commitTransaction.
    transactions: std::collections::HashMap<String, (i64, bool)>,
}

/// The transaction a command belongs to: its `lsid` and `txnNumber` when it runs inside one
/// (`autocommit: false`).
fn transaction_of(body: &Document) -> Option<(String, i64)> {
    if body.get_bool("autocommit").ok() != Some(false) {
        return None;
    }
    let lsid = body.get_document("lsid").ok()?;
    let txn = body.get_i64("txnNumber").ok().or_else(|| body.get_i32("txnNumber").ok().map(i64::from))?;
    Some((relaxed_json(lsid), txn))
}

/// What to do with one message.
enum Verdict {
    Forward(Option<Vec<u8>>),
    Refuse { code: i32, code_name: &'static str, message: String },
}

impl CommandFilter {
    /// A filter at a message boundary.
    pub fn new(audit: bool, check_database: DatabaseCheck) -> Self {
        Self { buf: Vec::new(), audit, check_database, next_id: 1_000_000, transactions: std::collections::HashMap::new() }
    }

    fn judge(&mut self, header: &Header, message: &mut Message, fields: &SessionFields) -> Verdict {
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
        let transaction = match message {
            Message::Msg { body, .. } => transaction_of(body),
            Message::Query { .. } => None,
        };
        if TRANSACTION_END.contains(&command.as_str())
            && message.database() == Some("admin")
            && let Some((lsid, number)) = &transaction
            && let Some(&(_, refused)) = self.transactions.get(lsid).filter(|(known, _)| known == number)
        {
            return match (refused, command.as_str()) {
                (true, "commitTransaction") => Verdict::Refuse {
                    code: 251,
                    code_name: "NoSuchTransaction",
                    message:
                        "Portcullis refused a command of this transaction, so it cannot commit what remains: abort it and retry without the refused command"
                            .into(),
                },
                _ => Verdict::Forward(None),
            };
        }
        let database = message.database().unwrap_or("").to_owned();
        let verdict = match (self.check_database)(fields, &database) {
            Ok(()) => Verdict::Forward(None),
            Err(reason) => {
                Verdict::Refuse { code: 13, code_name: "Unauthorized", message: format!("not authorized on {database} to execute command {command}: {reason}") }
            }
        };
        if let Some((lsid, number)) = transaction {
            let refused = matches!(verdict, Verdict::Refuse { .. });
            if self.transactions.len() >= MAX_TRANSACTIONS && !self.transactions.contains_key(&lsid) {
                // More logical sessions than any driver keeps: forget them (their ends then need admin).
                self.transactions.clear();
            }
            let entry = self.transactions.entry(lsid).or_insert((number, false));
            if entry.0 != number {
                *entry = (number, false);
            }
            entry.1 |= refused;
        }
        verdict
    }

    fn record(&self, message: &Message, error: Option<String>, steps: &mut Vec<Step>) {
        let command = message.command().unwrap_or("").to_owned();
        if !self.audit || HOUSEKEEPING.contains(&command.as_str()) {
            return;
        }
        let (collection, text) = match message {
            Message::Msg { body, sequences, .. } => {
                let named = if command == "getMore" { "collection" } else { command.as_str() };
                let collection = body.get(named).and_then(Bson::as_str).map(str::to_owned);
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
            db_name: message.database().unwrap_or("").to_owned(),
            collection,
            document: shown_text(text.as_bytes(), MAX_AUDITED_COMMAND),
            document_length: text.len(),
            truncated: text.len() > MAX_AUDITED_COMMAND,
        };
        steps.push(Step::AuditCommand { command: event, error });
    }
}

impl CommandFilter {
    /// Refuses a well-formed but ambiguous message (audited whether or not statements are, as
    /// an attempt to get past the checks) with an error reply, and goes on.
    fn refuse_ambiguous(&mut self, header: &Header, raw: &[u8], e: &CodecError, steps: &mut Vec<Step>) {
        let text = e.to_string();
        let (command, document) = match e {
            CodecError::Ambiguous { command, document, .. } => (command.clone().unwrap_or_default(), document.as_str()),
            _ => (String::new(), ""),
        };
        let event = DocumentCommand {
            command,
            collection: None,
            document: shown_text(document.as_bytes(), MAX_AUDITED_COMMAND),
            document_length: document.len(),
            truncated: document.len() > MAX_AUDITED_COMMAND,
            ..Default::default()
        };
        steps.push(Step::AuditCommand { command: event, error: Some(text.clone()) });
        let more_to_come =
            header.opcode == codec::OP_MSG && raw.get(HEADER..HEADER + 4).is_some_and(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]) & MORE_TO_COME != 0);
        if more_to_come {
            return;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let doc = codec::error_document(2, "BadValue", &text);
        let reply = if header.opcode == codec::OP_QUERY {
            codec::encode_reply(self.next_id, header.request_id, &doc, true)
        } else {
            codec::encode_msg(self.next_id, header.request_id, &doc)
        };
        steps.push(Step::Reply(reply));
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
            let mut message = match codec::parse(&header, &raw[HEADER..]) {
                Ok(message) => message,
                Err(e) if e.is_ambiguous() => {
                    self.refuse_ambiguous(&header, &raw, &e, steps);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
            let names: Vec<_> = audits.iter().map(|(c, e)| (c.command.as_str(), c.db_name.as_str(), e.is_some())).collect();
            assert_eq!(names, [("insert", "orders", false), ("find", "hr", true), ("saslStart", "admin", true)]);
            assert_eq!(audits[0].0.collection.as_deref(), Some("items"));
        }
    }

    /// An OP_MSG whose body has these string fields exactly as given (repeats included), which
    /// a `Document` cannot hold.
    fn raw_msg(id: i32, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut doc = Vec::new();
        for (key, value) in fields {
            doc.push(0x02);
            doc.extend_from_slice(key.as_bytes());
            doc.push(0);
            doc.extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
            doc.extend_from_slice(value.as_bytes());
            doc.push(0);
        }
        let doc = [((doc.len() + 5) as i32).to_le_bytes().to_vec(), doc, vec![0]].concat();
        let body = [0u32.to_le_bytes().to_vec(), vec![0u8], doc].concat();
        let mut out = Vec::new();
        for v in [(HEADER + body.len()) as i32, id, 0, codec::OP_MSG] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend(body);
        out
    }

    fn error_of(reply: &[u8]) -> Document {
        let h = Header::parse(reply[..HEADER].try_into().unwrap()).unwrap();
        codec::reply_document(&h, &reply[HEADER..]).unwrap()
    }

    #[test]
    fn ambiguous_commands_are_refused_audited_and_never_forwarded() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("find", "items"), ("$db", "orders"), ("$db", "hr")], "the field \"$db\" appears twice"),
            (&[("find", "items"), ("$db", "hr"), ("$db", "orders")], "the field \"$db\" appears twice"),
            (&[("find", "items"), ("$DB", "hr"), ("$db", "orders")], "the field \"$DB\" is \"$db\" in another case"),
            (&[("find", "items"), ("filter", "x"), ("filter", "y"), ("$db", "orders")], "the field \"filter\" appears twice"),
            (&[("find", "items"), ("find", "secrets"), ("$db", "orders")], "the field \"find\" appears twice"),
        ];
        for (fields, reason) in cases {
            let stream = [raw_msg(7, fields), msg(8, doc! { "find": "items", "$db": "orders" })].concat();
            for chunk in [1, 5, 1000] {
                let (up, replies, audits) = run(&stream, chunk);
                assert_eq!(up, msg(8, doc! { "find": "items", "$db": "orders" }), "{fields:?}: only the clean command goes on");
                let refused = error_of(&replies[0]);
                assert_eq!((refused.get_i32("code").unwrap(), refused.get_str("codeName").unwrap()), (2, "BadValue"));
                assert!(refused.get_str("errmsg").unwrap().contains(reason), "{refused}");
                let (event, error) = &audits[0];
                assert_eq!(event.command, "find");
                assert!(error.as_deref().unwrap().contains(reason));
                assert!(event.document.matches("\"$db\"").count() + event.document.matches("\"$DB\"").count() >= 1, "{}", event.document);
            }
        }
        // Shown as sent, both values.
        let (_, _, audits) = run(&raw_msg(7, &[("find", "items"), ("$db", "orders"), ("$db", "hr")]), 1000);
        assert_eq!(audits[0].0.document, r#"{"find":"items","$db":"orders","$db":"hr"}"#);
    }

    #[test]
    fn a_document_sequence_named_like_a_body_field_is_ambiguous() {
        let body = doc! { "insert": "items", "documents": [{ "a": 1 }], "$db": "orders" };
        let message = Message::Msg { flags: 0, body, sequences: vec![("documents".into(), vec![doc! { "b": 2 }])] };
        let (up, replies, _) = run(&codec::encode(9, &message), 1000);
        assert!(up.is_empty());
        assert!(error_of(&replies[0]).get_str("errmsg").unwrap().contains("the document sequence \"documents\" repeats a field"));
    }

    #[test]
    fn a_transaction_ends_on_admin_only_if_every_command_in_it_was_allowed() {
        let lsid = doc! { "id": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] } };
        let in_txn = |id: i32, db: &str, txn: i64, start: bool| {
            let mut body = doc! { "insert": "items", "documents": [{ "a": 1 }], "lsid": lsid.clone(), "txnNumber": txn, "autocommit": false, "$db": db };
            if start {
                body.insert("startTransaction", true);
            }
            msg(id, body)
        };
        let end = |id: i32, command: &str, txn: i64| msg(id, doc! { command: 1, "lsid": lsid.clone(), "txnNumber": txn, "autocommit": false, "$db": "admin" });
        // Transaction 1: only orders; its commit (and a retried commit) go on.
        let one = [in_txn(1, "orders", 1, true), in_txn(2, "orders", 1, false), end(3, "commitTransaction", 1), end(4, "commitTransaction", 1)].concat();
        let (up, replies, _) = run(&one, 1000);
        assert!(replies.is_empty(), "nothing refused");
        assert_eq!(up, one);
        // Transaction 2 touched hr: its commit is refused, its abort goes on.
        let two = [in_txn(1, "orders", 2, true), in_txn(2, "hr", 2, false), end(3, "commitTransaction", 2), end(4, "abortTransaction", 2)].concat();
        let (up, replies, _) = run(&two, 1000);
        assert_eq!(up, [in_txn(1, "orders", 2, true), end(4, "abortTransaction", 2)].concat());
        assert_eq!(replies.len(), 2);
        assert!(error_of(&replies[0]).get_str("errmsg").unwrap().contains("not authorized on hr"));
        let commit = error_of(&replies[1]);
        assert_eq!(commit.get_str("codeName").unwrap(), "NoSuchTransaction");
        assert!(commit.get_str("errmsg").unwrap().contains("cannot commit what remains"));
        // A commit of a transaction this session never ran is an ordinary admin command.
        let (up, replies, _) = run(&end(1, "commitTransaction", 9), 1000);
        assert!(up.is_empty() && error_of(&replies[0]).get_str("errmsg").unwrap().contains("not authorized on admin"));
    }

    #[test]
    fn get_more_is_audited_with_its_collection() {
        let (_, _, audits) = run(&msg(1, doc! { "getMore": 42i64, "collection": "items", "$db": "orders" }), 1000);
        assert_eq!((audits[0].0.command.as_str(), audits[0].0.collection.as_deref(), audits[0].0.db_name.as_str()), ("getMore", Some("items"), "orders"));
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
