//! Fuzzes the MySQL command filter (`CommandFilter`), which sees every byte a client sends after
//! login, split however TCP happens to split it, and the `PrepareWatcher` on the database side.
//!
//! Input layout:
//!
//! ```text
//! byte 0        flags: bits 0-3 = k, the number of schedule bytes (0-15)
//!                      bit 4    = audit off (`CommandFilter::new(false, ..)`)
//!                      bit 5    = large: feed up to 17 MiB instead of 72 KiB
//! bytes 1..=k   chunk schedule, used cyclically until the stream is used up; for each byte b,
//!               with size = (b & 0x3f) + 1 (1-64):
//!                      b >> 6 = 0, 1, 2: the next `size` stream bytes, 1, 64 or 4096 times
//!                                        (copies go in reads of up to 8 KiB)
//!                      b >> 6 = 3:       size x 256 KiB of filler ('x'), in 8 KiB reads; it
//!                                        uses no stream bytes
//!               with k = 0 the whole stream is fed in one call
//! the rest      the client byte stream
//! ```
//!
//! Feeding stops at the cap: 72 KiB is enough for a held COM_INIT_DB over 4096 bytes and a
//! statement past the 64 KiB audit cap; with the large bit, filler makes the body of a 16 MiB
//! packet (payload 0xffffff, continued in the next packet) from a few bytes of input. Filler
//! rather than repeated input keeps such runs cheap: 'x' as a header is a 7.5 MiB packet with
//! sequence id 0x78, not millions of tiny ones.
//!
//! The steps are applied as the relay does: `Forward(range)` indexes the chunk just fed. The
//! `DatabaseCheck` denies the database `secret` and allows every other name.
//!
//! Checks, beyond "no panic":
//! * the outcome (forwarded bytes, replies, audits, database switches) is identical to feeding
//!   the same bytes in one call, and to a whole-packet reference model: the forwarded bytes are
//!   the input with whole packets removed (refused commands and what continues them, and an
//!   incomplete held command or header at the end); without a refusal and ending on a packet
//!   boundary they are the input exactly;
//! * each reply is a well-formed ERR packet: sequence id one past the refused packet's, the
//!   model's error code, SQLSTATE 42000, and the audit error cut to 500 bytes as the message;
//! * a `PrepareWatcher` fed the same chunks (after the filter, sharing its prepared statements)
//!   does not panic and changes nothing but the texts of `execute` audits.
#![no_main]

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::audit::{SessionFields, Statement, StatementCapture, shown_text};
use portcullis::proxy::mysql::codec::{self, MAX_PAYLOAD, command};
use portcullis::proxy::mysql::filter::{CommandFilter, DatabaseCheck, MAX_HELD_QUERY, PrepareWatcher, Prepared};
use portcullis::proxy::mysql::sql::{UseStatement, use_statement};
use portcullis::proxy::relay::{ClientFilter, Step, UpstreamObserver};

const DENIED: &str = "secret";
/// The longest COM_INIT_DB the filter holds back to check (`MAX_HELD` in filter.rs).
const MAX_HELD: usize = 4096;
const MAX_FED: usize = 72 * 1024;
const MAX_FED_LARGE: usize = 17 * 1024 * 1024;
/// How many times modes 0-2 feed their chunk.
const REPEATS: [usize; 3] = [1, 64, 4096];
/// Mode 3 feeds `size` times this many filler bytes, or `FILL_LARGE` with the large bit.
const FILL: usize = 1024;
const FILL_LARGE: usize = 256 * 1024;
/// The filler, one relay read (8 KiB) of it.
static FILLER: [u8; 8192] = [b'x'; 8192];
/// Past this many bytes fed the watcher run is skipped: it adds nothing but time.
const MAX_WATCHED: usize = 1024 * 1024;

thread_local! {
    /// Byte buffers kept from one run to the next: fresh 17 MiB buffers (ASan hands out new
    /// pages after each free) made page faults most of the cost of a large run.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn buffer() -> Vec<u8> {
    let mut b = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    b.clear();
    b
}

fn recycle(b: Vec<u8>) {
    POOL.with(|p| p.borrow_mut().push(b));
}

