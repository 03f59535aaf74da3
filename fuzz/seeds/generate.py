#!/usr/bin/env python3
"""Writes the seed inputs for the fuzz targets into fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/generate.py. The seeds are small, valid protocol
exchanges (plus a few near-misses) so the fuzzer starts past the length checks. Every seed
passes both targets' checks; see docs/fuzzing.md for the input layouts.
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
print("seeds written under", HERE)
