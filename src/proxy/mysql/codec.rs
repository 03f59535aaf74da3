//! The MySQL client/server protocol as far as the proxy speaks it, without I/O: packet
//! headers, the server greeting (HandshakeV10), the client's SSLRequest and
//! HandshakeResponse41, ERR packets and the AuthSwitchRequest.

/// Capability flags (`CLIENT_*`).
pub mod caps {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const RESERVED: u32 = 1 << 14;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;

    /// What the proxy offers clients: no compression, no query attributes, no MariaDB
    /// extensions, so both legs stay in a format the proxy can follow.
    pub const OFFERED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | SSL
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | RESERVED
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CAN_HANDLE_EXPIRED_PASSWORDS
        | SESSION_TRACK
        | DEPRECATE_EOF;

    /// Flags that change the shape of packets: if the client chose one, the database must
    /// support it too, or the two legs would disagree.
    pub const FORMAT: [(u32, &str); 5] = [
        (DEPRECATE_EOF, "CLIENT_DEPRECATE_EOF"),
        (SESSION_TRACK, "CLIENT_SESSION_TRACK"),
        (MULTI_RESULTS, "CLIENT_MULTI_RESULTS"),
        (PS_MULTI_RESULTS, "CLIENT_PS_MULTI_RESULTS"),
        (PROTOCOL_41, "CLIENT_PROTOCOL_41"),
    ];
}

/// Commands (`COM_*`) the proxy looks at.
pub mod command {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
}

/// The largest payload of one packet; a payload this long continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xff_ffff;
/// The largest login-phase packet the proxy accepts (greeting, handshake response, OK).
pub const MAX_LOGIN_PACKET: usize = 64 * 1024;
/// `utf8mb4_general_ci`, known to MySQL and MariaDB alike.
pub const DEFAULT_COLLATION: u8 = 45;
/// `SERVER_STATUS_AUTOCOMMIT`.
pub const STATUS_AUTOCOMMIT: u16 = 2;

/// A malformed packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A packet is shorter than its contents require.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A packet exceeds the limit for its phase.
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    /// A packet arrived with an unexpected sequence id.
    #[error("packet out of order: sequence id {got}, expected {expected}")]
    OutOfOrder { got: u8, expected: u8 },
    /// The client asked for something the proxy did not offer.
    #[error("the client asked for {0}, which the proxy did not offer")]
    NotOffered(&'static str),
}

/// The length and sequence id in a packet header.
pub fn header(bytes: [u8; 4]) -> (usize, u8) {
    (u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]) as usize, bytes[3])
}

/// One packet (payload < 16 MiB) with its header.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() < MAX_PAYLOAD);
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// An ERR packet (protocol 4.1 form, with the SQLSTATE).
pub fn err_packet(seq: u8, code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.push(b'#');
    // Exactly five ASCII characters, whatever a database sent.
    let state = if sqlstate.len() == 5 && sqlstate.bytes().all(|b| b.is_ascii_alphanumeric()) { sqlstate } else { "HY000" };
    payload.extend_from_slice(state.as_bytes());
    // Clients keep at most 512 bytes of a message.
    let message = crate::proxy::audit::shown_text(message.as_bytes(), 500);
    payload.extend_from_slice(message.as_bytes());
    packet(seq, &payload)
}

/// A parsed ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    /// The error number.
    pub code: u16,
    /// The SQLSTATE (`HY000` when absent).
    pub sqlstate: String,
    /// The message.
    pub message: String,
}

/// Parses an ERR packet payload (starting with 0xff).
pub fn parse_err(payload: &[u8]) -> Result<ErrPacket, CodecError> {
    if payload.first() != Some(&0xff) || payload.len() < 3 {
        return Err(CodecError::Malformed("ERR packet"));
    }
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let rest = &payload[3..];
    let (sqlstate, message) = match rest.first() {
        Some(b'#') if rest.len() >= 6 => (String::from_utf8_lossy(&rest[1..6]).into_owned(), &rest[6..]),
        _ => ("HY000".to_owned(), rest),
    };
    Ok(ErrPacket { code, sqlstate, message: String::from_utf8_lossy(message).into_owned() })
}