/// What a run did, as the relay would see it.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    forwarded: Vec<u8>,
    replies: Vec<Vec<u8>>,
    audits: Vec<(Statement, Option<String>)>,
    switches: Vec<String>,
    error: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let k = usize::from(flags & 0x0f).min(rest.len());
    let audit = flags & 0x10 == 0;
    let large = flags & 0x20 != 0;
    let cap = if large { MAX_FED_LARGE } else { MAX_FED };
    let (schedule, stream) = rest.split_at(k);

    // The feed plan: (read, times), and the bytes it feeds.
    let mut plan: Vec<(Cow<[u8]>, usize)> = Vec::new();
    let mut fed = buffer();
    if schedule.is_empty() {
        plan.push((Cow::Borrowed(stream), 1));
        fed.extend_from_slice(stream);
    } else {
        let mut pos = 0;
        for &b in schedule.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let size = usize::from(b & 0x3f) + 1;
            let mode = usize::from(b >> 6);
            if mode == 3 {
                // Filler, in reads of 8 KiB like the relay's; no stream bytes are used.
                let wanted = size * if large { FILL_LARGE } else { FILL };
                let n = wanted.min(cap - fed.len());
                fed.resize(fed.len() + n, FILLER[0]);
                plan.push((Cow::Borrowed(&FILLER[..]), n / FILLER.len()));
                plan.push((Cow::Borrowed(&FILLER[..n % FILLER.len()]), 1));
                if n < wanted {
                    break;
                }
                continue;
            }
            let chunk = &stream[pos..(pos + size).min(stream.len())];
            pos += chunk.len();
            let wanted = REPEATS[mode];
            let times = wanted.min((cap - fed.len()) / chunk.len());
            for _ in 0..times {
                fed.extend_from_slice(chunk);
            }
            if times == 1 {
                plan.push((Cow::Borrowed(chunk), 1));
            } else {
                // Repeated: as many whole copies per read as fit in 8 KiB.
                let per_read = (FILLER.len() / chunk.len()).min(times).max(1);
                plan.push((Cow::Owned(chunk.repeat(per_read)), times / per_read));
                plan.push((Cow::Owned(chunk.repeat(times % per_read)), 1));
            }
            if times < wanted {
                break;
            }
        }
    }
    plan.retain(|(read, times)| !read.is_empty() && *times > 0);

    check(&plan, &fed, audit);
    recycle(fed);
});

/// Runs the filter on the plan, chunked and in one call, and checks the outcomes.
fn check(plan: &[(Cow<[u8]>, usize)], fed: &[u8], audit: bool) {
    // Chunked, as the relay feeds it.
    let chunked = run(plan, audit, Arc::default(), false);
    // In one call: chunking must not matter.
    let whole = run(&[(Cow::Borrowed(fed), 1)], audit, Arc::default(), false);
    assert_eq!(chunked.error, whole.error, "chunked vs one-shot error");
    assert!(chunked == whole, "chunked vs one-shot outcome differ:\n{}", diff(&chunked, &whole));
    assert!(chunked.error.is_none(), "the filter failed: {:?}", chunked.error);

    // Against the whole-packet model.
    let model = model(fed, audit);
    assert!(chunked.forwarded.len() <= fed.len());
    assert!(chunked.forwarded == model.forwarded, "forwarded bytes differ from the model ({} vs {} bytes)", chunked.forwarded.len(), model.forwarded.len());
    if model.replies.is_empty() {
        assert!(fed.starts_with(&chunked.forwarded), "forwarded bytes are not a prefix of the input");
        if model.ends_on_boundary {
            assert!(chunked.forwarded == fed, "no refusal, yet the forwarded bytes are not the input");
        }
    }
    assert_eq!(chunked.switches, model.switches);
    let audits: Vec<(&Statement, bool)> = chunked.audits.iter().map(|(s, e)| (s, e.is_some())).collect();
    let model_audits: Vec<(&Statement, bool)> = model.audits.iter().map(|(s, e)| (s, *e)).collect();
    assert_eq!(audits, model_audits, "audits differ from the model");
    if !audit {
        // Refusals are audited whatever the setting; nothing else is.
        assert!(chunked.audits.iter().all(|(s, e)| e.is_some() || !matches!(s.kind, "query" | "prepare" | "execute")));
    }

    // Every reply is an ERR packet for a refused command, carrying the audit's error.
    assert_eq!(chunked.replies.len(), model.replies.len());
    let errors = chunked.audits.iter().filter_map(|(_, e)| e.as_deref());
    assert_eq!(errors.clone().count(), chunked.replies.len(), "a refusal without a reply, or a reply without a refusal");
    for ((reply, &(seq, code)), error) in chunked.replies.iter().zip(&model.replies).zip(errors) {
        let (len, got_seq) = codec::header(reply[..4].try_into().unwrap());
        assert_eq!((len, got_seq), (reply.len() - 4, seq), "reply header");
        let payload = &reply[4..];
        assert!(payload.len() >= 9 && payload[0] == 0xff && payload[3] == b'#', "not an ERR packet: {payload:02x?}");
        let err = codec::parse_err(payload).expect("reply is not an ERR packet");
        assert_eq!((err.code, err.sqlstate.as_str()), (code, "42000"));
        assert!(err.message.len() <= 500);
        assert_eq!(err.message, shown_text(error.as_bytes(), 500));
    }

    if fed.len() <= MAX_WATCHED {
        check_watched(plan, audit, &chunked);
    }
    for b in [chunked.forwarded, whole.forwarded, model.forwarded] {
        recycle(b);
    }
}

