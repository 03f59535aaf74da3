//! Fuzzes the MySQL login-phase codec the way the proxy drives it (`read_packet` in
//! `src/proxy/mysql/login.rs`): a 4-byte header goes to `codec::header`; a packet longer than
//! `MAX_LOGIN_PACKET` is refused, otherwise exactly `len` payload bytes follow. The input is a
//! byte stream read packet after packet until a packet is refused or the stream runs short
//! (where `read_exact` would fail and the proxy would stop).
//!
//! Every payload goes through every parser that sees peer-controlled bytes during login: from
//! the client `SslRequest::parse` and `HandshakeResponse::parse`, from the database
//! `Greeting::parse`, `parse_auth_reply` and `parse_err`. The same input also drives
//! `err_packet`: byte 0 is the sequence id, bytes 1-2 the error code (little-endian), byte 3 & 7
//! the length of the SQLSTATE that follows, and the rest the message (both shown as lossy UTF-8,
//! as the proxy passes on a database's own SQLSTATE and message).
//!
//! Checks, beyond "no panic":
//! * `packet(seq, payload)` rebuilds the packet; `SslRequest` accepts exactly >= 32 bytes and
//!   round-trips;
//! * an accepted `HandshakeResponse` has CLIENT_PROTOCOL_41, the prefix `SslRequest::parse`
//!   gives, no NUL in its strings, and `parse(encode(x)) == x`;
//! * an accepted `Greeting` starts with protocol 10 and, when its scramble is 20 bytes,
//!   `parse(encode(x)) == x`;
//! * `parse_err` and `parse_auth_reply` accept exactly what their first byte promises, and
//!   agree with each other;
//! * `err_packet(seq, code, state, message)` parses back with its sequence id, the code, a
//!   5-byte SQLSTATE (5 characters when ASCII) and the message cut to at most 500 bytes.
//!
//! Known findings (M1-M4 in docs/fuzzing.md) are tolerated so that the fuzzer can look further;
//! `PORTCULLIS_FUZZ_STRICT=1` in the environment asserts them as well (`=M1,M3`: only those).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::mysql::codec::{
    self, AuthReply, Greeting, HandshakeResponse, MAX_LOGIN_PACKET, SslRequest, caps, parse_auth_reply, parse_err,
};

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    // Each packet consumes at least its 4-byte header, so this terminates.
    while let Some(head) = stream.get(..4) {
        let (len, seq) = codec::header(head.try_into().unwrap());
        assert!(len <= codec::MAX_PAYLOAD);
        assert_eq!(seq, head[3]);
        if len > MAX_LOGIN_PACKET {
            break; // read_packet: InvalidData, TooLong
        }
        let Some(packet) = stream.get(..4 + len) else { break }; // read_exact: UnexpectedEof
        let payload = &packet[4..];
        assert_eq!(codec::packet(seq, payload), packet, "packet() does not rebuild the header");
        check_client(payload);
        check_server(payload);
        stream = &stream[4 + len..];
    }
    check_err_packet(data);
});

/// Whether a known finding is asserted too: `PORTCULLIS_FUZZ_STRICT=1` (or `all`) asserts them
/// all, `PORTCULLIS_FUZZ_STRICT=M1,M3` only those.
fn strict(finding: &str) -> bool {
    static STRICT: OnceLock<Vec<String>> = OnceLock::new();
    let wanted = STRICT.get_or_init(|| {
        let v = std::env::var("PORTCULLIS_FUZZ_STRICT").unwrap_or_default();
        v.split(',').map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty()).collect()
    });
    wanted.iter().any(|w| w == finding || w == "1" || w == "ALL")
}

/// What a client sends: an SSLRequest, then (over TLS) its HandshakeResponse41.
fn check_client(payload: &[u8]) {
    let request = SslRequest::parse(payload);
    match &request {
        Ok(r) => {
            assert!(payload.len() >= 32);
            let encoded = r.encode();
            assert_eq!(encoded.len(), 32);
            assert_eq!(encoded[..9], payload[..9], "SslRequest re-encodes other fields");
            assert_eq!(SslRequest::parse(&encoded).as_ref(), Ok(r));
        }
        Err(_) => assert!(payload.len() < 32, "SslRequest refused {} bytes", payload.len()),
    }

    let Ok(response) = HandshakeResponse::parse(payload) else { return };
    let c = response.prefix.capabilities;
    assert_eq!(Ok(response.prefix), request, "the response's prefix is not its SslRequest");
    assert_ne!(c & caps::PROTOCOL_41, 0, "a pre-4.1 response was accepted");
    assert!(!response.user.contains('\0'));
    if let Some(database) = &response.database {
        assert!(c & caps::CONNECT_WITH_DB != 0 && !database.is_empty() && !database.contains('\0'), "database {database:?}");
    }
    if let Some(plugin) = &response.auth_plugin {
        assert!(c & caps::PLUGIN_AUTH != 0 && !plugin.contains('\0'), "plugin {plugin:?}");
    }
    assert!(response.attributes.is_empty() || c & caps::CONNECT_ATTRS != 0);
    if c & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA == 0 && c & caps::SECURE_CONNECTION != 0 {
        assert!(response.auth_response.len() <= 255);
    }

    // Lenient parsing accepts missing trailing parts, so encode(x) need not be the input; but
    // it must say the same thing.
    let mut expected = response.clone();
    // Finding M1: a missing plugin name (None) is encoded as an empty one (Some("")).
    if !strict("M1") && c & caps::PLUGIN_AUTH != 0 && expected.auth_plugin.is_none() {
        expected.auth_plugin = Some(String::new());
    }
    // Finding M2: without CLIENT_SECURE_CONNECTION and CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA the
    // auth response is NUL-terminated, but encode() writes a length byte instead.
    if !strict("M2") && c & (caps::SECURE_CONNECTION | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA) == 0 && !expected.auth_response.is_empty() {
        return;
    }
    let encoded = response.encode();
    assert_eq!(HandshakeResponse::parse(&encoded), Ok(expected), "parse(encode(x)) != x for {response:?}, encoded as {encoded:02x?}");
}