/// The server greeting (`Protocol::HandshakeV10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The server version string.
    pub server_version: String,
    /// The connection (thread) id.
    pub connection_id: u32,
    /// The scramble (20 bytes for the usual plugins).
    pub scramble: Vec<u8>,
    /// The capability flags (lower 32 bits).
    pub capabilities: u32,
    /// The default collation.
    pub collation: u8,
    /// The status flags.
    pub status: u16,
    /// The default authentication plugin.
    pub auth_plugin: String,
}

impl Greeting {
    /// Encodes the greeting's payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![10];
        out.extend_from_slice(self.server_version.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        let (part1, part2) = self.scramble.split_at(self.scramble.len().min(8));
        out.extend_from_slice(part1);
        out.extend(std::iter::repeat_n(0, 8 - part1.len()));
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.collation);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        out.push((self.scramble.len() + 1) as u8);
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(part2);
        out.extend(std::iter::repeat_n(0, 12usize.saturating_sub(part2.len())));
        out.push(0);
        out.extend_from_slice(self.auth_plugin.as_bytes());
        out.push(0);
        out
    }

    /// Parses a greeting payload.
    pub fn parse(payload: &[u8]) -> Result<Greeting, CodecError> {
        let bad = CodecError::Malformed("server greeting");
        let mut r = Reader::new(payload);
        if r.u8()? != 10 {
            return Err(CodecError::Malformed("server greeting (protocol version is not 10)"));
        }
        let server_version = r.nul_str().map_err(|_| bad.clone())?;
        let connection_id = r.u32()?;
        let mut scramble = r.take(8)?.to_vec();
        r.u8()?;
        let low = r.u16()? as u32;
        let (mut collation, mut status, mut capabilities, mut auth_plugin) = (DEFAULT_COLLATION, 0, low, String::new());
        if !r.is_empty() {
            collation = r.u8()?;
            status = r.u16()?;
            capabilities |= (r.u16()? as u32) << 16;
            let data_len = r.u8()? as usize;
            r.take(10)?;
            if capabilities & caps::SECURE_CONNECTION != 0 {
                let n = data_len.saturating_sub(8).max(13).min(r.remaining());
                let part2 = r.take(n)?;
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                scramble.extend_from_slice(part2);
            }
            if capabilities & caps::PLUGIN_AUTH != 0 {
                auth_plugin = r.nul_str_or_rest();
            }
        }
        Ok(Greeting { server_version, connection_id, scramble, capabilities, collation, status, auth_plugin })
    }
}

/// What a client sends before TLS (`Protocol::SSLRequest`) — the first 32 bytes of its
/// handshake response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    /// The capability flags.
    pub capabilities: u32,
    /// The maximum packet size the client wants.
    pub max_packet: u32,
    /// The client's collation.
    pub collation: u8,
}

impl SslRequest {
    /// Encodes the 32-byte payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.capabilities.to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.collation);
        out.extend_from_slice(&[0; 23]);
        out
    }

    /// Parses the fixed 32-byte prefix of a handshake response.
    pub fn parse(payload: &[u8]) -> Result<SslRequest, CodecError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32().map_err(|_| CodecError::Malformed("handshake response (shorter than 32 bytes)"))?;
        let max_packet = r.u32().map_err(|_| CodecError::Malformed("handshake response (shorter than 32 bytes)"))?;
        let collation = r.u8().map_err(|_| CodecError::Malformed("handshake response (shorter than 32 bytes)"))?;
        r.take(23).map_err(|_| CodecError::Malformed("handshake response (shorter than 32 bytes)"))?;
        Ok(SslRequest { capabilities, max_packet, collation })
    }
}

/// The client's `HandshakeResponse41`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The fixed prefix.
    pub prefix: SslRequest,
    /// The user name.
    pub user: String,
    /// The authentication response (ignored by the proxy: identity comes from the certificate).
    pub auth_response: Vec<u8>,
    /// The default database.
    pub database: Option<String>,
    /// The authentication plugin the response is for.
    pub auth_plugin: Option<String>,
    /// Connection attributes, in order.
    pub attributes: Vec<(String, String)>,
}

