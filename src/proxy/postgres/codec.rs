//! I/O-free PostgreSQL wire codec: startup packets, message frames, the backend messages the
//! proxy writes itself, and a scanner that finds statements in the client's byte stream.

use bytes::{BufMut, Bytes, BytesMut};

/// `SSLRequest` code.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// The longest startup packet accepted (PostgreSQL's own limit).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The longest regular message accepted in either direction before the relay (1 GiB, like PostgreSQL).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// The longest backend message accepted while the proxy itself parses the upstream (auth phase).
pub const MAX_AUTH_PHASE_MESSAGE: usize = 1 << 20;

/// Codec errors: the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A length field is outside the allowed range.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// The startup packet names an unknown protocol version or request code.
    #[error("unsupported frontend protocol {major}.{minor}: this proxy speaks protocol 3")]
    UnsupportedProtocol { major: u16, minor: u16 },
    /// A parameter is not valid UTF-8 or not NUL-terminated.
    #[error("malformed startup parameters: {0}")]
    BadParameters(&'static str),
    /// A message is shorter than its contents require.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// A parsed startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssEncRequest,
    /// `CancelRequest` with the backend pid and secret key.
    Cancel { pid: u32, key: Vec<u8> },
    /// `StartupMessage` with its protocol version and parameters, in order.
    Startup { version: u32, params: Vec<(String, String)> },
}

impl StartupPacket {
    /// The value of a startup parameter.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads the total length (including itself) from a 4-byte startup header.
pub fn startup_length(header: [u8; 4]) -> Result<usize, CodecError> {
    let len = i32::from_be_bytes(header);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(CodecError::BadLength(i64::from(len)));
    }
    Ok(len as usize)
}

/// Decodes a startup packet body (everything after the length field).
pub fn decode_startup(body: &[u8]) -> Result<StartupPacket, CodecError> {
    let code = u32::from_be_bytes(body.get(..4).ok_or(CodecError::Malformed("startup"))?.try_into().unwrap_or_default());
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() >= 8 && rest.len() <= 260 => {
            let pid = u32::from_be_bytes(rest[..4].try_into().unwrap_or_default());
            Ok(StartupPacket::Cancel { pid, key: rest[4..].to_vec() })
        }
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(CodecError::Malformed("request")),
        version if version >> 16 == 3 => Ok(StartupPacket::Startup { version, params: decode_params(rest)? }),
        other => Err(CodecError::UnsupportedProtocol { major: (other >> 16) as u16, minor: (other & 0xffff) as u16 }),
    }
}

fn decode_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, CodecError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut rest).ok_or(CodecError::BadParameters("missing terminator"))?;
        if key.is_empty() {
            break;
        }
        let value = take_cstr(&mut rest).ok_or(CodecError::BadParameters("missing value"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| CodecError::BadParameters("a name is not UTF-8"))?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| CodecError::BadParameters("a value is not UTF-8"))?;
        params.push((key, value));
    }
    if !rest.is_empty() {
        return Err(CodecError::BadParameters("bytes after the terminator"));
    }
    Ok(params)
}

/// Splits a NUL-terminated string off the front of `buf`.
pub fn take_cstr<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = buf.iter().position(|&b| b == 0)?;
    let s = &buf[..end];
    *buf = &buf[end + 1..];
    Some(s)
}

/// Encodes a `StartupMessage`.
pub fn encode_startup(version: u32, params: &[(String, String)]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_u32((body.len() + 4) as u32);
    out.put_slice(&body);
    out.freeze()
}

/// Encodes an `SSLRequest`.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

/// Encodes a `CancelRequest`.
pub fn encode_cancel(pid: u32, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(12 + key.len());
    out.put_u32((12 + key.len()) as u32);
    out.put_u32(CANCEL_REQUEST);
    out.put_u32(pid);
    out.put_slice(key);
    out.freeze()
}

/// Reads a regular message header (tag, body length) from 5 bytes.
pub fn message_header(header: [u8; 5], max: usize) -> Result<(u8, usize), CodecError> {
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 || len as usize - 4 > max {
        return Err(CodecError::BadLength(i64::from(len)));
    }
    Ok((header[0], len as usize - 4))
}

/// Encodes a regular message.
pub fn encode_message(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_u32((body.len() + 4) as u32);
    out.put_slice(body);
    out.freeze()
}

/// Severity of an `ErrorResponse`.
#[derive(Debug, Clone, Copy)]
pub enum Severity {
    /// The session ends.
    Fatal,
    /// The statement failed.
    Error,
}