/// What a database sends: its greeting (or an ERR), then OK, ERR, AuthSwitchRequest or
/// AuthMoreData.
fn check_server(payload: &[u8]) {
    if let Ok(greeting) = Greeting::parse(payload) {
        assert_eq!(payload[0], 10);
        assert!(greeting.scramble.len() >= 8, "scramble of {} bytes", greeting.scramble.len());
        assert!(!greeting.auth_plugin.contains('\0'));
        assert!(greeting.auth_plugin.is_empty() || greeting.capabilities & caps::PLUGIN_AUTH != 0);
        if greeting.scramble.len() == 20 && !greeting.server_version.contains('\0') {
            let encoded = greeting.encode();
            assert_eq!(Greeting::parse(&encoded).as_ref(), Ok(&greeting), "greeting encoded as {encoded:02x?}");
        }
    }

    let err = parse_err(payload);
    match &err {
        Ok(e) => {
            assert!(payload[0] == 0xff && payload.len() >= 3);
            assert_eq!(e.code, u16::from_le_bytes([payload[1], payload[2]]));
            if payload[3..].first() == Some(&b'#') && payload.len() >= 9 {
                assert_eq!(e.sqlstate, String::from_utf8_lossy(&payload[4..9]));
                assert_eq!(e.message, String::from_utf8_lossy(&payload[9..]));
            } else {
                assert_eq!(e.sqlstate, "HY000");
                assert_eq!(e.message, String::from_utf8_lossy(&payload[3..]));
            }
        }
        Err(_) => assert!(payload.first() != Some(&0xff) || payload.len() < 3),
    }

    match parse_auth_reply(payload) {
        Ok(AuthReply::Ok) => assert_eq!(payload[0], 0x00),
        Ok(AuthReply::MoreData) => assert_eq!(payload[0], 0x01),
        Ok(AuthReply::Err(e)) => assert_eq!(Ok(e), err),
        Ok(AuthReply::Switch { plugin }) => {
            assert_eq!(payload[0], 0xfe);
            assert!(!plugin.contains('\0'));
            if payload.len() == 1 {
                assert_eq!(plugin, "mysql_old_password");
            }
        }
        Err(_) => assert!(!matches!(payload.first(), Some(0x00 | 0x01 | 0xfe)) && err.is_err(), "auth reply refused"),
    }
}

/// The proxy's own ERR packets, with a SQLSTATE and message that may come from the database.
fn check_err_packet(data: &[u8]) {
    let [seq, c0, c1, state_len, rest @ ..] = data else { return };
    let state_len = usize::from(state_len & 7).min(rest.len());
    let state = String::from_utf8_lossy(&rest[..state_len]);
    let message = String::from_utf8_lossy(&rest[state_len..]);
    let code = u16::from_le_bytes([*c0, *c1]);

    let wire = codec::err_packet(*seq, code, &state, &message);
    let (len, got_seq) = codec::header(wire[..4].try_into().unwrap());
    assert_eq!((len, got_seq), (wire.len() - 4, *seq));
    let payload = &wire[4..];
    assert!(payload.len() >= 9 && payload[0] == 0xff && payload[3] == b'#');
    let err = parse_err(payload).expect("err_packet does not parse");
    assert_eq!(err.code, code);

    // Exactly 5 ASCII characters of SQLSTATE on the wire: the state when it is one, else HY000
    // (finding M4, fixed: a database's non-ASCII or odd-length state is never passed on).
    let want: &[u8] = if state.len() == 5 && state.bytes().all(|b| b.is_ascii_alphanumeric()) { state.as_bytes() } else { b"HY000" };
    assert_eq!(&payload[4..9], want);
    assert_eq!(err.sqlstate.as_bytes(), want, "SQLSTATE {state:?} sent as {:?}", err.sqlstate);

    // The message: valid UTF-8, at most 500 bytes, a prefix of what was given.
    assert!(err.message.len() <= 500, "message of {} bytes", err.message.len());
    assert_eq!(err.message.as_bytes(), &payload[9..]);
    if message.len() <= 500 {
        assert_eq!(err.message, message);
    }
    let mut shown = err.message.as_str();
    if !strict("M3") && !message.starts_with(shown) {
        // Finding M3: a 4-byte character that straddles the 500-byte cut is shown as U+FFFD
        // (3 bytes), which then fits, instead of being dropped.
        shown = shown.strip_suffix('\u{fffd}').unwrap_or(shown);
        assert!(message.starts_with(shown), "message {message:?} sent as {:?}", err.message);
        let next = message[shown.len()..].chars().next().map_or(0, char::len_utf8);
        assert_eq!((shown.len(), next), (497, 4), "message {message:?} sent as {:?}", err.message);
    }
    assert!(message.starts_with(shown), "message {message:?} sent as {:?}", err.message);
    // Nothing that fits is dropped: the cut is within a character of the 500-byte limit.
    if message.len() > 500 {
        assert!(shown.len() > 496, "message cut to {} bytes", shown.len());
    }
}
