#!/usr/bin/env python3
"""A stand-in for Amazon DocumentDB 5.0: MongoDB wire protocol over TLS, MONGODB-AWS auth.

    python3 docdb_standin.py --cert server.pem --key server.key --sts-host HOST:PORT
        [--sts-connect HOST:PORT] [--port 0] [--user ARN]... [--log FILE]
        [--log-commands] [--max-skew-seconds 900] [--lax-region] [--sts-timeout 10]

Prints ``listening on 127.0.0.1:PORT`` as its first stdout line (the real port when
``--port 0``).  SIGTERM/SIGINT stop it.  Needs the ``bson`` package (from pymongo).

Wire protocol (what DocumentDB with TLS on looks like to a driver):

* TLS only, server certificate from ``--cert``/``--key``; no client certificate asked.
* OP_MSG (2013): flagBits (checksumPresent: the trailing CRC is stripped, not checked;
  moreToCome: no reply is written; any other required bit 0-15 -> close), one kind-0
  body and kind-1 document sequences (merged into the body as arrays).
* OP_QUERY (2004) only for ``hello``/``isMaster`` on ``<db>.$cmd``, answered with OP_REPLY
  (1); any other OP_QUERY command gets an OP_REPLY error (code 352), as MongoDB 5.1+ does.
* messageLength < 16 or > 48,000,000, OP_COMPRESSED (2012), an unknown opcode or a
  section that overruns the message -> the connection is closed.  BSON that does not
  parse -> ``{ok: 0, code: 22, codeName: InvalidBSON}``.  Every connection's failures
  are caught; the server keeps running.
* hello answers maxWireVersion 13 (DocumentDB 5.0) and no ``topologyVersion`` (so drivers
  poll instead of streaming hello); ``setName`` only with ``--replica-set NAME`` (DocumentDB
  clusters answer ``rs0``; without it the stand-in is a standalone to the driver, and drivers
  refuse transactions on a standalone).

MONGODB-AWS (DESIGN.md section 4 and the MongoDB driver auth spec):

* ``saslStart {mechanism: "MONGODB-AWS", payload: BSON{r: 32 bytes binary, p: 110}}`` on
  ``$external`` -> ``{conversationId: 1, done: false, payload: BSON{s: r + 32 random
  bytes, h: STS host}}``.  ``h`` is ``--sts-host``.
* ``saslContinue {conversationId, payload: BSON{a: Authorization, d: X-Amz-Date, t: token?}}``
  -> the server rebuilds the request the client must have signed (``POST /``, body
  ``Action=GetCallerIdentity&Version=2011-06-15``, Content-Type, Content-Length 43, Host h,
  X-Amz-Date d, X-MongoDB-Server-Nonce base64(s) -- the nonce *this server issued on this
  connection* --, X-MongoDB-GS2-CB-Flag n, X-Amz-Security-Token t, Authorization a) and
  sends it as is to ``http://h/`` (or to ``--sts-connect`` with the Host header still h).
  Accepted only if STS answers 200 and the caller's ARN is a ``--user``.
* Refused without calling STS: no conversation (saslContinue before saslStart, wrong
  conversationId, a second saslContinue -- a nonce is good for one try); a replayed
  payload (an Authorization header already presented on any connection, i.e. signed for
  another conversation's nonce); a payload that is not ``{a: str, d: str, t: str?}``;
  an Authorization header that is not SigV4 for service ``sts``, whose SignedHeaders
  lack host, x-amz-date, x-mongodb-server-nonce, x-mongodb-gs2-cb-flag (and
  x-amz-security-token when t is given) or name a header the request does not carry;
  a credential-scope date other than d's; d more than ``--max-skew-seconds`` from now
  (AWS allows 15 minutes); and, unless ``--lax-region``, a scope region other than the
  one the driver spec derives from h (``sts.amazonaws.com`` or a single label:
  us-east-1, else the second dot-separated label: ``127.0.0.1:5000`` -> ``0``,
  ``localhost:5000`` -> ``us-east-1``), as real STS refuses a wrongly scoped signature.
  A fresh signature over a different nonce cannot be told apart locally (it is opaque
  without the secret): STS refuses the rebuilt request (SignatureDoesNotMatch).
* STS host: pymongo (pymongo-auth-aws) and the Node driver (mongosh) both sign for an
  ``h`` of ``127.0.0.1:PORT`` (region ``0``) and moto checks the signature with the
  scope's region, so ``--sts-host 127.0.0.1:MOTO_PORT`` works as is.  To hand out an
  AWS-looking host instead (a client that only signs for AWS STS hosts), use e.g.
  ``--sts-host sts.us-east-1.amazonaws.com --sts-connect 127.0.0.1:MOTO_PORT``.
* Users: ``--user ARN`` (repeatable) is an IAM role or user ARN known in ``$external``.
  The caller ARN ``arn:P:sts::ACCOUNT:assumed-role/NAME/SESSION`` maps to the role
  ``arn:P:iam::ACCOUNT:role/[PATH/]NAME``; an IAM user ARN must match exactly.
* Any failure: ``{ok: 0, errmsg: "Authentication failed.", code: 18, codeName:
  "AuthenticationFailed"}``.  Before authentication everything except hello/isMaster/
  saslStart/saslContinue gets code 13 ``command X requires authentication``.

Every auth decision is one JSON line (``"event": "auth"``) in ``--log FILE`` (or
stderr): time, connection id, decision (accept/reject), reason, whether STS was called,
its HTTP status and error code, the access key id, credential scope, SignedHeaders and
caller ARN; never the signature, a secret or the session token.  With
``--log-commands`` every command also gets a line (name, db, user, error code; never
its body).

After authentication: ping, buildInfo (5.0.0), connectionStatus, insert (an ``_id`` index
per collection, so bulk inserts of 10,000s of documents take well under a second), find
(top-level fields: equality, ``$eq``/``$ne``/``$in``/``$nin``/``$gt``/``$gte``/``$lt``/``$lte``/
``$exists``; projection, sort, skip, limit, batchSize), getMore, killCursors, update
(replacement documents, ``$set``/``$unset``/``$inc``/``$push``, ``multi``, ``upsert``), delete,
aggregate (``$match``, ``$project``, ``$sort``, ``$skip``, ``$limit``, ``$count``, and
``$group`` by one field path or ``null`` with ``$sum``/``$avg``/``$min``/``$max``/``$first``/``$push``),
count, drop, create, listDatabases, listCollections, dropDatabase, endSessions, getLog,
hostInfo, getParameter, whatsmyuri, over one in-memory store shared by all connections.
Anything else: code 59 CommandNotFound.

Transactions (with ``--replica-set``, as drivers send them): a command with ``lsid``,
``txnNumber``, ``autocommit: false`` and ``startTransaction: true`` opens transaction
(lsid, txnNumber); later commands carry the same fields without ``startTransaction``;
``commitTransaction`` / ``abortTransaction`` on ``admin`` end it (a repeated commit of a
committed transaction is ok, as the server's retry rule says). A command of a transaction that
is not open gets ``{code: 251, codeName: NoSuchTransaction}``. Writes apply at once and an
abort restores each collection the transaction wrote to as it was at its first write (so,
unlike DocumentDB, other sessions see uncommitted writes, and an abort also undoes other
sessions' writes to those collections in between: tests use one writer per collection).
"""

