//! The command phase: finds packet boundaries in the client's stream without buffering what it
//! forwards, audits COM_QUERY and prepared statements, checks COM_INIT_DB against the
//! AccessRoles, and answers COM_CHANGE_USER and replication commands itself; on the database's
//! side it only learns which statement id a COM_STMT_PREPARE got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::codec::{self, MAX_PAYLOAD, command};
use crate::proxy::audit::{SessionFields, Statement, StatementCapture};
pub use crate::proxy::relay::DatabaseCheck;
use crate::proxy::relay::{ClientFilter, Step, UpstreamObserver};
use crate::proxy::session::SessionError;

/// The longest COM_INIT_DB the proxy holds back to check (database names are ≤ 64 characters).
const MAX_HELD: usize = 4096;
/// COM_QUERY packets up to this length are held until whole, to see whether they are a `KILL`
/// (whose id is the proxy's, mapped to the database's) or a `USE` (checked like COM_INIT_DB);
/// longer ones stream through.
pub const MAX_HELD_QUERY: usize = 4096;

/// Maps the id of a `KILL [QUERY] <id>` to the database's thread id, or says why not.
pub type KillCheck = Box<dyn Fn(u64) -> Result<u32, String> + Send>;
/// How many prepared statements' texts are remembered per session.
const MAX_PREPARED: usize = 4096;

/// Statement ids and their texts, shared by both directions of one session.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The text of the COM_STMT_PREPARE awaiting its answer.
    pending: Option<String>,
    texts: HashMap<u32, String>,
}

/// The client side.
pub struct CommandFilter {
    state: State,
    /// What the next packet continues, when the last one was 16 MiB - 1 bytes long.
    continuation: Continuation,
    audit: bool,
    prepared: Arc<Mutex<Prepared>>,
    check_database: DatabaseCheck,
    /// The previous packet's sequence id and whether it had a payload: a LOCAL INFILE upload
    /// longer than 255 packets wraps from 255 to 0, and that 0 is not a new command.
    previous: (u8, bool),
    /// How `KILL` ids are mapped; without one, `KILL` statements are forwarded as they are.
    kill: Option<KillCheck>,
}

enum State {
    /// Collecting a packet header and the command byte. `carried` holds the bytes of it that
    /// came in earlier reads (not forwarded yet).
    Head { bytes: [u8; 5], have: usize, carried: Vec<u8> },
    /// Forwarding a packet body, capturing it when it is a statement.
    Pass { remaining: usize, end: PacketEnd, capture: Option<Capture> },
    /// Holding a command back until it is whole, or discarding it (`buf` is `None`).
    Hold { remaining: usize, end: PacketEnd, command: u8, buf: Option<Vec<u8>> },
}

/// What is known at the end of a packet from its header.
#[derive(Clone, Copy)]
struct PacketEnd {
    /// The packet is 16 MiB - 1 bytes long: the next one continues it.
    continues: bool,
    /// Its sequence id.
    seq: u8,
}

/// What a packet following a 16 MiB - 1 byte packet belongs to.
enum Continuation {
    /// Nothing: the next packet starts afresh.
    None,
    /// A forwarded command, whose statement may still be being captured.
    Pass(Option<Capture>),
    /// A refused command: discard.
    Discard,
}

struct Capture {
    command: u8,
    /// The statement text; for COM_STMT_EXECUTE the parameters, of which the first four
    /// bytes are the statement id.
    text: StatementCapture,
}

impl CommandFilter {
    /// A filter at a packet boundary. `audit` false: statements are not recorded.
    pub fn new(audit: bool, prepared: Arc<Mutex<Prepared>>, check_database: DatabaseCheck) -> Self {
        Self { state: Self::head(), continuation: Continuation::None, audit, prepared, check_database, previous: (0, false), kill: None }
    }

    /// Maps `KILL` ids with `kill` (the session's greeting announced the proxy's own id).
    pub fn with_kill(mut self, kill: KillCheck) -> Self {
        self.kill = Some(kill);
        self
    }

    fn head() -> State {
        State::Head { bytes: [0; 5], have: 0, carried: Vec::new() }
    }

    fn capture_for(&self, command: u8) -> Option<Capture> {
        let wanted = match command {
            command::QUERY | command::STMT_EXECUTE => self.audit,
            // Prepared texts are remembered for the EXECUTE events, and forgotten on CLOSE.
            command::STMT_PREPARE | command::STMT_CLOSE => true,
            _ => false,
        };
        wanted.then(|| Capture { command, text: StatementCapture::default() })
    }

