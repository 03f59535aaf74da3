//! The audit trail: structured session events sent through a bounded queue to JSON-lines
//! sinks (stdout, file), written in batches by one thread; a full queue blocks (the default) or drops.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;

use tokio::sync::mpsc;

use crate::proxy::metrics::ProxyMetrics;

/// Statements longer than this are truncated in events (with their length and SHA-256).
pub const MAX_STATEMENT: usize = 64 * 1024;

/// Event names.
pub mod events {
    /// A session started (or was refused).
    pub const SESSION_START: &str = "db.session.start";
    /// A statement was sent.
    pub const SESSION_QUERY: &str = "db.session.query";
    /// A session ended.
    pub const SESSION_END: &str = "db.session.end";
    /// An HTTP API call was made (DynamoDB).
    pub const SESSION_REQUEST: &str = "db.session.request";
    /// Refusals beyond the audited burst, counted (a flood from one address).
    pub const SESSION_REFUSALS: &str = "db.session.refusals";
}

/// Fields every session event carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionFields {
    /// The session id.
    pub session_id: String,
    /// The user (certificate CN); empty before the certificate is known.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// `namespace/name` of the `Database`.
    pub database: String,
    /// The protocol.
    pub protocol: String,
    /// The upstream endpoint.
    pub endpoint: String,
    /// The database user.
    pub db_user: String,
    /// The database name.
    pub db_name: String,
    /// The client's address.
    pub client_addr: String,
}

/// One audit event.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 time.
    pub time: String,
    /// Event name (`db.session.start`, …).
    pub event: &'static str,
    /// A stable code: `DB1000I` start, `DB1000W` start refused, `DB1001I` query, `DB1002I` end,
    /// `DB1003I` API request.
    pub code: &'static str,
    /// Session fields.
    #[serde(flatten)]
    pub session: std::sync::Arc<SessionFields>,
    /// Whether the action succeeded.
    pub success: bool,
    /// Why it failed (safe text: never a token or key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Event-specific fields.
    #[serde(flatten)]
    pub detail: EventDetail,
}

/// The part of an event that depends on its kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventDetail {
    /// Nothing more.
    None {},
    /// A refused session start: the reason's kind, and the certificate presented, if any.
    Refused {
        /// The kind of the reason (`client_certificate`, `authorization`, …).
        reason_kind: &'static str,
        /// The certificate the client presented, when one was.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        certificate: Option<PresentedCertificate>,
    },
    /// Refusals counted beyond the audited burst of a window.
    Refusals {
        /// The kind of their reason.
        reason_kind: &'static str,
        /// How many.
        count: u64,
        /// The window's length.
        window_seconds: u64,
    },
    /// A statement.
    Query(Statement),
    /// An HTTP API call.
    Request(ApiCall),
    /// A document database command.
    Command(DocumentCommand),
    /// The end of a session.
    End {
        /// Bytes from client to upstream.
        bytes_from_client: u64,
        /// Bytes from upstream to client.
        bytes_to_client: u64,
        /// How long the session lasted, in milliseconds.
        duration_ms: u64,
        /// Why it ended.
        reason: String,
    },
}

/// A client certificate as presented (before or without verification), for refusals.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PresentedCertificate {
    /// Its subject (RFC 4514).
    pub certificate_subject: String,
    /// Its serial number (hex).
    pub certificate_serial: String,
    /// Its issuer (RFC 4514).
    pub certificate_issuer: String,
}

impl PresentedCertificate {
    /// Reads the fields from a DER certificate; `None` when it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            certificate_subject: cert.subject().to_string(),
            certificate_serial: cert.raw_serial_as_string().replace(':', ""),
            certificate_issuer: cert.issuer().to_string(),
        })
    }
}

/// An HTTP API call as recorded (DynamoDB).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ApiCall {
    /// The `X-Amz-Target`, e.g. `DynamoDB_20120810.PutItem`.
    pub target: String,
    /// The HTTP status returned to the client.
    pub status: u16,
    /// The request body (JSON) as UTF-8, cut at 4 KiB.
    pub body: String,
    /// The request body's full length in bytes.
    pub body_length: usize,
    /// Whether `body` was cut.
    pub truncated: bool,
    /// The tables the request names (`TableName`, `RequestItems`, `TransactItems`), sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

/// A MongoDB/DocumentDB command as recorded.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DocumentCommand {
    /// The command's name (`insert`, `find`, …).
    pub command: String,
    /// Its database (`$db`): shown as the event's `db_name` (`database` is always the
    /// Portcullis Database).
    #[serde(skip)]
    pub db_name: String,
    /// The collection, when the command names one (for `getMore`, its `collection` field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The command document as relaxed extended JSON, cut at 4 KiB.
    pub document: String,
    /// The full JSON's length.
    pub document_length: usize,
    /// Whether `document` was cut.
    pub truncated: bool,
}