/// The database side, sharing the prepared statements: no panic, and only `execute` texts may
/// change.
fn check_watched(plan: &[(Cow<[u8]>, usize)], audit: bool, chunked: &Outcome) {
    let watched = run(plan, audit, Arc::default(), true);
    assert!(watched.forwarded == chunked.forwarded, "the watcher changed the forwarded bytes");
    assert_eq!(watched.replies, chunked.replies);
    assert_eq!(watched.switches, chunked.switches);
    assert_eq!(watched.audits.len(), chunked.audits.len());
    for ((w, we), (c, ce)) in watched.audits.iter().zip(&chunked.audits) {
        assert_eq!(we, ce);
        if c.kind == "execute" {
            assert_eq!((w.kind, w.statement_id), (c.kind, c.statement_id));
        } else {
            assert_eq!(w, c);
        }
    }
    recycle(watched.forwarded);
}

/// Feeds the plan to a fresh filter (and, with `watch`, the same chunks to a `PrepareWatcher`
/// after it), applying the steps as the relay does. Stops at the first error.
fn run(plan: &[(Cow<[u8]>, usize)], audit: bool, prepared: Arc<Mutex<Prepared>>, watch: bool) -> Outcome {
    let check: DatabaseCheck = Box::new(|_, name| if name == DENIED { Err("not in dbNames".into()) } else { Ok(()) });
    let mut filter = CommandFilter::new(audit, prepared.clone(), check);
    let mut watcher = PrepareWatcher::new(prepared);
    let fields = SessionFields::default();
    let mut out = Outcome { forwarded: buffer(), ..Outcome::default() };
    let mut steps = Vec::new();
    for (chunk, times) in plan {
        let chunk = &chunk[..];
        for _ in 0..*times {
            let result = filter.feed(chunk, &fields, &mut steps);
            for step in steps.drain(..) {
                match step {
                    Step::Forward(range) => {
                        assert!(range.start <= range.end && range.end <= chunk.len(), "Forward({range:?}) of a {}-byte read", chunk.len());
                        out.forwarded.extend_from_slice(&chunk[range]);
                    }
                    Step::ForwardOwned(bytes) => out.forwarded.extend_from_slice(&bytes),
                    Step::Reply(bytes) => out.replies.push(bytes),
                    Step::Audit { statement, error } => out.audits.push((statement, error)),
                    Step::SwitchDatabase(name) => out.switches.push(name),
                    #[allow(unreachable_patterns)]
                    other => panic!("the MySQL filter produced {other:?}"),
                }
            }
            if let Err(e) = result {
                out.error = Some(e.to_string());
                return out;
            }
            if watch {
                watcher.feed(chunk);
            }
        }
    }
    out
}

fn diff(a: &Outcome, b: &Outcome) -> String {
    let mut s = String::new();
    if a.forwarded != b.forwarded {
        let at = a.forwarded.iter().zip(&b.forwarded).position(|(x, y)| x != y);
        s += &format!("forwarded: {} vs {} bytes, first difference at {at:?}\n", a.forwarded.len(), b.forwarded.len());
    }
    if a.replies != b.replies {
        s += &format!("replies: {:02x?} vs {:02x?}\n", a.replies, b.replies);
    }
    if a.audits != b.audits {
        s += &format!("audits: {:?} vs {:?}\n", a.audits, b.audits);
    }
    if a.switches != b.switches {
        s += &format!("switches: {:?} vs {:?}\n", a.switches, b.switches);
    }
    s
}

/// What the filter must do, worked out on whole packets.
#[derive(Default)]
struct Model {
    forwarded: Vec<u8>,
    /// (sequence id, error code) of each ERR reply.
    replies: Vec<(u8, u16)>,
    /// Each audit, and whether it records an error.
    audits: Vec<(Statement, bool)>,
    switches: Vec<String>,
    /// The stream ended between packets.
    ends_on_boundary: bool,
}