    /// A complete statement packet: record it.
    fn finish_capture(&self, capture: Capture, steps: &mut Vec<Step>) {
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        match capture.command {
            command::QUERY => steps.push(Step::Audit { statement: capture.text.finish("query", None), error: None }),
            command::STMT_PREPARE => {
                let statement = capture.text.finish("prepare", None);
                prepared.pending = Some(statement.statement.clone());
                if self.audit {
                    steps.push(Step::Audit { statement, error: None });
                }
            }
            command::STMT_EXECUTE => {
                let id = capture.text.prefix().get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let text = id.and_then(|id| prepared.texts.get(&id)).cloned().unwrap_or_default();
                let mut statement = Statement::from_text("execute", text.as_bytes(), None);
                statement.statement_id = id;
                steps.push(Step::Audit { statement, error: None });
            }
            command::STMT_CLOSE => {
                if let Some(b) = capture.text.prefix().get(..4) {
                    prepared.texts.remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            _ => {}
        }
    }

    /// A held command is whole (or was discarded): answer it.
    fn finish_hold(&self, command: u8, seq: u8, packet: Option<Vec<u8>>, fields: &SessionFields, steps: &mut Vec<Step>) {
        let seq = seq.wrapping_add(1);
        let refuse = |steps: &mut Vec<Step>, kind: &'static str, code: u16, text: &[u8], message: String| {
            steps.push(Step::Reply(codec::err_packet(seq, code, "42000", &message)));
            steps.push(Step::Audit { statement: Statement::from_text(kind, text, None), error: Some(message) });
        };
        match (command, packet) {
            (command::INIT_DB, Some(packet)) => {
                let name = String::from_utf8_lossy(&packet[5..]).into_owned();
                match (self.check_database)(fields, &name) {
                    Ok(()) => {
                        steps.push(Step::ForwardOwned(packet));
                        steps.push(Step::Audit { statement: Statement::from_text("init_db", name.as_bytes(), None), error: None });
                        steps.push(Step::SwitchDatabase(name));
                    }
                    Err(reason) => refuse(steps, "init_db", 1044, name.as_bytes(), format!("access denied to database {name:?}: {reason}")),
                }
            }
            (command::INIT_DB, None) => refuse(steps, "init_db", 1102, b"", "incorrect database name: too long".into()),
            (command::QUERY, Some(packet)) => {
                let text = &packet[5..];
                let kill = self.kill.as_ref().and_then(|k| super::threads::parse_kill(text).map(|(query, id)| (query, id, k(id))));
                if kill.is_none() {
                    match super::sql::use_statement(text) {
                        super::sql::UseStatement::None => {}
                        super::sql::UseStatement::Alone(name) => {
                            match (self.check_database)(fields, &name) {
                                Ok(()) => {
                                    let statement = self.audit.then(|| Statement::from_text("query", text, None));
                                    steps.push(Step::ForwardOwned(packet));
                                    if let Some(statement) = statement {
                                        steps.push(Step::Audit { statement, error: None });
                                    }
                                    steps.push(Step::SwitchDatabase(name));
                                }
                                Err(reason) => refuse(steps, "query", 1044, text, format!("access denied to database {name:?}: {reason}")),
                            }
                            return;
                        }
                        super::sql::UseStatement::Mixed => {
                            let message = "Portcullis refuses USE among other statements in one query, since the database it selects would not be checked: send USE on its own".to_owned();
                            refuse(steps, "query", 1235, text, message);
                            return;
                        }
                    }
                }
                match kill {
                    Some((query, _, Ok(thread))) => {
                        let rewritten = format!("KILL {}{thread}", if query { "QUERY " } else { "CONNECTION " });
                        let mut payload = vec![command::QUERY];
                        payload.extend_from_slice(rewritten.as_bytes());
                        steps.push(Step::ForwardOwned(codec::packet(seq.wrapping_sub(1), &payload)));
                        if self.audit {
                            steps.push(Step::Audit { statement: Statement::from_text("query", text, None), error: None });
                        }
                    }
                    Some((_, _, Err(reason))) => {
                        steps.push(Step::Reply(codec::err_packet(seq, 1094, "HY000", &reason)));
                        steps.push(Step::Audit { statement: Statement::from_text("query", text, None), error: Some(reason) });
                    }
                    None => {
                        let statement = self.audit.then(|| Statement::from_text("query", text, None));
                        steps.push(Step::ForwardOwned(packet));
                        if let Some(statement) = statement {
                            steps.push(Step::Audit { statement, error: None });
                        }
                    }
                }
            }
            (command::CHANGE_USER, _) => refuse(
                steps,
                "change_user",
                1235,
                b"",
                "COM_CHANGE_USER is not supported through Portcullis: open a new connection as the other database user (each login is checked against your AccessRoles)".into(),
            ),
            _ => refuse(steps, "replication", 1235, b"", "replication connections are not supported through Portcullis".into()),
        }
    }

    /// At the end of a packet: finish a capture or a hold, and go back to reading a head.
    fn finish_packet(&mut self, fields: &SessionFields, steps: &mut Vec<Step>) {
        let previous = std::mem::replace(&mut self.state, Self::head());
        match previous {
            State::Pass { capture, end: PacketEnd { continues, .. }, .. } => {
                if continues {
                    self.continuation = Continuation::Pass(capture);
                } else if let Some(capture) = capture {
                    self.finish_capture(capture, steps);
                }
            }
            State::Hold { command, buf, end: PacketEnd { continues, seq }, .. } => {
                if !matches!(self.continuation, Continuation::Discard) {
                    self.finish_hold(command, seq, buf, fields, steps);
                }
                self.continuation = if continues { Continuation::Discard } else { Continuation::None };
            }
            State::Head { .. } => {}
        }
    }
}

impl ClientFilter for CommandFilter {
    fn feed(&mut self, input: &[u8], fields: &SessionFields, steps: &mut Vec<Step>) -> Result<(), SessionError> {
        let mut i = 0;
        // input[forward_from..i] is forwarded unless a hold starts.
        let mut forward_from = 0;
        while i < input.len() || matches!(self.state, State::Pass { remaining: 0, .. } | State::Hold { remaining: 0, .. }) {
            match &mut self.state {
                State::Head { bytes, have, carried } => {
                    // Where this packet's first byte is in this read (0 when it began earlier).
                    let head_start = i - (*have - carried.len());
                    let need = if *have < 4 { 4 } else { 5 };
                    let n = (need - *have).min(input.len() - i);
                    bytes[*have..*have + n].copy_from_slice(&input[i..i + n]);
                    *have += n;
                    i += n;
                    if *have < 4 {
                        continue;
                    }
                    let (len, seq) = codec::header([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let end = PacketEnd { continues: len == MAX_PAYLOAD, seq };
                    let continuation = std::mem::replace(&mut self.continuation, Continuation::None);
                    // Only the first packet of a command has sequence id 0; continuations of a
                    // long packet and data the server asked for (LOCAL INFILE) are passed on.
                    let wrapped_upload = self.previous == (255, true);
                    let starts_command = matches!(continuation, Continuation::None) && seq == 0 && len > 0 && !wrapped_upload;
                    if starts_command && *have < 5 {
                        self.continuation = continuation;
                        continue;
                    }
                    self.previous = (seq, len > 0);
                    let body_seen = *have - 4;
                    let head = bytes[..*have].to_vec();
                    let carried = std::mem::take(carried);
                    let cmd = starts_command.then(|| head[4]);
                    let held_query = cmd == Some(command::QUERY) && len <= MAX_HELD_QUERY;
                    let hold = matches!(
                        cmd,
                        Some(command::INIT_DB | command::CHANGE_USER | command::BINLOG_DUMP | command::BINLOG_DUMP_GTID | command::REGISTER_SLAVE)
                    ) || held_query
                        || matches!(continuation, Continuation::Discard);
                    if hold {
                        // Forward what came before this packet; hold (or drop) the packet.
                        if forward_from < head_start {
                            steps.push(Step::Forward(forward_from..head_start));
                        }
                        let keep = (cmd == Some(command::INIT_DB) && len <= MAX_HELD) || held_query;
                        if matches!(continuation, Continuation::Discard) {
                            self.continuation = Continuation::Discard;
                        }
                        self.state = State::Hold { remaining: len - body_seen, end, command: cmd.unwrap_or(command::CHANGE_USER), buf: keep.then_some(head) };
                        forward_from = i;
                    } else {
                        if !carried.is_empty() {
                            // The head began in an earlier read: send those bytes first.
                            steps.push(Step::ForwardOwned(carried));
                        }
                        let mut capture = match continuation {
                            Continuation::Pass(capture) => capture,
                            _ => cmd.and_then(|c| self.capture_for(c)),
                        };
                        if let Some(c) = capture.as_mut() {
                            // The body seen so far, without the command byte.
                            c.text.push(&head[if cmd.is_some() { 5 } else { 4 }..]);
                        }
                        self.state = State::Pass { remaining: len - body_seen, end, capture };
                    }
                }
                State::Pass { remaining: 0, .. } | State::Hold { remaining: 0, .. } => {
                    self.finish_packet(fields, steps);
                    if matches!(self.state, State::Head { .. }) && i == input.len() {
                        break;
                    }
                }
                State::Pass { remaining, capture, .. } => {
                    let n = (*remaining).min(input.len() - i);
                    if let Some(c) = capture.as_mut() {
                        c.text.push(&input[i..i + n]);
                    }
                    *remaining -= n;
                    i += n;
                }
                State::Hold { remaining, buf, .. } => {
                    let n = (*remaining).min(input.len() - i);
                    if let Some(buf) = buf {
                        buf.extend_from_slice(&input[i..i + n]);
                    }
                    *remaining -= n;
                    i += n;
                    forward_from = i;
                }
            }
        }
        match &mut self.state {
            State::Head { have, carried, .. } if *have > 0 => {
                // An undecided head: keep its bytes from this read for later.
                let head_start = input.len() - (*have - carried.len());
                carried.extend_from_slice(&input[head_start..]);
                if forward_from < head_start {
                    steps.push(Step::Forward(forward_from..head_start));
                }
            }
            _ => {
                if forward_from < input.len() {
                    steps.push(Step::Forward(forward_from..input.len()));
                }
            }
        }
        Ok(())
    }
}

/// The database side: notes the statement id in the answer to a COM_STMT_PREPARE. The answer is
/// the first packet with sequence id 1 after the prepare was sent (clients wait for it).
pub struct PrepareWatcher {
    prepared: Arc<Mutex<Prepared>>,
    head: [u8; 4],
    have: usize,
    remaining: usize,
    /// The first bytes of a body that may be a COM_STMT_PREPARE_OK.
    probe: Option<Vec<u8>>,
}

impl PrepareWatcher {
    /// A watcher at a packet boundary.
    pub fn new(prepared: Arc<Mutex<Prepared>>) -> Self {
        Self { prepared, head: [0; 4], have: 0, remaining: 0, probe: None }
    }

    fn decide(&mut self) {
        let Some(probe) = self.probe.take() else { return };
        let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        let Some(text) = prepared.pending.take() else { return };
        if probe.len() == 5 && probe[0] == 0x00 {
            if prepared.texts.len() >= MAX_PREPARED {
                prepared.texts.clear();
            }
            prepared.texts.insert(u32::from_le_bytes([probe[1], probe[2], probe[3], probe[4]]), text);
        }
    }
}

impl UpstreamObserver for PrepareWatcher {
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.remaining == 0 {
                let n = (4 - self.have).min(input.len());
                self.head[self.have..self.have + n].copy_from_slice(&input[..n]);
                self.have += n;
                input = &input[n..];
                if self.have == 4 {
                    self.have = 0;
                    let (len, seq) = codec::header(self.head);
                    self.remaining = len;
                    let pending = seq == 1 && self.prepared.lock().unwrap_or_else(|p| p.into_inner()).pending.is_some();
                    self.probe = pending.then(Vec::new);
                    if len == 0 {
                        self.decide();
                    }
                }
                continue;
            }
            let n = self.remaining.min(input.len());
            if let Some(probe) = self.probe.as_mut() {
                let want = (5 - probe.len()).min(n);
                probe.extend_from_slice(&input[..want]);
                if probe.len() == 5 || want == self.remaining {
                    self.decide();
                }
            }
            self.remaining -= n;
            input = &input[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(command: u8, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![command];
        payload.extend_from_slice(body);
        codec::packet(0, &payload)
    }

    /// What a run of the filter did: bytes for the database, replies, statements, switches.
    #[derive(Default, Debug)]
    struct Outcome {
        upstream: Vec<u8>,
        replies: Vec<Vec<u8>>,
        audits: Vec<(Statement, Option<String>)>,
        switches: Vec<String>,
    }

    fn run(stream: &[u8], chunk: usize, prepared: Arc<Mutex<Prepared>>) -> Outcome {
        let check: DatabaseCheck = Box::new(|_, name| if name == "secret" { Err("not in dbNames".into()) } else { Ok(()) });
        let kill: KillCheck = Box::new(|id| if id == 5 { Ok(777) } else { Err(crate::proxy::mysql::threads::unknown_thread(id)) });
        let mut filter = CommandFilter::new(true, prepared, check).with_kill(kill);
        let fields = SessionFields::default();
        let mut out = Outcome::default();
        let mut steps = Vec::new();
        for part in stream.chunks(chunk) {
            filter.feed(part, &fields, &mut steps).unwrap();
            for step in steps.drain(..) {
                match step {
                    Step::Forward(r) => out.upstream.extend_from_slice(&part[r]),
                    Step::ForwardOwned(b) => out.upstream.extend_from_slice(&b),
                    Step::Reply(b) => out.replies.push(b),
                    Step::Audit { statement, error } => out.audits.push((statement, error)),
                    Step::SwitchDatabase(d) => out.switches.push(d),
                    Step::AuditCommand { .. } => {}
                }
            }
        }
        out
    }

    #[test]
    fn kill_ids_are_mapped_to_the_database_thread_or_refused_whatever_the_chunking() {
        let select = cmd(command::QUERY, b"SELECT 1");
        let long = cmd(command::QUERY, format!("SELECT '{}'", "x".repeat(100)).as_bytes());
        let stream =
            [cmd(command::QUERY, b"KILL QUERY 5"), select.clone(), cmd(command::QUERY, b"kill 5;"), cmd(command::QUERY, b"KILL QUERY 6"), long.clone()]
                .concat();
        for chunk in [1, 3, 5, 9, 1000] {
            let out = run(&stream, chunk, Arc::default());
            let expected = [cmd(command::QUERY, b"KILL QUERY 777"), select.clone(), cmd(command::QUERY, b"KILL CONNECTION 777"), long.clone()].concat();
            assert_eq!(out.upstream, expected, "chunk {chunk}");
            assert_eq!(out.replies.len(), 1, "chunk {chunk}");
            let err = codec::parse_err(&out.replies[0][4..]).unwrap();
            assert_eq!((err.code, err.message.as_str(), out.replies[0][3]), (1094, "Unknown thread id: 6", 1));
            let texts: Vec<(&str, bool)> = out.audits.iter().map(|(s, e)| (s.statement.as_str(), e.is_some())).collect();
            assert_eq!(texts[..4], [("KILL QUERY 5", false), ("SELECT 1", false), ("kill 5;", false), ("KILL QUERY 6", true)], "chunk {chunk}");
        }
    }

    #[test]
    fn commands_are_forwarded_audited_or_refused_whatever_the_chunking() {
        let query = cmd(command::QUERY, b"select 1");
        let prepare = cmd(command::STMT_PREPARE, b"select ?");
        let mut execute_body = 7u32.to_le_bytes().to_vec();
        execute_body.extend_from_slice(&[0, 1, 0, 0, 0]);
        let execute = cmd(command::STMT_EXECUTE, &execute_body);
        let use_ok = cmd(command::INIT_DB, b"orders");
        let use_denied = cmd(command::INIT_DB, b"secret");
        let change_user = cmd(command::CHANGE_USER, b"admin\0\0");
        // LOCAL INFILE data: sequence id 2, not a command.
        let infile = codec::packet(2, b"\x02not a command");
        let quit = cmd(command::QUIT, b"");
        let stream: Vec<u8> = [&query[..], &prepare, &execute, &use_ok, &use_denied, &change_user, &infile, &quit].concat();
        let expected_upstream: Vec<u8> = [&query[..], &prepare, &execute, &use_ok, &infile, &quit].concat();
        for chunk in [1, 2, 3, 4, 5, 7, 13, 1000] {
            let prepared = Arc::new(Mutex::new(Prepared::default()));
            prepared.lock().unwrap().texts.insert(7, "select ?".into());
            let out = run(&stream, chunk, prepared);
            assert_eq!(out.upstream, expected_upstream, "chunk {chunk}");
            let kinds: Vec<_> = out.audits.iter().map(|(s, e)| (s.kind, s.statement.as_str(), e.is_some())).collect();
            assert_eq!(
                kinds,
                [
                    ("query", "select 1", false),
                    ("prepare", "select ?", false),
                    ("execute", "select ?", false),
                    ("init_db", "orders", false),
                    ("init_db", "secret", true),
                    ("change_user", "", true)
                ],
                "chunk {chunk}"
            );
            assert_eq!(out.audits[2].0.statement_id, Some(7));
            assert_eq!(out.switches, ["orders"]);
            assert_eq!(out.replies.len(), 2);
            let denied = codec::parse_err(&out.replies[0][4..]).unwrap();
            assert_eq!((out.replies[0][3], denied.code), (1, 1044));
            assert!(denied.message.contains("not in dbNames"), "{}", denied.message);
            assert_eq!(codec::parse_err(&out.replies[1][4..]).unwrap().code, 1235);
        }
    }

    #[test]
    fn a_statement_over_16_mib_is_one_event_and_forwarded_whole() {
        let text = vec![b'x'; MAX_PAYLOAD + 100];
        let mut payload = vec![command::QUERY];
        payload.extend_from_slice(&text);
        // Split as the protocol does: 0xffffff bytes, then the rest with the next sequence id.
        let mut stream = Vec::new();
        for (seq, part) in payload.chunks(MAX_PAYLOAD).enumerate() {
            stream.extend_from_slice(&(part.len() as u32).to_le_bytes()[..3]);
            stream.push(seq as u8);
            stream.extend_from_slice(part);
        }
        stream.extend(cmd(command::QUERY, b"select 2"));
        let out = run(&stream, 64 * 1024, Arc::default());
        assert_eq!(out.upstream, stream);
        assert_eq!(out.audits.len(), 2);
        let big = &out.audits[0].0;
        assert_eq!((big.statement_length, big.truncated), (text.len(), true));
        assert_eq!(out.audits[1].0.statement, "select 2");
    }

    #[test]
    fn a_refused_long_command_is_not_forwarded_in_part() {
        let mut payload = vec![command::CHANGE_USER];
        payload.extend(vec![b'u'; MAX_PAYLOAD + 10]);
        let mut stream = Vec::new();
        for (seq, part) in payload.chunks(MAX_PAYLOAD).enumerate() {
            stream.extend_from_slice(&(part.len() as u32).to_le_bytes()[..3]);
            stream.push(seq as u8);
            stream.extend_from_slice(part);
        }
        let ping = cmd(0x0e, b"");
        stream.extend_from_slice(&ping);
        let out = run(&stream, 100_000, Arc::default());
        assert_eq!(out.upstream, ping);
        assert_eq!(out.replies.len(), 1);
    }

    #[test]
    fn the_watcher_learns_statement_ids_and_close_forgets_them() {
        let prepared = Arc::new(Mutex::new(Prepared::default()));
        let _ = run(&cmd(command::STMT_PREPARE, b"select ?"), 3, prepared.clone());
        let mut watcher = PrepareWatcher::new(prepared.clone());
        let mut ok = vec![0x00];
        ok.extend_from_slice(&42u32.to_le_bytes());
        ok.extend_from_slice(&[1, 0, 1, 0, 0, 0, 0]);
        for b in codec::packet(1, &ok) {
            watcher.feed(&[b]);
        }
        assert_eq!(prepared.lock().unwrap().texts.get(&42).map(String::as_str), Some("select ?"));
        let _ = run(&cmd(command::STMT_CLOSE, &42u32.to_le_bytes()), 2, prepared.clone());
        assert!(prepared.lock().unwrap().texts.is_empty());
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    #[test]
    fn a_local_infile_upload_past_255_packets_is_data_not_commands() {
        let check: DatabaseCheck = Box::new(|_, _| Err("never".into()));
        let mut filter = CommandFilter::new(true, Arc::default(), check);
        let mut stream = codec::packet(0, b"\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE t");
        // The upload: sequence ids 2..=255, then 0, 1, … — one packet starts like COM_INIT_DB.
        for i in 0..300u32 {
            let seq = (2 + i) as u8;
            let payload: &[u8] = if seq == 0 { b"\x02orders-row" } else { b"row data" };
            stream.extend(codec::packet(seq, payload));
        }
        stream.extend(codec::packet(46, b""));
        let mut steps = Vec::new();
        filter.feed(&stream, &SessionFields::default(), &mut steps).unwrap();
        let forwarded: usize = steps
            .iter()
            .map(|s| match s {
                Step::Forward(r) => r.len(),
                Step::ForwardOwned(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(forwarded, stream.len(), "every byte of the upload goes to the database");
        assert!(!steps.iter().any(|s| matches!(s, Step::Reply(_))), "nothing is refused");
        // After the upload's empty packet, sequence id 0 is a command again.
        let mut steps = Vec::new();
        filter.feed(&codec::packet(0, b"\x02secret"), &SessionFields::default(), &mut steps).unwrap();
        assert!(steps.iter().any(|s| matches!(s, Step::Reply(_))), "{steps:?}");
    }
}