/// A statement as recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Statement {
    /// `query` (simple protocol) or `parse` (extended protocol).
    pub kind: &'static str,
    /// The statement as UTF-8, truncated past 64 KiB (invalid bytes shown as U+FFFD).
    pub statement: String,
    /// The statement's full length in raw bytes.
    pub statement_length: usize,
    /// The SHA-256 (hex) of the full statement.
    pub statement_sha256: String,
    /// Whether `statement` was truncated.
    pub truncated: bool,
    /// The prepared statement's name, for `parse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_name: Option<String>,
    /// The prepared statement's id (MySQL `execute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_id: Option<u32>,
}

/// Builds a [`Statement`] from bytes that arrive in pieces: keeps the first 64 KiB, counts and
/// hashes everything.
#[derive(Debug, Default)]
pub struct StatementCapture {
    shown: Vec<u8>,
    length: usize,
    hasher: Sha256,
}

impl StatementCapture {
    /// Adds the next bytes of the statement.
    pub fn push(&mut self, part: &[u8]) {
        self.hasher.update(part);
        self.length += part.len();
        if self.shown.len() < MAX_STATEMENT {
            let room = MAX_STATEMENT - self.shown.len();
            self.shown.extend_from_slice(&part[..part.len().min(room)]);
        }
    }

    /// The first bytes kept so far.
    pub fn prefix(&self) -> &[u8] {
        &self.shown
    }

    /// The record.
    pub fn finish(self, kind: &'static str, prepared_name: Option<String>) -> Statement {
        Statement {
            kind,
            statement: shown_text(&self.shown, MAX_STATEMENT),
            statement_length: self.length,
            statement_sha256: hex::encode(self.hasher.finalize()),
            truncated: self.length > self.shown.len(),
            prepared_name,
            statement_id: None,
        }
    }
}

/// Shows raw statement bytes as UTF-8 (invalid bytes become U+FFFD) of at most `max` bytes,
/// cut at a character boundary of the raw bytes (so a character cut in two is dropped, not
/// shown as a replacement character that was never sent).
pub fn shown_text(raw: &[u8], max: usize) -> String {
    let mut cut = raw.len().min(max);
    if cut < raw.len() {
        // Back off over continuation bytes (10xxxxxx) to the start of the cut character.
        let mut back = cut;
        while back > 0 && cut - back < 4 && raw[back] & 0xc0 == 0x80 {
            back -= 1;
        }
        if raw[back] & 0xc0 != 0x80 {
            cut = back;
        }
    }
    let mut text = String::from_utf8_lossy(&raw[..cut]).into_owned();
    if text.len() > max {
        let cut = text.floor_char_boundary(max);
        text.truncate(cut);
    }
    text
}

impl Statement {
    /// Builds a statement record from the full text.
    pub fn from_text(kind: &'static str, text: &[u8], prepared_name: Option<String>) -> Self {
        let mut capture = StatementCapture::default();
        capture.push(text);
        capture.finish(kind, prepared_name)
    }
}

impl AuditEvent {
    /// A new event stamped now.
    pub fn new(
        event: &'static str,
        code: &'static str,
        session: std::sync::Arc<SessionFields>,
        success: bool,
        error: Option<String>,
        detail: EventDetail,
    ) -> Self {
        let time = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Self { time, event, code, session, success, error, detail }
    }
}

/// What a full audit queue does to the event that does not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// The session waits until there is room: nothing is lost (the time is counted).
    #[default]
    Block,
    /// The event is dropped (and counted): the data path never waits.
    Drop,
}

/// The sending side of the audit queue; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
    metrics: ProxyMetrics,
    overflow: Overflow,
}

impl AuditSink {
    /// Queues an event. When the queue is full: with [`Overflow::Block`] the caller waits for
    /// room (a session's next statement waits with it), with [`Overflow::Drop`] the event is
    /// dropped; either is counted.
    pub async fn emit(&self, event: AuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) if self.overflow == Overflow::Block => {
                let started = std::time::Instant::now();
                if self.tx.send(event).await.is_err() {
                    self.metrics.audit_dropped.inc();
                }
                self.metrics.audit_blocked_seconds.inc_by(started.elapsed().as_secs_f64());
            }
            Err(_) => {
                self.metrics.audit_dropped.inc();
            }
        }
    }

    /// The same sink with another overflow policy.
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

/// Where events are written.
#[derive(Debug, Clone)]
pub struct AuditTargets {
    /// Write to standard output.
    pub stdout: bool,
    /// Append to this file.
    pub file: Option<PathBuf>,
}

