//! Fuzzes the startup-phase codec the way the proxy drives it (`read_startup` in
//! `src/proxy/postgres/mod.rs`): a 4-byte length header goes to `startup_length`, then exactly
//! `len - 4` body bytes go to `decode_startup`. The input is a client byte stream, so packets are
//! read one after another (an `SSLRequest` followed by a `StartupMessage`, say) until a packet is
//! refused or the stream runs short (where `read_exact` would fail and the proxy would stop).
//!
//! Beyond "no panic", every packet the codec accepts must re-encode to exactly the bytes it came
//! from, and the same bytes are also run through `message_header` and `decode_error_fields`, the
//! other two parsers that see peer-controlled bytes during login.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::postgres::codec::{
    self, MAX_AUTH_PHASE_MESSAGE, MAX_STARTUP_LEN, StartupPacket, decode_error_fields, decode_startup, message_header,
    startup_length,
};

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    // Each accepted packet consumes at least 8 bytes, so this terminates.
    while let Some(header) = stream.get(..4) {
        let header: [u8; 4] = header.try_into().unwrap();
        let Ok(len) = startup_length(header) else { break };
        assert!((8..=MAX_STARTUP_LEN).contains(&len), "startup_length accepted {len}");
        // The proxy does `read_exact(&mut vec![0; len - 4])`: a short stream is an I/O error.
        let Some(packet) = stream.get(..len) else { break };
        let body = &packet[4..];
        check_error_fields(body);
        let Ok(decoded) = decode_startup(body) else { break };
        check_round_trip(&decoded, packet);
        stream = &stream[len..];
    }

    if let Some(header) = data.get(..5) {
        let header: [u8; 5] = header.try_into().unwrap();
        if let Ok((tag, len)) = message_header(header, MAX_AUTH_PHASE_MESSAGE) {
            assert_eq!(tag, header[0]);
            assert!(len <= MAX_AUTH_PHASE_MESSAGE);
            assert_eq!(len + 4, u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize);
            if let Some(body) = data.get(5..5 + len) {
                check_error_fields(body);
            }
        }
    }
    check_error_fields(data);
});

/// An accepted packet re-encodes to the very bytes it was decoded from.
fn check_round_trip(decoded: &StartupPacket, packet: &[u8]) {
    match decoded {
        StartupPacket::SslRequest => assert_eq!(packet, codec::encode_ssl_request()),
        StartupPacket::GssEncRequest => {
            assert_eq!(packet.len(), 8);
            assert_eq!(u32::from_be_bytes(packet[4..8].try_into().unwrap()), codec::GSSENC_REQUEST);
        }
        StartupPacket::Cancel { pid, key } => {
            assert!((4..=256).contains(&key.len()), "cancel key of {} bytes", key.len());
            assert_eq!(&codec::encode_cancel(*pid, key)[..], packet);
        }
        StartupPacket::Startup { version, params } => {
            assert_eq!(version >> 16, 3);
            for (k, v) in params {
                assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'), "bad parameter {k:?}={v:?}");
            }
            assert_eq!(&codec::encode_startup(*version, params)[..], packet);
        }
    }
}

/// `decode_error_fields` never panics, never reports the terminator as a field, and never
/// reports more fields than the body could hold (each needs a code byte and a NUL).
fn check_error_fields(body: &[u8]) {
    let fields = decode_error_fields(body);
    assert!(fields.len() <= body.len() / 2);
    for (code, value) in &fields {
        assert_ne!(*code, 0);
        assert!(!value.contains('\0'));
    }
}
