#!/usr/bin/env python3
"""Writes the seed inputs for the fuzz targets into fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/generate.py. The seeds are small, valid protocol
exchanges (plus a few near-misses) so the fuzzer starts past the length checks: PostgreSQL
(pg_startup, pg_client_stream) and MySQL (mysql_login, mysql_command_stream). Every seed passes
its target's checks; see docs/fuzzing.md for the input layouts.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def startup(params, version=196608):
    body = struct.pack(">I", version)
    for k, v in params:
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack(">I", len(body) + 4) + body


def request(code, extra=b""):
    return struct.pack(">II", 8 + len(extra), code) + extra


def msg(tag, body):
    return tag + struct.pack(">I", len(body) + 4) + body


def error_body(fields):
    return b"".join(c + v + b"\0" for c, v in fields) + b"\0"


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


SSL, GSSENC, CANCEL = 80877103, 80877104, 80877102
login = startup([("user", "alice"), ("database", "orders"), ("application_name", "psql")])

write("pg_startup", "startup", login)
write("pg_startup", "startup_empty", startup([]))
write("pg_startup", "startup_3_2", startup([("user", "bob"), ("_pq_.x", "1")], version=196610))
write("pg_startup", "ssl_then_startup", request(SSL) + login)
write("pg_startup", "gssenc_then_ssl_then_startup", request(GSSENC) + request(SSL) + login)
write("pg_startup", "cancel", request(CANCEL, struct.pack(">I", 4242) + b"\x01\x02\x03\x04"))
write("pg_startup", "cancel_long_key", request(CANCEL, struct.pack(">I", 7) + bytes(range(32))))
write("pg_startup", "protocol_2", startup([("user", "old")], version=131072))
write("pg_startup", "unterminated", login[:-1])
write("pg_startup", "error_response",
      msg(b"E", error_body([(b"S", b"FATAL"), (b"V", b"FATAL"), (b"C", b"28000"), (b"M", b"denied"), (b"H", b"ask")])))


def stream(schedule=b"", audit=True):
    assert len(schedule) <= 15
    return bytes([len(schedule) | (0 if audit else 0x10)]) + schedule


def parse(name, query):
    return msg(b"P", name + b"\0" + query + b"\0" + struct.pack(">H", 0))


session = (
    msg(b"Q", b"select 1\0")
    + parse(b"s1", b"select $1::int")
    + msg(b"B", b"\0s1\0\0\0\0\0\0\0")
    + msg(b"D", b"S\0")
    + msg(b"E", struct.pack(">I", 0) + b"\0")
    + msg(b"S", b"")
    + parse(b"", b"insert into t values ($1)")
    + msg(b"H", b"")
    + msg(b"Q", b"")
    + msg(b"X", b"")
)
write("pg_client_stream", "session_one_call", stream() + session)
write("pg_client_stream", "session_bytewise", stream(b"\x00") + session)
write("pg_client_stream", "session_mixed_chunks", stream(b"\x02\x06\x3f\x00\x10") + session)
write("pg_client_stream", "session_audit_off", stream(b"\x03", audit=False) + session)
write("pg_client_stream", "parse_no_nul", stream(b"\x04") + msg(b"P", b"name_without_terminator"))
write("pg_client_stream", "long_name", stream(b"\x3f") + parse(b"n" * 1500, b"select 2"))
write("pg_client_stream", "bad_length", stream() + msg(b"Q", b"select 1\0") + b"Q\0\0\0\x02")
# A 68 KiB query (past the 64 KiB audit cap) built by repetition: the 5-byte header, then a
# 64-byte 'x' chunk fed 1024 times (64 KiB), then one fed 64 times (4 KiB), then the NUL.
# The target feeds at most 72 KiB per run, so this must stay below that.
big = 68 * 1024
header = b"Q" + struct.pack(">I", big + 5)
write("pg_client_stream", "huge_query_repeated",
      stream(b"\x04\xff\xbf\x00") + header + b"x" * 64 * 2 + b"\0")


# ---- MySQL -------------------------------------------------------------------------------------

LONG_PASSWORD, FOUND_ROWS, CONNECT_WITH_DB = 1, 2, 8
PROTOCOL_41, SSL, TRANSACTIONS, SECURE_CONNECTION = 1 << 9, 1 << 11, 1 << 13, 1 << 15
MULTI_STATEMENTS, MULTI_RESULTS, PLUGIN_AUTH, CONNECT_ATTRS = 1 << 16, 1 << 17, 1 << 19, 1 << 20
LENENC_CLIENT_DATA, DEPRECATE_EOF = 1 << 21, 1 << 24
CLIENT = (LONG_PASSWORD | FOUND_ROWS | PROTOCOL_41 | SSL | TRANSACTIONS | SECURE_CONNECTION
          | MULTI_STATEMENTS | MULTI_RESULTS | PLUGIN_AUTH | DEPRECATE_EOF)
SERVER = CLIENT | CONNECT_WITH_DB | CONNECT_ATTRS | LENENC_CLIENT_DATA
MAX_PAYLOAD = 0xFFFFFF


def mpacket(seq, payload):
    assert len(payload) < MAX_PAYLOAD
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def lenenc(n):
    if n <= 250:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfc" + struct.pack("<H", n)
    if n <= 0xFFFFFF:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b):
    return lenenc(len(b)) + b


def greeting(version=b"8.0.36", scramble=bytes(range(0x41, 0x55)), caps=SERVER,
             plugin=b"mysql_native_password", conn_id=7):
    """Protocol::HandshakeV10 as servers send it: scramble part 2 is 12 bytes + NUL."""
    return (b"\x0a" + version + b"\0" + struct.pack("<I", conn_id) + scramble[:8] + b"\0"
            + struct.pack("<HBHH", caps & 0xFFFF, 45, 2, caps >> 16) + bytes([len(scramble) + 1])
            + b"\0" * 10 + scramble[8:] + b"\0" + plugin + b"\0")


def ssl_request(caps, max_packet=1 << 24, collation=45):
    return struct.pack("<IIB", caps, max_packet, collation) + b"\0" * 23


def handshake_response(caps, user, auth=b"", db=None, plugin=None, attrs=()):
    out = ssl_request(caps) + user + b"\0"
    if caps & LENENC_CLIENT_DATA:
        out += lenenc_str(auth)
    elif caps & SECURE_CONNECTION:
        out += bytes([len(auth)]) + auth
    else:
        out += auth + b"\0"
    if caps & CONNECT_WITH_DB:
        out += (db or b"") + b"\0"
    if caps & PLUGIN_AUTH:
        out += (plugin or b"") + b"\0"
    if caps & CONNECT_ATTRS:
        out += lenenc_str(b"".join(lenenc_str(k) + lenenc_str(v) for k, v in attrs))
    return out


def err(code, message, state=b"HY000"):
    return b"\xff" + struct.pack("<H", code) + (b"#" + state if state else b"") + message


OK = b"\x00\x00\x00\x02\x00\x00\x00"
ATTRS = [(b"_client_name", b"libmariadb"), (b"_os", b"Linux"), (b"program_name", b"mysql")]

# mysql_login: a client's SSLRequest then HandshakeResponse41, or a database's side of a login.
# Each packet goes through every parser; the first bytes also drive err_packet.
write("mysql_login", "client_full",
      mpacket(1, ssl_request(CLIENT | CONNECT_WITH_DB | CONNECT_ATTRS | LENENC_CLIENT_DATA))
      + mpacket(2, handshake_response(CLIENT | CONNECT_WITH_DB | CONNECT_ATTRS | LENENC_CLIENT_DATA, b"app",
                                      bytes(range(20)), b"orders", b"mysql_native_password", ATTRS)))
write("mysql_login", "client_secure_connection",
      mpacket(1, ssl_request(CLIENT))
      + mpacket(2, handshake_response(CLIENT | CONNECT_WITH_DB, b"app", b"\x01" * 20, b"orders",
                                      b"mysql_clear_password")))
write("mysql_login", "client_no_db_lenenc_auth",
      mpacket(2, handshake_response(CLIENT | LENENC_CLIENT_DATA | CONNECT_ATTRS, b"reporting", b"t" * 300, None,
                                    b"caching_sha2_password", [(b"program_name", b"x" * 300)])))
write("mysql_login", "client_nul_auth",
      mpacket(2, handshake_response(PROTOCOL_41 | SSL | CONNECT_WITH_DB, b"old", b"", b"db")))
write("mysql_login", "client_ssl_request_long", mpacket(1, ssl_request(CLIENT) + b"extra"))
write("mysql_login", "client_pre_41", mpacket(1, ssl_request(SSL)) + mpacket(2, ssl_request(SSL) + b"u\0\0"))
write("mysql_login", "server_iam_login",
      mpacket(0, greeting()) + mpacket(2, b"\xfemysql_clear_password\0") + mpacket(4, OK))
write("mysql_login", "server_refused",
      mpacket(0, greeting(plugin=b"caching_sha2_password"))
      + mpacket(2, err(1045, b"Access denied for user 'app'@'10.0.0.1' (using password: NO)", b"28000")))
write("mysql_login", "server_more_data",
      mpacket(0, greeting(plugin=b"caching_sha2_password")) + mpacket(2, b"\x01\x03") + mpacket(3, OK))
write("mysql_login", "server_mariadb",
      mpacket(0, greeting(b"5.5.5-10.11.6-MariaDB-log", caps=SERVER & ~CONNECT_ATTRS))
      + mpacket(2, b"\xfe") + mpacket(3, err(1927, b"Connection was killed", b"70100")))
write("mysql_login", "server_too_many_connections", mpacket(0, err(1040, b"Too many connections", None)))
write("mysql_login", "server_pre_41_greeting",
      mpacket(0, b"\x0a4.0.27\0" + struct.pack("<I", 1) + b"abcdefgh\0" + struct.pack("<H", 0x2C)))
write("mysql_login", "server_short_scramble",
      mpacket(0, greeting(scramble=b"12345678", caps=SERVER & ~PLUGIN_AUTH, plugin=b"")))
write("mysql_login", "over_the_limit", b"\x01\x00\x01\x00" + b"\0" * 64)
# For err_packet: sequence id 2, code 1045, a 5-byte SQLSTATE and a 600-byte message.
write("mysql_login", "err_packet_long_message", b"\x02\x15\x04\x05" + b"28000" + b"m" * 600)


def cstream(schedule=b"", audit=True, large=False):
    assert len(schedule) <= 15
    return bytes([len(schedule) | (0 if audit else 0x10) | (0x20 if large else 0)]) + schedule


def cmd(command, body=b"", seq=0):
    return mpacket(seq, bytes([command]) + body)


QUERY, INIT_DB, CHANGE_USER, PREPARE, EXECUTE, CLOSE = 0x03, 0x02, 0x11, 0x16, 0x17, 0x19
PING, QUIT = 0x0E, 0x01
session = (
    cmd(QUERY, b"select 1")
    + cmd(PREPARE, b"select ?")
    + cmd(EXECUTE, struct.pack("<IBI", 1, 0, 1) + b"\x01\x01\x08\x00" + struct.pack("<q", 5))
    + cmd(CLOSE, struct.pack("<I", 1))
    + cmd(INIT_DB, b"orders")
    + cmd(INIT_DB, b"secret")
    + cmd(CHANGE_USER, b"admin\0\0")
    + cmd(QUERY, b"load data local infile 'x' into table t")
    + mpacket(2, b"\x11LOCAL INFILE data, not a command")
    + mpacket(3, b"")
    + cmd(QUIT)
)
write("mysql_command_stream", "session_one_call", cstream() + session)
write("mysql_command_stream", "session_bytewise", cstream(b"\x00") + session)
write("mysql_command_stream", "session_mixed_chunks", cstream(b"\x02\x06\x3f\x00\x10\x03\x04") + session)
write("mysql_command_stream", "session_audit_off", cstream(b"\x03", audit=False) + session)
write("mysql_command_stream", "replication",
      cstream(b"\x05") + cmd(0x12, struct.pack("<IHI", 4, 0, 1) + b"binlog.000001") + cmd(0x15, b"\x01\0\0\0")
      + cmd(0x1E, b"\0" * 20) + cmd(PING))
# A COM_STMT_PREPARE_OK echoed in the client stream (sequence id 1) teaches the watcher id 42.
write("mysql_command_stream", "prepare_then_ok",
      cstream(b"\x07") + cmd(PREPARE, b"select ? from t")
      + mpacket(1, b"\x00" + struct.pack("<IHHBH", 42, 1, 1, 0, 0))
      + cmd(EXECUTE, struct.pack("<IBI", 42, 0, 1)) + cmd(CLOSE, struct.pack("<I", 42)))
write("mysql_command_stream", "empty_and_short_packets",
      cstream(b"\x01") + mpacket(0, b"") + cmd(QUERY) + cmd(INIT_DB) + cmd(QUERY, b"select 3")[:7])
# Schedule byte b: size = (b & 0x3f) + 1; b >> 6 = 0, 1, 2 feeds the next size stream bytes 1, 64
# or 4096 times, 3 feeds size x 1 KiB (256 KiB with the large flag) of filler 'x' (no stream bytes).
# A COM_INIT_DB of 4161 bytes (over the 4096 the filter holds): 5 bytes, 64 'd' x 64, 64 'd'.
write("mysql_command_stream", "init_db_too_long",
      cstream(b"\x04\x7f\x3f\x3f") + struct.pack("<I", 1 + 4096 + 64)[:3] + b"\0"
      + bytes([INIT_DB]) + b"d" * 128 + cmd(PING))
# A COM_INIT_DB whose name is 5 KiB of filler, then a query: 5 bytes, 5 x 1 KiB 'x', the rest.
write("mysql_command_stream", "init_db_filler",
      cstream(b"\x04\xc4\x3f") + struct.pack("<I", 1 + 5 * 1024)[:3] + b"\0" + bytes([INIT_DB])
      + cmd(QUERY, b"select 4"))
# A 65,601-byte COM_QUERY (past the 64 KiB audit cap): 5 bytes, 16 'x' x 4096, 64 'x'.
write("mysql_command_stream", "query_over_64k",
      cstream(b"\x04\x8f\x3f\x3f") + struct.pack("<I", 1 + 65536 + 64)[:3] + b"\0" + bytes([QUERY])
      + b"x" * 80 + cmd(QUERY, b"select 2"))
# 16 MiB packets (payload 0xffffff, continued with sequence id 1), with the large flag: the
# header and command byte, then 63 x 256 KiB of filler, 63 bytes x 4096, 63 x 64 and 62 x 1,
# which makes 0xfffffe bytes after the command byte.
BIG = b"\x04\xfe\xbe\x7e\x3d\x3f\x3f"
write("mysql_command_stream", "query_16mib_split",
      cstream(BIG, large=True) + b"\xff\xff\xff\x00" + bytes([QUERY]) + b"x" * (63 * 2 + 62)
      + mpacket(1, b"more text.") + cmd(QUERY, b"select 2"))
write("mysql_command_stream", "change_user_16mib_split",
      cstream(BIG, large=True) + b"\xff\xff\xff\x00" + bytes([CHANGE_USER]) + b"u" * (63 * 2 + 62)
      + mpacket(1, b"rest\0") + cmd(PING))
print("seeds written under", HERE)