impl HandshakeResponse {
    /// Parses a response payload. Trailing optional parts may be missing, as some clients
    /// leave them out.
    pub fn parse(payload: &[u8]) -> Result<HandshakeResponse, CodecError> {
        let prefix = SslRequest::parse(payload)?;
        let c = prefix.capabilities;
        if c & caps::PROTOCOL_41 == 0 {
            return Err(CodecError::NotOffered("protocol 3.20 (pre-4.1) authentication"));
        }
        let mut r = Reader::new(&payload[32..]);
        let user = r.nul_str().map_err(|_| CodecError::Malformed("handshake response (user name)"))?;
        let auth_response = if c & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            let n = r.lenenc()?;
            r.take_len(n)?.to_vec()
        } else if c & caps::SECURE_CONNECTION != 0 {
            let n = r.u8()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.nul_str()?.into_bytes()
        };
        let database = if c & caps::CONNECT_WITH_DB != 0 && !r.is_empty() { Some(r.nul_str_or_rest()).filter(|d| !d.is_empty()) } else { None };
        let auth_plugin = if c & caps::PLUGIN_AUTH != 0 && !r.is_empty() { Some(r.nul_str_or_rest()) } else { None };
        let mut attributes = Vec::new();
        if c & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            let n = r.lenenc()?;
            let mut a = Reader::new(r.take_len(n)?);
            while !a.is_empty() {
                let k = a.lenenc_str()?;
                let v = a.lenenc_str()?;
                attributes.push((k, v));
            }
        }
        Ok(HandshakeResponse { prefix, user, auth_response, database, auth_plugin, attributes })
    }

    /// Encodes a response payload (the proxy's own, towards the database).
    pub fn encode(&self) -> Vec<u8> {
        let c = self.prefix.capabilities;
        let mut out = self.prefix.encode();
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        if c & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc(&mut out, self.auth_response.len() as u64);
            out.extend_from_slice(&self.auth_response);
        } else if c & caps::SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.push(n as u8);
            out.extend_from_slice(&self.auth_response[..n]);
        } else {
            out.extend(self.auth_response.iter().copied().take_while(|&b| b != 0));
            out.push(0);
        }
        if c & caps::CONNECT_WITH_DB != 0 {
            out.extend_from_slice(self.database.as_deref().unwrap_or("").as_bytes());
            out.push(0);
        }
        // Trailing parts are optional (parse accepts a response that ends early): a missing
        // plugin name is written only when attributes must follow it.
        let attributes = c & caps::CONNECT_ATTRS != 0 && !self.attributes.is_empty();
        if c & caps::PLUGIN_AUTH != 0 && (self.auth_plugin.is_some() || attributes) {
            out.extend_from_slice(self.auth_plugin.as_deref().unwrap_or("").as_bytes());
            out.push(0);
        }
        if attributes {
            let mut attrs = Vec::new();
            for (k, v) in &self.attributes {
                put_lenenc(&mut attrs, k.len() as u64);
                attrs.extend_from_slice(k.as_bytes());
                put_lenenc(&mut attrs, v.len() as u64);
                attrs.extend_from_slice(v.as_bytes());
            }
            put_lenenc(&mut out, attrs.len() as u64);
            out.extend_from_slice(&attrs);
        }
        out
    }
}

/// The database's answer to a handshake response, as far as the login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    /// OK: logged in.
    Ok,
    /// ERR.
    Err(ErrPacket),
    /// AuthSwitchRequest: use another plugin.
    Switch { plugin: String },
    /// AuthMoreData (e.g. `caching_sha2_password`'s fast path).
    MoreData,
}