fn model(fed: &[u8], audit: bool) -> Model {
    #[derive(PartialEq)]
    enum Continues {
        Nothing,
        Passed,
        Discarded,
    }
    let mut m = Model { forwarded: buffer(), ..Model::default() };
    let mut continues = Continues::Nothing;
    // The command whose statement is being collected (over 16 MiB packets too) and its text.
    let mut capture: Option<(u8, StatementCapture)> = None;
    let mut pos = 0;
    // The previous packet's (sequence id, non-empty?): LOCAL INFILE uploads wrap from 255 to 0.
    let mut previous = (0u8, false);
    loop {
        let Some(head) = fed.get(pos..pos + 4) else {
            m.ends_on_boundary = pos == fed.len();
            break;
        };
        let (len, seq) = codec::header(head.try_into().unwrap());
        let end = pos + 4 + len;
        // Only the first packet of a command has sequence id 0 (and a command byte), unless it
        // follows a non-empty packet with sequence id 255 (the upload goes on).
        let starts_command = continues == Continues::Nothing && seq == 0 && len > 0 && previous != (255, true);
        if !(starts_command && fed.len() < pos + 5) {
            previous = (seq, len > 0);
        }
        if starts_command && fed.len() < pos + 5 {
            break; // the filter waits for the command byte
        }
        let cmd = starts_command.then(|| fed[pos + 4]);
        let refused_kind = matches!(cmd, Some(command::INIT_DB | command::CHANGE_USER | command::BINLOG_DUMP | command::BINLOG_DUMP_GTID | command::REGISTER_SLAVE))
            || (cmd == Some(command::QUERY) && len <= MAX_HELD_QUERY);
        if refused_kind || continues == Continues::Discarded {
            // Held back until whole: nothing of it goes out before.
            let Some(packet) = fed.get(pos..end) else { break };
            if continues != Continues::Discarded {
                let reply_seq = seq.wrapping_add(1);
                let mut refuse = |kind: &'static str, text: &[u8], code: u16| {
                    m.replies.push((reply_seq, code));
                    m.audits.push((Statement::from_text(kind, text, None), true));
                };
                match cmd {
                    Some(command::INIT_DB) if len <= MAX_HELD => {
                        let name = String::from_utf8_lossy(&packet[5..]).into_owned();
                        if name == DENIED {
                            refuse("init_db", name.as_bytes(), 1044);
                        } else {
                            m.forwarded.extend_from_slice(packet);
                            m.audits.push((Statement::from_text("init_db", name.as_bytes(), None), false));
                            m.switches.push(name);
                        }
                    }
                    Some(command::INIT_DB) => refuse("init_db", b"", 1102),
                    // A short query, held until whole: a USE is checked like COM_INIT_DB, one
                    // among other statements refused; anything else goes on.
                    Some(command::QUERY) => {
                        let text = &packet[5..];
                        match use_statement(text) {
                            UseStatement::Alone(name) if name == DENIED => refuse("query", text, 1044),
                            UseStatement::Mixed => refuse("query", text, 1235),
                            found => {
                                m.forwarded.extend_from_slice(packet);
                                if audit {
                                    m.audits.push((Statement::from_text("query", text, None), false));
                                }
                                if let UseStatement::Alone(name) = found {
                                    m.switches.push(name);
                                }
                            }
                        }
                    }
                    Some(command::CHANGE_USER) => refuse("change_user", b"", 1235),
                    _ => refuse("replication", b"", 1235),
                }
            }
            continues = if len == MAX_PAYLOAD { Continues::Discarded } else { Continues::Nothing };
            pos = end;
            continue;
        }
        // Forwarded as it comes.
        let have = end.min(fed.len());
        m.forwarded.extend_from_slice(&fed[pos..have]);
        match cmd {
            Some(c) => {
                let wanted = match c {
                    command::QUERY | command::STMT_EXECUTE => audit,
                    command::STMT_PREPARE | command::STMT_CLOSE => true,
                    _ => false,
                };
                capture = wanted.then(|| {
                    let mut text = StatementCapture::default();
                    text.push(&fed[pos + 5..have]);
                    (c, text)
                });
            }
            None if continues == Continues::Passed => {
                if let Some((_, text)) = capture.as_mut() {
                    text.push(&fed[pos + 4..have]);
                }
            }
            None => capture = None,
        }
        if end > fed.len() {
            break;
        }
        if len == MAX_PAYLOAD {
            continues = Continues::Passed;
        } else {
            continues = Continues::Nothing;
            if let Some((c, text)) = capture.take() {
                // The text is captured by the same StatementCapture as the filter's (the 64 KiB
                // prefix, the length and the hash); which bytes go in is the model's.
                match c {
                    command::QUERY => m.audits.push((text.finish("query", None), false)),
                    command::STMT_PREPARE if audit => m.audits.push((text.finish("prepare", None), false)),
                    command::STMT_EXECUTE => {
                        // No watcher in this run: no statement id was ever learnt.
                        let mut statement = Statement::from_text("execute", b"", None);
                        statement.statement_id = text.prefix().get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                        m.audits.push((statement, false));
                    }
                    _ => {}
                }
            }
        }
        pos = end;
    }
    m
}