import argparse
import asyncio
import base64
import copy
import datetime
import hashlib
import http.client
import itertools
import json
import os
import re
import signal
import ssl
import struct
import sys
import time
import xml.etree.ElementTree as ET

import bson
from bson import SON
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.int64 import Int64
from bson.objectid import ObjectId

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

MAX_MESSAGE = 48_000_000
MAX_BSON = 16 * 1024 * 1024
MAX_BSON_INTERNAL = MAX_BSON + 16 * 1024  # the server's own slack for command overhead
MAX_WIRE_VERSION = 13

MSG_CHECKSUM_PRESENT = 1 << 0
MSG_MORE_TO_COME = 1 << 1
MSG_EXHAUST_ALLOWED = 1 << 16

STS_BODY = b"Action=GetCallerIdentity&Version=2011-06-15"
REQUIRED_SIGNED = ("host", "x-amz-date", "x-mongodb-server-nonce", "x-mongodb-gs2-cb-flag")

CODEC = CodecOptions(document_class=SON, tz_aware=True)

PRE_AUTH = {"hello", "isMaster", "ismaster", "saslStart", "saslContinue"}


class CloseConnection(Exception):
    """The message cannot be answered; the server drops the connection."""


class CommandError(Exception):
    def __init__(self, code, code_name, errmsg):
        super().__init__(errmsg)
        self.code = code
        self.code_name = code_name
        self.errmsg = errmsg

    def doc(self):
        return SON([("ok", 0.0), ("errmsg", self.errmsg), ("code", self.code),
                    ("codeName", self.code_name)])


def auth_failed():
    return CommandError(18, "AuthenticationFailed", "Authentication failed.")


class AuthReject(Exception):
    def __init__(self, reason, **fields):
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def derive_region(host):
    """The region the MongoDB driver auth spec derives from the STS host."""
    parts = host.split(".")
    if len(parts) == 1 or host == "sts.amazonaws.com":
        return "us-east-1"
    return parts[1]


AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;\-]+),\s*Signature=([0-9a-f]{64})$")


def id_key(value):
    """A hashable key for an _id value (documents and arrays by their BSON)."""
    try:
        key = (type(value).__name__, value)
        hash(key)
        return key
    except TypeError:
        return ("bson", bson.encode({"v": value}))


class Store:
    def __init__(self):
        self.dbs = {}  # db -> {collection -> [docs]}
        self.ids = {}  # (db, collection) -> {id_key}
        self.cursors = {}  # id -> (ns, [docs])
        self.cursor_ids = itertools.count(1000)
        self.txns = {}  # (lsid bytes, txnNumber) -> {(db, coll): snapshot or None}
        self.committed = set()  # (lsid bytes, txnNumber) committed

    def coll(self, db, name, create=False):
        if create:
            return self.dbs.setdefault(db, {}).setdefault(name, [])
        return self.dbs.get(db, {}).get(name, [])

    def id_index(self, db, name):
        index = self.ids.get((db, name))
        if index is None:
            index = self.ids[(db, name)] = {id_key(d.get("_id")) for d in self.coll(db, name)}
        return index

    def forget_index(self, db, name=None):
        for key in [k for k in self.ids if k[0] == db and (name is None or k[1] == name)]:
            del self.ids[key]


class Config:
    def __init__(self, a):
        self.sts_host = a.sts_host
        self.sts_connect = a.sts_connect or a.sts_host
        self.users = list(a.user)
        self.max_skew = a.max_skew_seconds
        self.lax_region = a.lax_region
        self.sts_timeout = a.sts_timeout
        self.log_file = a.log
        self.log_commands = a.log_commands
        self.replica_set = a.replica_set


class Logger:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else sys.stderr

    def event(self, **fields):
        fields = {"time": now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **fields}
        self.f.write(json.dumps(fields, default=str) + "\n")
        self.f.flush()


# ---------------------------------------------------------------- matching


def values_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a.keys()) == list(b.keys()) and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def field_matches(doc, key, cond):
    present = key in doc
    value = doc.get(key)

    def eq(target):
        if target is None:
            return not present or value is None
        if not present:
            return False
        if values_equal(value, target):
            return True
        # An array field matches a scalar it contains, as in MongoDB.
        return isinstance(value, list) and any(values_equal(v, target) for v in value)

    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        for op, arg in cond.items():
            if op == "$eq":
                if not eq(arg):
                    return False
            elif op == "$ne":
                if eq(arg):
                    return False
            elif op == "$in":
                if not isinstance(arg, list):
                    raise CommandError(2, "BadValue", "$in needs an array")
                if not any(eq(x) for x in arg):
                    return False
            elif op == "$nin":
                if not isinstance(arg, list):
                    raise CommandError(2, "BadValue", "$nin needs an array")
                if any(eq(x) for x in arg):
                    return False
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                if not present or sort_key(value)[0] != sort_key(arg)[0]:
                    return False
                a, b = sort_key(value), sort_key(arg)
                if not {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]:
                    return False
            elif op == "$exists":
                if bool(arg) != present:
                    return False
            else:
                raise CommandError(2, "BadValue", f"unknown operator: {op}")
        return True
    return eq(cond)