/// Classifies a login-phase reply from the database.
pub fn parse_auth_reply(payload: &[u8]) -> Result<AuthReply, CodecError> {
    match payload.first() {
        Some(0x00) => Ok(AuthReply::Ok),
        Some(0xff) => Ok(AuthReply::Err(parse_err(payload)?)),
        Some(0xfe) => {
            let mut r = Reader::new(&payload[1..]);
            let plugin = if r.is_empty() { "mysql_old_password".to_owned() } else { r.nul_str_or_rest() };
            Ok(AuthReply::Switch { plugin })
        }
        Some(0x01) => Ok(AuthReply::MoreData),
        _ => Err(CodecError::Malformed("authentication reply")),
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// A bounds-checked reader over a payload.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn remaining(&self) -> usize {
        self.data.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.data.len() {
            return Err(CodecError::Malformed("packet (a field runs past its end)"));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn take_len(&mut self, n: u64) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(n).map_err(|_| CodecError::Malformed("packet (a length is too large)"))?;
        self.take(n)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn lenenc(&mut self) -> Result<u64, CodecError> {
        Ok(match self.u8()? {
            n @ 0..=250 => n as u64,
            0xfc => self.u16()? as u64,
            0xfd => {
                let b = self.take(3)?;
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
            }
            0xfe => {
                let b = self.take(8)?;
                u64::from_le_bytes(b.try_into().expect("8 bytes"))
            }
            _ => return Err(CodecError::Malformed("length-encoded integer")),
        })
    }
    fn lenenc_str(&mut self) -> Result<String, CodecError> {
        let n = self.lenenc()?;
        Ok(String::from_utf8_lossy(self.take_len(n)?).into_owned())
    }
    fn nul_str(&mut self) -> Result<String, CodecError> {
        let end = self.data.iter().position(|&b| b == 0).ok_or(CodecError::Malformed("packet (a string has no NUL terminator)"))?;
        let s = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = &self.data[end + 1..];
        Ok(s)
    }
    /// A NUL-terminated string, or the rest of the packet when the NUL is missing.
    fn nul_str_or_rest(&mut self) -> String {
        let end = self.data.iter().position(|&b| b == 0);
        let s = String::from_utf8_lossy(&self.data[..end.unwrap_or(self.data.len())]).into_owned();
        self.data = &self.data[end.map(|e| e + 1).unwrap_or(self.data.len())..];
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Greeting {
        Greeting {
            server_version: "8.0.36-portcullis".into(),
            connection_id: 7,
            scramble: (1..=20).collect(),
            capabilities: caps::OFFERED,
            collation: DEFAULT_COLLATION,
            status: STATUS_AUTOCOMMIT,
            auth_plugin: "mysql_native_password".into(),
        }
    }

    #[test]
    fn greeting_round_trips() {
        let g = greeting();
        assert_eq!(Greeting::parse(&g.encode()).unwrap(), g);
    }

    #[test]
    fn handshake_response_round_trips_in_every_auth_data_form() {
        for extra in [caps::PLUGIN_AUTH_LENENC_CLIENT_DATA, 0] {
            let response = HandshakeResponse {
                prefix: SslRequest {
                    capabilities: caps::PROTOCOL_41
                        | caps::SECURE_CONNECTION
                        | caps::PLUGIN_AUTH
                        | caps::CONNECT_WITH_DB
                        | caps::CONNECT_ATTRS
                        | caps::SSL
                        | extra,
                    max_packet: 1 << 24,
                    collation: 45,
                },
                user: "app".into(),
                auth_response: vec![9; 20],
                database: Some("orders".into()),
                auth_plugin: Some("mysql_native_password".into()),
                attributes: vec![("_client_name".into(), "libmariadb".into()), ("program_name".into(), "x".repeat(300))],
            };
            assert_eq!(HandshakeResponse::parse(&response.encode()).unwrap(), response);
        }
    }

    #[test]
    fn truncated_and_lying_packets_are_errors_not_panics() {
        let full = HandshakeResponse {
            prefix: SslRequest { capabilities: caps::OFFERED, max_packet: 0, collation: 45 },
            user: "app".into(),
            auth_response: vec![],
            database: Some("d".into()),
            auth_plugin: Some("p".into()),
            attributes: vec![("k".into(), "v".into())],
        }
        .encode();
        for cut in 0..full.len() {
            let _ = HandshakeResponse::parse(&full[..cut]);
        }
        let mut lying = full[..32].to_vec();
        lying.extend_from_slice(b"app\0\xfe\xff\xff\xff\xff\xff\xff\xff\xff");
        assert!(HandshakeResponse::parse(&lying).is_err());
        for cut in 0..greeting().encode().len() {
            let _ = Greeting::parse(&greeting().encode()[..cut]);
        }
    }

    #[test]
    fn err_packets_carry_code_state_and_a_capped_message() {
        let wire = err_packet(2, 1045, "28000", &"x".repeat(2000));
        let (len, seq) = header(wire[..4].try_into().unwrap());
        assert_eq!((len, seq), (wire.len() - 4, 2));
        let err = parse_err(&wire[4..]).unwrap();
        assert_eq!((err.code, err.sqlstate.as_str(), err.message.len()), (1045, "28000", 500));
    }

    #[test]
    fn auth_switch_names_the_plugin() {
        assert_eq!(parse_auth_reply(b"\xfemysql_clear_password\0").unwrap(), AuthReply::Switch { plugin: "mysql_clear_password".into() });
        assert_eq!(parse_auth_reply(b"\x00\x00\x00\x02\x00\x00\x00").unwrap(), AuthReply::Ok);
        assert!(parse_auth_reply(b"").is_err());
    }
}
