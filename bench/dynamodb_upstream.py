#!/usr/bin/env python3
"""A fast local stand-in for DynamoDB, the upstream of bench/dynamodb.sh.

    python3 bench/dynamodb_upstream.py --port-file PATH [--port 0]

Why not moto: moto checks signatures and policies (the integration tests need that) but costs
milliseconds per request and closes every connection, so it would measure moto, not the proxy.
This server is the other extreme: it does NOT check signatures or permissions. It only counts
who signed each request (the access key id in `Authorization`, and whether a session token came
with it), so the benchmark can check that the proxy re-signed with the role's temporary
credentials while direct requests carry the client's dummy key.

It answers POSTs with `X-Amz-Target: DynamoDB_20120810.PutItem` (stores the item under its
key attributes, answers `{}`) and `DynamoDB_20120810.GetItem` (answers `{"Item": ...}` when
the key was put, else `{}`), with `Content-Type: application/x-amz-json-1.0`, `Content-Length`,
`x-amz-crc32` (zlib.crc32 of the body, which botocore checks) and `x-amzn-RequestId`, over
HTTP/1.1 keep-alive. Anything else gets a DynamoDB-shaped 400. `GET /stats` returns the
signer counts as JSON. One thread per connection (ThreadingHTTPServer); the whole response is
written with a single send and TCP_NODELAY, so no Nagle/delayed-ACK stalls.

It writes its port to --port-file once it listens, and stops on SIGTERM/SIGINT.
"""

import argparse
import json
import os
import re
import signal
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GET_ITEM = "DynamoDB_20120810.GetItem"
PUT_ITEM = "DynamoDB_20120810.PutItem"
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")

ITEMS = {}  # (table, canonical key JSON) -> item
ITEMS_LOCK = threading.Lock()
STATS = {}  # "AKID token|no-token" -> count
STATS_LOCK = threading.Lock()


def key_of(table, item, key_names):
    return table, json.dumps({k: item.get(k) for k in sorted(key_names)}, sort_keys=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    disable_nagle_algorithm = True
    server_version = "dynamodb-standin"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status, payload, extra=()):
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        head = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Bad Request'}",
            "Content-Type: application/x-amz-json-1.0",
            f"Content-Length: {len(body)}",
            f"x-amz-crc32: {zlib.crc32(body) & 0xFFFFFFFF}",
            "x-amzn-RequestId: STANDIN0000000000000000000000000000000000000000000000",
            *extra,
        ]
        # One write for head and body.
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def error(self, code, message):
        self.answer(400, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}, (f"x-amzn-ErrorType: {code}",))

    def do_GET(self):
        if self.path != "/stats":
            self.error("UnknownOperationException", "only GET /stats")
            return
        with STATS_LOCK:
            stats = dict(STATS)
        self.answer(200, stats)

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self.error("ValidationException", "no Content-Length")
            return
        body = self.rfile.read(int(length))
        m = CREDENTIAL.search(self.headers.get("Authorization", ""))
        signer = (m.group(1) if m else "unsigned") + (" token" if self.headers.get("X-Amz-Security-Token") else " no-token")
        with STATS_LOCK:
            STATS[signer] = STATS.get(signer, 0) + 1
        target = self.headers.get("X-Amz-Target", "")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            self.error("SerializationException", "the body is not JSON")
            return
        table = request.get("TableName", "")
        if target == PUT_ITEM:
            item = request.get("Item") or {}
            # The stand-in's tables have a hash key "pk" and an optional range key "sk".
            with ITEMS_LOCK:
                ITEMS[key_of(table, item, [k for k in ("pk", "sk") if k in item])] = item
            self.answer(200, b"{}")
        elif target == GET_ITEM:
            key = request.get("Key") or {}
            with ITEMS_LOCK:
                item = ITEMS.get(key_of(table, key, list(key)))
            self.answer(200, {"Item": item} if item is not None else b"{}")
        else:
            self.error("UnknownOperationException", f"the stand-in answers only GetItem and PutItem, not {target!r}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--port-file", required=True, help="write the port here once listening")
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