def matches(doc, flt):
    for key, cond in (flt or {}).items():
        if key.startswith("$"):
            raise CommandError(2, "BadValue", f"unknown top level operator: {key}")
        if not field_matches(doc, key, cond):
            return False
    return True


def project(doc, projection):
    if not projection:
        return doc
    inc = {k: v for k, v in projection.items() if k != "_id"}
    include = any(bool(v) for v in inc.values())
    out = SON()
    if include:
        if projection.get("_id", 1) and "_id" in doc:
            out["_id"] = doc["_id"]
        for k in inc:
            if inc[k] and k in doc:
                out[k] = doc[k]
        return out
    for k, v in doc.items():
        if k in projection and not projection[k]:
            continue
        out[k] = v
    return out


def sort_key(value):
    order = {type(None): 0, int: 1, float: 1, Int64: 1, str: 2, dict: 3, SON: 3, list: 4,
             bytes: 5, Binary: 5, ObjectId: 6, bool: 7, datetime.datetime: 8}
    rank = order.get(type(value), 9)
    if rank in (3, 4):
        return (rank, repr(value))
    return (rank, value)


WRITES = {"insert", "update", "delete"}


def field_path(doc, expr):
    """`$a` is doc["a"]; anything else is the value itself."""
    if isinstance(expr, str) and expr.startswith("$"):
        return doc.get(expr[1:])
    return expr


def apply_update(doc, u, operators):
    if not operators:
        keep = doc.get("_id")
        doc.clear()
        doc["_id"] = keep
        doc.update((k, v) for k, v in u.items() if k != "_id")
        return
    for op, fields in u.items():
        if not isinstance(fields, dict):
            raise CommandError(9, "FailedToParse", f"Modifiers operate on fields but we found type {type(fields).__name__} instead.")
        for k, v in fields.items():
            if k == "_id" and op != "$unset":
                raise CommandError(66, "ImmutableField", "Performing an update on the path '_id' would modify the immutable field '_id'")
            if op == "$set":
                doc[k] = v
            elif op == "$unset":
                doc.pop(k, None)
            elif op == "$inc":
                if not isinstance(v, (int, float)) or (k in doc and not isinstance(doc[k], (int, float))):
                    raise CommandError(14, "TypeMismatch", f"Cannot apply $inc to a value of non-numeric type")
                doc[k] = doc.get(k, 0) + v
            elif op == "$push":
                if k in doc and not isinstance(doc[k], list):
                    raise CommandError(2, "BadValue", f"The field '{k}' must be an array")
                doc.setdefault(k, []).append(v)
            else:
                raise CommandError(9, "FailedToParse", f"Unknown modifier: {op}")


def group(docs, spec):
    if not isinstance(spec, dict) or "_id" not in spec:
        raise CommandError(15955, "Location15955", "a group specification must include an _id")
    groups = {}
    for d in docs:
        key = field_path(d, spec["_id"])
        groups.setdefault(id_key(key), (key, []))[1].append(d)
    out = []
    for key, members in groups.values():
        row = SON([("_id", key)])
        for name, acc in spec.items():
            if name == "_id":
                continue
            if not isinstance(acc, dict) or len(acc) != 1:
                raise CommandError(40234, "Location40234", f"The field '{name}' must be an accumulator object")
            (op, expr), = acc.items()
            values = [field_path(m, expr) for m in members]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if op == "$sum":
                row[name] = sum(numbers)
            elif op == "$avg":
                row[name] = sum(numbers) / len(numbers) if numbers else None
            elif op == "$min":
                row[name] = min(values, key=sort_key) if values else None
            elif op == "$max":
                row[name] = max(values, key=sort_key) if values else None
            elif op == "$first":
                row[name] = values[0] if values else None
            elif op == "$push":
                row[name] = values
            else:
                raise CommandError(15952, "Location15952", f"unknown group operator '{op}'")
        out.append(row)
    return out


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, cfg):
        self.cfg = cfg
        self.store = Store()
        self.host, self.port = "127.0.0.1", 0
        self.log = Logger(cfg.log_file)
        self.conn_ids = itertools.count(1)
        # sha256(Authorization) -> monotonic expiry: a signed payload is good for one try.
        self.used_signatures = {}

    def spend_signature(self, authorization):
        """False when this Authorization header was already presented (a replay)."""
        now = time.monotonic()
        for k in [k for k, exp in self.used_signatures.items() if exp < now]:
            del self.used_signatures[k]
        key = hashlib.sha256(authorization.encode()).digest()
        if key in self.used_signatures:
            return False
        self.used_signatures[key] = now + 2 * self.cfg.max_skew + 60
        return True

    async def handle(self, reader, writer):
        conn = Connection(self, reader, writer, next(self.conn_ids))
        try:
            await conn.run()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, CloseConnection):
            pass
        except Exception as e:  # never let one connection take the server down
            self.log.event(conn=conn.id, event="connection-error", error=repr(e))
        finally:
            try:
                writer.close()
            except Exception:
                pass