/// Encodes an `ErrorResponse` with SQLSTATE `code`, a message and an optional hint.
pub fn error_response(severity: Severity, code: &str, message: &str, hint: Option<&str>) -> Bytes {
    let sev = match severity {
        Severity::Fatal => "FATAL",
        Severity::Error => "ERROR",
    };
    let mut body = BytesMut::new();
    for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', message)] {
        body.put_u8(field);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    if let Some(h) = hint {
        body.put_u8(b'H');
        body.put_slice(h.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    encode_message(b'E', &body)
}

/// The fields of an `ErrorResponse` or `NoticeResponse`: (field code, value).
pub fn decode_error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut rest = body;
    let mut fields = Vec::new();
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        rest = tail;
        match take_cstr(&mut rest) {
            Some(v) => fields.push((code, String::from_utf8_lossy(v).into_owned())),
            None => break,
        }
    }
    fields
}

/// Encodes a `PasswordMessage`.
pub fn password_message(password: &str) -> Bytes {
    let mut body = Vec::with_capacity(password.len() + 1);
    body.extend_from_slice(password.as_bytes());
    body.push(0);
    encode_message(b'p', &body)
}

/// Encodes `BackendKeyData`.
pub fn backend_key_data(pid: u32, key: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(4 + key.len());
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(key);
    encode_message(b'K', &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_round_trips() {
        let params = vec![("user".to_string(), "alice".to_string()), ("database".to_string(), "orders".to_string())];
        let wire = encode_startup(196_608, &params);
        let len = startup_length(wire[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, wire.len());
        assert_eq!(decode_startup(&wire[4..]).unwrap(), StartupPacket::Startup { version: 196_608, params });
    }

    #[test]
    fn ssl_and_cancel_requests_round_trip() {
        let ssl = encode_ssl_request();
        assert_eq!(decode_startup(&ssl[4..]).unwrap(), StartupPacket::SslRequest);
        let cancel = encode_cancel(42, &[1, 2, 3, 4]);
        assert_eq!(decode_startup(&cancel[4..]).unwrap(), StartupPacket::Cancel { pid: 42, key: vec![1, 2, 3, 4] });
    }

    #[test]
    fn bad_startup_packets_are_errors() {
        assert_eq!(startup_length(0x8000_0000u32.to_be_bytes()), Err(CodecError::BadLength(-2_147_483_648)));
        assert!(startup_length(4u32.to_be_bytes()).is_err());
        assert!(startup_length(((MAX_STARTUP_LEN + 1) as u32).to_be_bytes()).is_err());
        assert!(matches!(decode_startup(&0x0002_0000u32.to_be_bytes()), Err(CodecError::UnsupportedProtocol { major: 2, .. })));
        let mut bad_utf8 = 196_608u32.to_be_bytes().to_vec();
        bad_utf8.extend_from_slice(b"user\0\xff\xfe\0\0");
        assert_eq!(decode_startup(&bad_utf8), Err(CodecError::BadParameters("a value is not UTF-8")));
        let mut unterminated = 196_608u32.to_be_bytes().to_vec();
        unterminated.extend_from_slice(b"user\0alice");
        assert!(decode_startup(&unterminated).is_err());
        assert!(decode_startup(&[0, 1]).is_err());
    }

    #[test]
    fn error_response_round_trips_its_fields() {
        let wire = error_response(Severity::Fatal, "28000", "denied", Some("ask"));
        let (tag, len) = message_header(wire[..5].try_into().unwrap(), 1000).unwrap();
        assert_eq!(tag, b'E');
        let fields = decode_error_fields(&wire[5..5 + len]);
        assert!(fields.contains(&(b'C', "28000".into())));
        assert!(fields.contains(&(b'M', "denied".into())));
        assert!(fields.contains(&(b'H', "ask".into())));
    }

    #[test]
    fn message_header_rejects_lengths_out_of_range() {
        assert!(message_header([b'Q', 0, 0, 0, 3], 100).is_err());
        assert!(message_header([b'Q', 0x7f, 0xff, 0xff, 0xff], 100).is_err());
        assert_eq!(message_header([b'Q', 0, 0, 0, 9], 100), Ok((b'Q', 5)));
    }
}

#[cfg(test)]
mod no_panic {
    //! Pseudo-random inputs through every decoder: errors are fine, panics are not. (The
    //! `fuzz/` targets do this coverage-guided; this keeps a cheap version in every test run.)
    use super::*;

    #[test]
    fn random_bytes_never_panic_the_decoders() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 3 == 0 && bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&[0, 3, 0, 0]);
            }
            let _ = decode_startup(&bytes);
            let _ = decode_error_fields(&bytes);
            if bytes.len() >= 5 {
                let _ = message_header(bytes[..5].try_into().unwrap(), 1 << 20);
                let _ = startup_length(bytes[..4].try_into().unwrap());
            }
            let mut scanner = crate::proxy::postgres::scanner::ClientScanner::new(true);
            let _ = scanner.feed(&bytes, &mut Vec::new());
        }
    }
}