/// How long the writer lets events gather before it writes them: senders never wake it more
/// often than this, so auditing every statement costs no context switch per statement.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// Starts the writer thread; returns the sink and a handle that finishes when every sink is
/// dropped and the queue is written out.
pub fn start(targets: AuditTargets, queue: usize, metrics: ProxyMetrics) -> std::io::Result<(AuditSink, tokio::task::JoinHandle<()>)> {
    let file = match &targets.file {
        Some(path) => Some(std::io::BufWriter::with_capacity(1 << 16, std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
        None => None,
    };
    let (tx, mut rx) = mpsc::channel::<AuditEvent>(queue);
    let writer = std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
        let mut file = file;
        let mut batch = Vec::with_capacity(1 << 16);
        while let Some(first) = rx.blocking_recv() {
            std::thread::sleep(BATCH_INTERVAL);
            push_line(&mut batch, &first);
            while let Ok(next) = rx.try_recv() {
                push_line(&mut batch, &next);
            }
            if targets.stdout {
                let mut out = std::io::stdout().lock();
                if out.write_all(&batch).and_then(|_| out.flush()).is_err() {
                    tracing::warn!("cannot write audit events to stdout");
                }
            }
            if let Some(f) = file.as_mut()
                && let Err(e) = f.write_all(&batch).and_then(|_| f.flush())
            {
                tracing::warn!(error = %e, "cannot write audit events to the audit file");
            }
            batch.clear();
        }
    })?;
    let done = tokio::task::spawn_blocking(move || {
        let _ = writer.join();
    });
    Ok((AuditSink { tx, metrics, overflow: Overflow::default() }, done))
}

fn push_line(buf: &mut Vec<u8>, event: &AuditEvent) {
    if serde_json::to_writer(&mut *buf, event).is_ok() {
        buf.push(b'\n');
    }
}

#[cfg(test)]
mod shown_text_tests {
    use super::shown_text;

    #[test]
    fn a_character_cut_in_two_is_dropped_not_replaced() {
        let mut raw = b"a".repeat(497);
        raw.extend("😀".as_bytes());
        assert_eq!(shown_text(&raw, 500), "a".repeat(497));
        assert_eq!(shown_text(&raw, 501), format!("{}😀", "a".repeat(497)));
        assert_eq!(shown_text(b"ab\xffcd", 5), "ab\u{fffd}", "invalid bytes that were sent are shown as U+FFFD");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_never_exceeds_the_cap_even_with_invalid_utf8() {
        assert_eq!(shown_text(&[0xff; 10], 30).len(), 30, "ten U+FFFD");
        assert!(shown_text(&[0xff; 100_000], MAX_STATEMENT).len() <= MAX_STATEMENT);
        let mut s = vec![b'a'; MAX_STATEMENT - 1];
        s.extend_from_slice("é".as_bytes());
        let shown = shown_text(&s, MAX_STATEMENT);
        assert_eq!(shown.len(), MAX_STATEMENT - 1, "a character cut in half is dropped, not replaced");
    }

    #[test]
    fn long_statements_are_truncated_with_length_and_hash() {
        let text = vec![b'x'; MAX_STATEMENT + 10];
        let s = Statement::from_text("query", &text, None);
        assert!(s.truncated);
        assert_eq!(s.statement.len(), MAX_STATEMENT);
        assert_eq!(s.statement_length, MAX_STATEMENT + 10);
        assert_eq!(s.statement_sha256, hex::encode(Sha256::digest(&text)));
        let short = Statement::from_text("parse", b"select 1", Some("s1".into()));
        assert!(!short.truncated);
        assert_eq!(short.statement, "select 1");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_with_drop() {
        let metrics = ProxyMetrics::default();
        let (tx, _rx) = mpsc::channel(1);
        let sink = AuditSink { tx, metrics: metrics.clone(), overflow: Overflow::Drop };
        let ev = || AuditEvent::new(events::SESSION_START, "DB1000I", Default::default(), true, None, EventDetail::None {});
        sink.emit(ev()).await;
        sink.emit(ev()).await;
        sink.emit(ev()).await;
        assert_eq!(metrics.audit_dropped.get(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_with_block_and_loses_nothing() {
        let metrics = ProxyMetrics::default();
        let (tx, mut rx) = mpsc::channel(1);
        let sink = AuditSink { tx, metrics: metrics.clone(), overflow: Overflow::Block };
        let ev = || AuditEvent::new(events::SESSION_START, "DB1000I", Default::default(), true, None, EventDetail::None {});
        sink.emit(ev()).await;
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move { sink.emit(ev()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second event waits for room");
        assert!(rx.recv().await.is_some());
        waiting.await.unwrap();
        assert!(rx.recv().await.is_some(), "and then is queued");
        assert_eq!(metrics.audit_dropped.get(), 0);
        assert!(metrics.audit_blocked_seconds.get() >= 0.09, "{}", metrics.audit_blocked_seconds.get());
    }

    #[test]
    fn events_serialize_flat_with_the_documented_fields() {
        let session = SessionFields { session_id: "s1".into(), user: "alice".into(), ..Default::default() };
        let ev =
            AuditEvent::new(events::SESSION_QUERY, "DB1001I", session.into(), true, None, EventDetail::Query(Statement::from_text("query", b"select 1", None)));
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        for field in [
            "time",
            "event",
            "code",
            "session_id",
            "user",
            "groups",
            "database",
            "protocol",
            "endpoint",
            "db_user",
            "db_name",
            "success",
            "statement",
            "statement_sha256",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        assert_eq!(v["event"], "db.session.query");
    }
}