class Connection:
    def __init__(self, server, reader, writer, conn_id):
        self.server = server
        self.cfg = server.cfg
        self.store = server.store
        self.reader = reader
        self.writer = writer
        self.id = conn_id
        self.user = None
        self.conversation = None  # {"id": 1, "nonce": bytes} between saslStart and saslContinue
        self.request_ids = itertools.count(1)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    async def run(self):
        while True:
            header = await self.reader.readexactly(16)
            length, request_id, _response_to, opcode = struct.unpack("<iiii", header)
            if length < 16 or length > MAX_MESSAGE:
                raise CloseConnection(f"message length {length}")
            body = await self.reader.readexactly(length - 16)
            if opcode == OP_MSG:
                await self.on_msg(request_id, body)
            elif opcode == OP_QUERY:
                await self.on_query(request_id, body)
            else:  # OP_COMPRESSED (never negotiated), legacy ops, garbage
                raise CloseConnection(f"opcode {opcode}")

    # ------------------------------------------------------------ framing

    def send(self, response_to, opcode, payload):
        header = struct.pack("<iiii", 16 + len(payload), next(self.request_ids), response_to,
                             opcode)
        self.writer.write(header + payload)

    def send_msg(self, response_to, doc):
        self.send(response_to, OP_MSG, struct.pack("<I", 0) + b"\x00" + bson.encode(doc))

    def send_reply(self, response_to, doc):
        self.send(response_to, OP_REPLY,
                  struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(doc))

    @staticmethod
    def bson_len(buf, pos):
        if pos + 4 > len(buf):
            raise CloseConnection("truncated document")
        n = struct.unpack_from("<i", buf, pos)[0]
        if n < 5 or pos + n > len(buf):
            raise CloseConnection("document overruns message")
        return n

    @staticmethod
    def cstring(buf, pos):
        end = buf.find(b"\x00", pos)
        if end < 0:
            raise CloseConnection("unterminated cstring")
        return buf[pos:end].decode("utf-8", "replace"), end + 1

    def parse_msg(self, data):
        if len(data) < 5:
            raise CloseConnection("short OP_MSG")
        flags = struct.unpack_from("<I", data, 0)[0]
        if flags & 0xFFFF & ~(MSG_CHECKSUM_PRESENT | MSG_MORE_TO_COME):
            raise CloseConnection(f"unknown required OP_MSG flag bits {flags:#x}")
        end = len(data)
        if flags & MSG_CHECKSUM_PRESENT:
            end -= 4
            if end < 5:
                raise CloseConnection("short OP_MSG with checksum")
        pos = 4
        body_raw = None
        sequences = []
        while pos < end:
            kind = data[pos]
            pos += 1
            if kind == 0:
                if body_raw is not None:
                    raise CloseConnection("two kind-0 sections")
                n = self.bson_len(data[:end], pos)
                body_raw = data[pos:pos + n]
                pos += n
            elif kind == 1:
                if pos + 4 > end:
                    raise CloseConnection("truncated kind-1 section")
                size = struct.unpack_from("<i", data, pos)[0]
                if size < 5 or pos + size > end:
                    raise CloseConnection("kind-1 section overruns message")
                sec_end = pos + size
                ident, p = self.cstring(data[:sec_end], pos + 4)
                docs = []
                while p < sec_end:
                    n = self.bson_len(data[:sec_end], p)
                    docs.append(data[p:p + n])
                    p += n
                sequences.append((ident, docs))
                pos = sec_end
            else:
                raise CloseConnection(f"unknown section kind {kind}")
        if body_raw is None:
            raise CloseConnection("OP_MSG without a body")
        return flags, body_raw, sequences

    def decode(self, raw):
        if len(raw) > MAX_BSON_INTERNAL:
            raise CommandError(10334, "BSONObjectTooLarge",
                               f"BSONObj size: {len(raw)} is invalid")
        try:
            return bson.decode(raw, codec_options=CODEC)
        except (InvalidBSON, ValueError, OverflowError, UnicodeDecodeError) as e:
            raise CommandError(22, "InvalidBSON", f"invalid BSON: {e}")

    # ------------------------------------------------------------ opcodes

    async def on_msg(self, request_id, data):
        flags, body_raw, sequences = self.parse_msg(data)
        try:
            body = self.decode(body_raw)
            for ident, docs in sequences:
                if ident in body:
                    raise CommandError(2, "BadValue",
                                       f"duplicate field {ident} in body and sequence")
                body[ident] = [self.decode(d) for d in docs]
            reply = await self.dispatch(body, via_query=False)
        except CommandError as e:
            reply = e.doc()
        if not flags & MSG_MORE_TO_COME:
            self.send_msg(request_id, reply)
            await self.writer.drain()

    async def on_query(self, request_id, data):
        if len(data) < 4:
            raise CloseConnection("short OP_QUERY")
        pos = 4  # flags
        ns, pos = self.cstring(data, pos)
        if pos + 8 > len(data):
            raise CloseConnection("short OP_QUERY")
        pos += 8  # numberToSkip, numberToReturn
        n = self.bson_len(data, pos)
        try:
            query = self.decode(data[pos:pos + n])
            if "$query" in query and isinstance(query["$query"], dict):
                query = query["$query"]
            name = next(iter(query), "")
            if not ns.endswith(".$cmd"):
                raise CommandError(352, "UnsupportedOpQueryCommand",
                                   "OP_QUERY is only supported for hello/isMaster")
            if name not in ("hello", "isMaster", "ismaster"):
                raise CommandError(352, "UnsupportedOpQueryCommand",
                                   f"Unsupported OP_QUERY command: {name}. The client driver "
                                   "may require an upgrade.")
            query["$db"] = ns[:-len(".$cmd")]
            reply = await self.dispatch(query, via_query=True)
        except CommandError as e:
            reply = e.doc()
        self.send_reply(request_id, reply)
        await self.writer.drain()

    # ------------------------------------------------------------ commands

    async def dispatch(self, body, via_query):
        if not body:
            raise CommandError(59, "CommandNotFound", "no command given")
        name = next(iter(body))
        db = body.get("$db")
        if not isinstance(db, str) or not db:
            raise CommandError(40414, "Location40414",
                               "BSON field '$db' is missing but a required field")
        if name not in PRE_AUTH and self.user is None:
            self.log_command(name, db, 13)
            raise CommandError(13, "Unauthorized", f"command {name} requires authentication")
        handler = COMMANDS.get(name)
        if name not in COMMANDS:
            self.log_command(name, db, 59)
            raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
        try:
            if name in ("commitTransaction", "abortTransaction"):
                result = self.end_transaction(name, body, db)
            else:
                self.join_transaction(name, body, db)
                result = handler(self, body, db)
            if asyncio.iscoroutine(result):
                result = await result
        except CommandError as e:
            self.log_command(name, db, e.code)
            raise
        self.log_command(name, db, None)
        return result

    def log_command(self, name, db, code):
        if self.cfg.log_commands:
            self.server.log.event(conn=self.id, event="command", command=name, db=db,
                                  user=self.user, ok=code is None, code=code)

    def cmd_hello(self, body, db):
        name = next(iter(body))
        doc = SON()
        if name == "hello":
            doc["isWritablePrimary"] = True
        else:
            doc["ismaster"] = True
        if body.get("helloOk"):
            doc["helloOk"] = True
        doc.update([
            ("maxBsonObjectSize", MAX_BSON), ("maxMessageSizeBytes", MAX_MESSAGE),
            ("maxWriteBatchSize", 100000), ("localTime", now_utc()),
            ("logicalSessionTimeoutMinutes", 30), ("connectionId", self.id),
            ("minWireVersion", 0), ("maxWireVersion", MAX_WIRE_VERSION), ("readOnly", False),
        ])
        if self.cfg.replica_set:
            me = f"{self.server.host}:{self.server.port}"
            doc.update([("setName", self.cfg.replica_set), ("hosts", [me]), ("me", me),
                        ("primary", me), ("secondary", False)])
        mechs = body.get("saslSupportedMechs")
        if isinstance(mechs, str) and mechs.startswith("$external."):
            if mechs[len("$external."):] in self.cfg.users:
                doc["saslSupportedMechs"] = ["MONGODB-AWS"]
        doc["ok"] = 1.0
        return doc

    # -- MONGODB-AWS

    def auth_log(self, decision, reason, **fields):
        self.server.log.event(conn=self.id, peer=self.peer, event="auth", decision=decision,
                              reason=reason, **fields)

    def cmd_sasl_start(self, body, db):
        self.conversation = None
        try:
            if db != "$external":
                raise AuthReject(f"saslStart on database {db!r}, not $external")
            mech = body.get("mechanism")
            if mech != "MONGODB-AWS":
                raise AuthReject(f"mechanism {mech!r} is not enabled")
            payload = body.get("payload")
            if not isinstance(payload, bytes):
                raise AuthReject("saslStart payload is not binary")
            try:
                first = bson.decode(bytes(payload), codec_options=CODEC)
            except Exception:
                raise AuthReject("saslStart payload is not BSON")
            r = first.get("r")
            if not isinstance(r, bytes) or (isinstance(r, Binary) and r.subtype != 0):
                raise AuthReject("client nonce r is not binary subtype 0")
            if len(r) != 32:
                raise AuthReject(f"client nonce r is {len(r)} bytes, not 32")
            p = first.get("p")
            if isinstance(p, bool) or not isinstance(p, int) or p != 110:
                raise AuthReject(f"gs2 channel binding flag p is {p!r}, not 110 ('n')")
        except AuthReject as e:
            self.auth_log("reject", e.reason, step="saslStart", sts_called=False)
            raise auth_failed()
        nonce = bytes(r) + os.urandom(32)
        self.conversation = {"id": 1, "nonce": nonce}
        out = bson.encode(SON([("s", Binary(nonce, 0)), ("h", self.cfg.sts_host)]))
        return SON([("conversationId", 1), ("done", False), ("payload", Binary(out, 0)),
                    ("ok", 1.0)])

    async def cmd_sasl_continue(self, body, db):
        conv, self.conversation = self.conversation, None  # one try per nonce
        fields = {"step": "saslContinue", "sts_called": False}
        try:
            if conv is None:
                raise AuthReject("saslContinue without a conversation (no saslStart, or the "
                                 "nonce was already used)")
            if db != "$external":
                raise AuthReject(f"saslContinue on database {db!r}, not $external")
            cid = body.get("conversationId")
            if isinstance(cid, bool) or not isinstance(cid, int) or cid != conv["id"]:
                raise AuthReject(f"conversationId {cid!r} is not this connection's "
                                 f"conversation {conv['id']}")
            payload = body.get("payload")
            if not isinstance(payload, bytes):
                raise AuthReject("saslContinue payload is not binary")
            try:
                second = bson.decode(bytes(payload), codec_options=CODEC)
            except Exception:
                raise AuthReject("saslContinue payload is not BSON")
            a, d, t = second.get("a"), second.get("d"), second.get("t")
            if not isinstance(a, str) or not isinstance(d, str):
                raise AuthReject("payload needs a (Authorization) and d (X-Amz-Date) strings")
            if t is not None and not isinstance(t, str):
                raise AuthReject("payload t (session token) is not a string")
            if t == "":
                t = None
            extra = sorted(set(second.keys()) - {"a", "d", "t"})
            if extra:
                fields["ignored_payload_fields"] = extra
            m = AUTH_RE.match(a)
            if not m:
                raise AuthReject("Authorization is not an AWS4-HMAC-SHA256 header")
            akid, scope_date, scope_region, scope_service, signed, _sig = m.groups()
            fields["access_key_id"] = akid
            fields["scope"] = f"{scope_date}/{scope_region}/{scope_service}"
            if scope_service != "sts":
                raise AuthReject(f"credential scope service {scope_service!r}, not sts")
            fields["signed_headers"] = signed
            signed_set = set(signed.split(";"))
            need = list(REQUIRED_SIGNED) + (["x-amz-security-token"] if t else [])
            missing = [h for h in need if h not in signed_set]
            if missing:
                raise AuthReject("SignedHeaders lack " + ", ".join(missing))
            unknown = signed_set - {"content-length", "content-type", "host", "x-amz-date",
                                    "x-mongodb-server-nonce", "x-mongodb-gs2-cb-flag"}
            if t:
                unknown.discard("x-amz-security-token")
            if unknown:
                raise AuthReject("SignedHeaders name headers the request does not have: "
                                 + ", ".join(sorted(unknown)))
            if not re.fullmatch(r"\d{8}T\d{6}Z", d):
                raise AuthReject(f"X-Amz-Date {d!r} is not YYYYMMDDTHHMMSSZ")
            if d[:8] != scope_date:
                raise AuthReject(f"credential scope date {scope_date} is not X-Amz-Date's")
            when = datetime.datetime.strptime(d, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)
            skew = abs((now_utc() - when).total_seconds())
            if skew > self.cfg.max_skew:
                raise AuthReject(f"X-Amz-Date is {int(skew)} s away from now "
                                 f"(over {self.cfg.max_skew})")
            want_region = derive_region(self.cfg.sts_host)
            if not self.cfg.lax_region and scope_region != want_region:
                raise AuthReject(f"credential scope region {scope_region!r}, but STS host "
                                 f"{self.cfg.sts_host!r} is region {want_region!r}")
            if not self.server.spend_signature(a):
                raise AuthReject("this signed payload was already presented (replay; it was "
                                 "signed for another conversation's nonce)")
            headers = [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", str(len(STS_BODY))),
                ("Host", self.cfg.sts_host),
                ("X-Amz-Date", d),
                ("X-MongoDB-Server-Nonce", base64.b64encode(conv["nonce"]).decode()),
                ("X-MongoDB-GS2-CB-Flag", "n"),
            ]
            if t:
                headers.append(("X-Amz-Security-Token", t))
            headers.append(("Authorization", a))
            fields["sts_called"] = True
            status, sts_body = await asyncio.to_thread(self.call_sts, headers)
            fields["sts_status"] = status
            if status != 200:
                code, msg = sts_error(sts_body)
                fields["sts_error"] = code
                raise AuthReject(f"STS answered {status} {code}: {msg}")
            arn = caller_arn(sts_body)
            fields["caller_arn"] = arn
            if not arn:
                raise AuthReject("STS answer carries no Arn")
            user = self.map_user(arn)
            if user is None:
                raise AuthReject(f"{arn} is no user in $external")
        except AuthReject as e:
            self.auth_log("reject", e.reason, **fields)
            raise auth_failed()
        except OSError as e:
            self.auth_log("reject", f"STS unreachable at {self.cfg.sts_connect}: {e}", **fields)
            raise auth_failed()
        self.user = user
        self.auth_log("accept", f"{arn} is $external user {user}", user=user, **fields)
        return SON([("conversationId", conv["id"]), ("done", True),
                    ("payload", Binary(b"", 0)), ("ok", 1.0)])

    def call_sts(self, headers):
        host, _, port = self.cfg.sts_connect.rpartition(":")
        if not host:
            host, port = self.cfg.sts_connect, "80"
        c = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.cfg.sts_timeout)
        try:
            c.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                c.putheader(k, v)
            c.endheaders(STS_BODY)
            r = c.getresponse()
            return r.status, r.read(1 << 20)
        finally:
            c.close()

    def map_user(self, arn):
        if arn in self.cfg.users:
            return arn
        m = re.fullmatch(r"arn:([\w-]+):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[\w+=,.@-]+",
                         arn)
        if not m:
            return None
        part, account, name = m.groups()
        for u in self.cfg.users:
            um = re.fullmatch(r"arn:([\w-]+):iam::(\d{12}):role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]+)",
                              u)
            if um and um.groups() == (part, account, name):
                return u
        return None

    # -- after authentication

    # -- transactions

    @staticmethod
    def transaction_key(body):
        if body.get("autocommit") is not False:
            return None
        lsid, txn = body.get("lsid"), body.get("txnNumber")
        if not isinstance(lsid, dict) or not isinstance(txn, int):
            raise CommandError(50768, "Location50768", "a transaction needs lsid and txnNumber")
        return (bytes(lsid.get("id", b"")), int(txn))

    def join_transaction(self, name, body, db):
        key = self.transaction_key(body)
        if key is None:
            return
        if not self.cfg.replica_set:
            raise CommandError(20, "IllegalOperation",
                               "Transaction numbers are only allowed on a replica set member or mongos")
        txns = self.store.txns
        if body.get("startTransaction"):
            txns[key] = {}
        elif key not in txns:
            raise CommandError(251, "NoSuchTransaction", f"Transaction {key[1]} has been aborted.")
        coll = body.get(name) if name in WRITES else None
        if isinstance(coll, str) and (db, coll) not in txns[key]:
            existing = self.store.dbs.get(db, {}).get(coll)
            txns[key][(db, coll)] = copy.deepcopy(existing) if existing is not None else None

    def end_transaction(self, name, body, db):
        if db != "admin":
            raise CommandError(13, "Unauthorized", f"{name} may only be run against the admin database.")
        key = self.transaction_key(body)
        if key is None:
            raise CommandError(50768, "Location50768", f"{name} needs autocommit: false")
        snapshots = self.store.txns.pop(key, None)
        if snapshots is None:
            if name == "commitTransaction" and key in self.store.committed:
                return SON([("ok", 1.0)])
            raise CommandError(251, "NoSuchTransaction", f"Transaction {key[1]} has been aborted.")
        if name == "commitTransaction":
            self.store.committed.add(key)
        else:
            for (d, c), docs in snapshots.items():
                colls = self.store.dbs.setdefault(d, {})
                if docs is None:
                    colls.pop(c, None)
                else:
                    colls[c] = docs
                self.store.forget_index(d, c)
        return SON([("ok", 1.0)])

    # -- update and aggregate

    def cmd_update(self, body, db):
        coll = self.coll_name(body, "update")
        updates = body.get("updates")
        if not isinstance(updates, list):
            raise CommandError(2, "BadValue", "update needs updates")
        store = self.store.coll(db, coll, create=True)
        n = modified = 0
        upserted = []
        for i, spec in enumerate(updates):
            q, u = spec.get("q") or {}, spec.get("u")
            if not isinstance(u, dict):
                raise CommandError(9, "FailedToParse", "update needs u as a document")
            operators = bool(u) and all(k.startswith("$") for k in u)
            if not operators and any(k.startswith("$") for k in u):
                raise CommandError(9, "FailedToParse", "the update mixes operators and fields")
            if not operators and spec.get("multi"):
                raise CommandError(9, "FailedToParse", "multi update is not supported for replacement-style update")
            hits = [d for d in store if matches(d, q)]
            if not spec.get("multi"):
                hits = hits[:1]
            for d in hits:
                before = copy.deepcopy(d)
                apply_update(d, u, operators)
                n += 1
                modified += 0 if values_equal(before, d) else 1
            if not hits and spec.get("upsert"):
                d = SON([("_id", q.get("_id", ObjectId()))])
                if operators:
                    d.update((k, v) for k, v in q.items() if k != "_id" and not k.startswith("$"))
                apply_update(d, u, operators)
                store.append(d)
                self.store.forget_index(db, coll)
                upserted.append(SON([("index", i), ("_id", d["_id"])]))
                n += 1
        out = SON([("n", n), ("nModified", modified)])
        if upserted:
            out["upserted"] = upserted
        out["ok"] = 1.0
        return out

    def cmd_aggregate(self, body, db):
        coll = body.get("aggregate")
        pipeline = body.get("pipeline")
        if not isinstance(pipeline, list):
            raise CommandError(14, "TypeMismatch", "'pipeline' option must be specified as an array")
        if not isinstance(body.get("cursor"), dict):
            raise CommandError(9, "FailedToParse", "The 'cursor' option is required")
        docs = list(self.store.coll(db, coll)) if isinstance(coll, str) else []
        for stage in pipeline:
            if not isinstance(stage, dict) or len(stage) != 1:
                raise CommandError(40323, "Location40323", "A pipeline stage specification object must contain exactly one field.")
            (op, arg), = stage.items()
            if op == "$match":
                docs = [d for d in docs if matches(d, arg)]
            elif op == "$project":
                docs = [project(d, arg) for d in docs]
            elif op == "$sort":
                for key, direction in reversed(list(arg.items())):
                    docs.sort(key=lambda d, k=key: sort_key(d.get(k)), reverse=direction == -1)
            elif op == "$skip":
                docs = docs[int(arg):]
            elif op == "$limit":
                docs = docs[:int(arg)]
            elif op == "$count":
                docs = [SON([(arg, len(docs))])] if docs else []
            elif op == "$group":
                docs = group(docs, arg)
            else:
                raise CommandError(40324, "Location40324", f"Unrecognized pipeline stage name: '{op}'")
        bs = body["cursor"].get("batchSize")
        return self.cursor_reply(f"{db}.{coll}", docs, int(bs) if bs is not None else 101, False)

    def cmd_ping(self, body, db):
        return SON([("ok", 1.0)])

    def cmd_build_info(self, body, db):
        return SON([("version", "5.0.0"), ("gitVersion", "1234567890abcdef1234567890abcdef12345678"),
                    ("versionArray", [5, 0, 0, 0]), ("bits", 64), ("debug", False),
                    ("maxBsonObjectSize", MAX_BSON), ("ok", 1.0)])

    def cmd_connection_status(self, body, db):
        users = [SON([("user", self.user), ("db", "$external")])] if self.user else []
        return SON([("authInfo", SON([("authenticatedUsers", users),
                                      ("authenticatedUserRoles", [])])), ("ok", 1.0)])

    @staticmethod
    def coll_name(body, name):
        coll = body.get(name)
        if not isinstance(coll, str) or not coll:
            raise CommandError(73, "InvalidNamespace", f"invalid collection name for {name}")
        return coll

    def cmd_insert(self, body, db):
        coll = self.coll_name(body, "insert")
        docs = body.get("documents")
        if not isinstance(docs, list):
            raise CommandError(2, "BadValue", "insert needs documents")
        if len(docs) > 100000:
            raise CommandError(2, "BadValue", "Write batch sizes must be between 1 and 100000")
        store = self.store.coll(db, coll, create=True)
        n = 0
        errors = []
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict):
                errors.append(SON([("index", i), ("code", 2), ("errmsg", "not a document")]))
                continue
            # The server stores _id first, generating one if the client did not.
            d = SON([("_id", doc["_id"] if "_id" in doc else ObjectId())])
            d.update((k, v) for k, v in doc.items() if k != "_id")
            doc = d
            index = self.store.id_index(db, coll)
            if id_key(doc["_id"]) in index:
                errors.append(SON([("index", i), ("code", 11000),
                                   ("errmsg", f"E11000 duplicate key error collection: "
                                              f"{db}.{coll} index: _id_")]))
                if body.get("ordered", True):
                    break
                continue
            store.append(doc)
            index.add(id_key(doc["_id"]))
            n += 1
        out = SON([("n", n)])
        if errors:
            out["writeErrors"] = errors
        out["ok"] = 1.0
        return out

    def select(self, db, coll, flt):
        if flt is not None and not isinstance(flt, dict):
            raise CommandError(2, "BadValue", "filter must be an object")
        return [d for d in self.store.coll(db, coll) if matches(d, flt)]

    def cursor_reply(self, ns, docs, batch_size, single_batch, first=True):
        if batch_size is not None and batch_size > 0 and len(docs) > batch_size \
                and not single_batch:
            cid = next(self.store.cursor_ids)
            self.store.cursors[cid] = (ns, docs[batch_size:])
            batch, cursor_id = docs[:batch_size], Int64(cid)
        else:
            batch, cursor_id = docs, Int64(0)
        return SON([("cursor", SON([("id", cursor_id), ("ns", ns),
                                    ("firstBatch" if first else "nextBatch", batch)])),
                    ("ok", 1.0)])

    def cmd_find(self, body, db):
        coll = self.coll_name(body, "find")
        docs = self.select(db, coll, body.get("filter"))
        sort = body.get("sort")
        if isinstance(sort, dict):
            for key, direction in reversed(list(sort.items())):
                docs.sort(key=lambda d, k=key: sort_key(d.get(k)), reverse=direction == -1)
        skip = int(body.get("skip") or 0)
        docs = docs[skip:]
        limit = int(body.get("limit") or 0)
        if limit:
            docs = docs[:abs(limit)]
        docs = [project(d, body.get("projection")) for d in docs]
        bs = body.get("batchSize")
        return self.cursor_reply(f"{db}.{coll}", docs, int(bs) if bs is not None else None,
                                 bool(body.get("singleBatch")) or limit < 0)

    def cmd_get_more(self, body, db):
        cid = body.get("getMore")
        coll = body.get("collection")
        entry = self.store.cursors.get(int(cid)) if isinstance(cid, int) else None
        if entry is None or entry[0] != f"{db}.{coll}":
            raise CommandError(43, "CursorNotFound", f"cursor id {cid} not found")
        del self.store.cursors[int(cid)]
        ns, rest = entry
        bs = body.get("batchSize")
        reply = self.cursor_reply(ns, rest, int(bs) if bs else 101, False, first=False)
        return reply

    def cmd_kill_cursors(self, body, db):
        killed, not_found = [], []
        for cid in body.get("cursors") or []:
            if self.store.cursors.pop(int(cid), None) is not None:
                killed.append(cid)
            else:
                not_found.append(cid)
        return SON([("cursorsKilled", killed), ("cursorsNotFound", not_found),
                    ("cursorsAlive", []), ("cursorsUnknown", []), ("ok", 1.0)])

    def cmd_delete(self, body, db):
        coll = self.coll_name(body, "delete")
        store = self.store.coll(db, coll)
        n = 0
        for spec in body.get("deletes") or []:
            limit = int(spec.get("limit", 0))
            kept, removed = [], 0
            for d in store:
                if (limit == 0 or removed < limit) and matches(d, spec.get("q")):
                    removed += 1
                else:
                    kept.append(d)
            store[:] = kept
            n += removed
        self.store.forget_index(db, coll)
        return SON([("n", n), ("ok", 1.0)])

    def cmd_count(self, body, db):
        coll = self.coll_name(body, "count")
        return SON([("n", len(self.select(db, coll, body.get("query")))), ("ok", 1.0)])

    def cmd_create(self, body, db):
        self.store.coll(db, self.coll_name(body, "create"), create=True)
        return SON([("ok", 1.0)])

    def cmd_drop(self, body, db):
        coll = self.coll_name(body, "drop")
        self.store.forget_index(db, coll)
        if self.store.dbs.get(db, {}).pop(coll, None) is None:
            raise CommandError(26, "NamespaceNotFound", "ns not found")
        return SON([("nIndexesWas", 1), ("ns", f"{db}.{coll}"), ("ok", 1.0)])

    def cmd_drop_database(self, body, db):
        self.store.dbs.pop(db, None)
        self.store.forget_index(db)
        return SON([("dropped", db), ("ok", 1.0)])

    def cmd_list_databases(self, body, db):
        if db != "admin":
            raise CommandError(13, "Unauthorized", "listDatabases may only be run against "
                                                   "the admin database.")
        dbs = [SON([("name", name), ("sizeOnDisk", 0.0), ("empty", not colls)])
               for name, colls in sorted(self.store.dbs.items())]
        if body.get("nameOnly"):
            dbs = [SON([("name", d["name"])]) for d in dbs]
        return SON([("databases", dbs), ("totalSize", 0.0), ("ok", 1.0)])

    def cmd_list_collections(self, body, db):
        docs = []
        for name in sorted(self.store.dbs.get(db, {})):
            docs.append(SON([("name", name), ("type", "collection"), ("options", SON()),
                             ("info", SON([("readOnly", False)])),
                             ("idIndex", SON([("v", 2), ("key", SON([("_id", 1)])),
                                              ("name", "_id_")]))]))
        flt = body.get("filter")
        docs = [d for d in docs if matches(d, flt)]
        if body.get("nameOnly"):
            docs = [SON([("name", d["name"]), ("type", d["type"])]) for d in docs]
        return self.cursor_reply(f"{db}.$cmd.listCollections", docs, None, True)

    def cmd_end_sessions(self, body, db):
        return SON([("ok", 1.0)])

    def cmd_get_log(self, body, db):
        if body.get("getLog") == "*":
            return SON([("names", ["startupWarnings"]), ("ok", 1.0)])
        return SON([("totalLinesWritten", 0), ("log", []), ("ok", 1.0)])

    def cmd_host_info(self, body, db):
        return SON([("system", SON([("currentTime", now_utc()), ("hostname", "docdb-standin"),
                                    ("cpuArch", "x86_64")])),
                    ("os", SON([("type", "Linux")])), ("extra", SON()), ("ok", 1.0)])

    def cmd_get_parameter(self, body, db):
        out = SON()
        if "featureCompatibilityVersion" in body or body.get("getParameter") == "*":
            out["featureCompatibilityVersion"] = SON([("version", "5.0")])
        out["ok"] = 1.0
        return out

    def cmd_whatsmyuri(self, body, db):
        return SON([("you", self.peer), ("ok", 1.0)])


COMMANDS = {
    "hello": Connection.cmd_hello,
    "isMaster": Connection.cmd_hello,
    "ismaster": Connection.cmd_hello,
    "saslStart": Connection.cmd_sasl_start,
    "saslContinue": Connection.cmd_sasl_continue,
    "ping": Connection.cmd_ping,
    "buildInfo": Connection.cmd_build_info,
    "buildinfo": Connection.cmd_build_info,
    "connectionStatus": Connection.cmd_connection_status,
    "insert": Connection.cmd_insert,
    "find": Connection.cmd_find,
    "getMore": Connection.cmd_get_more,
    "killCursors": Connection.cmd_kill_cursors,
    "delete": Connection.cmd_delete,
    "update": Connection.cmd_update,
    "aggregate": Connection.cmd_aggregate,
    "commitTransaction": None,
    "abortTransaction": None,
    "count": Connection.cmd_count,
    "create": Connection.cmd_create,
    "drop": Connection.cmd_drop,
    "dropDatabase": Connection.cmd_drop_database,
    "listDatabases": Connection.cmd_list_databases,
    "listCollections": Connection.cmd_list_collections,
    "endSessions": Connection.cmd_end_sessions,
    "getLog": Connection.cmd_get_log,
    "hostInfo": Connection.cmd_host_info,
    "getParameter": Connection.cmd_get_parameter,
    "whatsmyuri": Connection.cmd_whatsmyuri,
}


def sts_error(body):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "?", body[:200].decode("utf-8", "replace")
    code = msg = ""
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Code" and not code:
            code = (el.text or "").strip()
        elif tag == "Message" and not msg:
            msg = (el.text or "").strip()
    return code or "?", msg[:200]


def caller_arn(body):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Arn":
            return (el.text or "").strip()
    return None


async def main_async(a):
    cfg = Config(a)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    ctx.verify_mode = ssl.CERT_NONE
    server = Server(cfg)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", a.port, ssl=ctx,
                                     ssl_handshake_timeout=10, limit=1 << 16)
    port = srv.sockets[0].getsockname()[1]
    server.host, server.port = "127.0.0.1", port
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.log.event(event="start", port=port, sts_host=cfg.sts_host,
                     sts_connect=cfg.sts_connect, users=cfg.users)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--sts-host", required=True,
                   help="the STS host h given to clients, which they sign for (host[:port])")
    p.add_argument("--sts-connect", default=None,
                   help="where to send the rebuilt request (host:port, plain HTTP); "
                        "default --sts-host.  The Host header stays --sts-host")
    p.add_argument("--user", action="append", default=[],
                   help="an IAM role (or user) ARN known in $external; repeatable")
    p.add_argument("--log", default=None, help="JSON-lines decision log (default stderr)")
    p.add_argument("--log-commands", action="store_true",
                   help="also log every command's name, db, user and result code (no bodies)")
    p.add_argument("--max-skew-seconds", type=int, default=900)
    p.add_argument("--lax-region", action="store_true",
                   help="do not require the scope region the driver spec derives from h")
    p.add_argument("--sts-timeout", type=float, default=10.0)
    p.add_argument("--replica-set", default=None,
                   help="answer hello as this replica set's primary (DocumentDB: rs0)")
    a = p.parse_args()
    try:
        asyncio.run(main_async(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
