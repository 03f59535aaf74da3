#!/usr/bin/env python3
"""Open many idle PostgreSQL connections through a TLS endpoint and hold them.

Standard library only (asyncio + ssl). Each connection speaks protocol 3.0 by hand:
SSLRequest -> 'S' -> TLS handshake (client certificate, verify-full against --ca) ->
StartupMessage -> reads until ReadyForQuery. Authentication requests are not answered: the
endpoint is expected to log the client in on its own (Portcullis does, from the client
certificate). Any ErrorResponse or AuthenticationXXX other than Ok counts as a failure.

When every connection is either ready or failed, a JSON summary is written to --status, then
the connections are held until the file --release exists (or --hold seconds pass), and closed
with a Terminate message.

Used by bench/pg.sh for the idle-connection memory measurement.
"""

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import time

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def startup_message(user: str, database: str, application: str) -> bytes:
    params = b""
    for k, v in (("user", user), ("database", database), ("application_name", application)):
        params += k.encode() + b"\0" + v.encode() + b"\0"
    params += b"\0"
    body = struct.pack("!i", 196608) + params
    return struct.pack("!i", len(body) + 4) + body


async def read_message(reader: asyncio.StreamReader):
    header = await reader.readexactly(5)
    tag = header[:1]
    (length,) = struct.unpack("!i", header[1:])
    body = await reader.readexactly(length - 4)
    return tag, body


def error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '?')}"


async def open_one(args, ctx: ssl.SSLContext, sem: asyncio.Semaphore):
    async with sem:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), args.timeout)
            writer.write(SSL_REQUEST)
            await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(1), args.timeout)
            if answer != b"S":
                raise RuntimeError(f"SSLRequest answered {answer!r}")
            await asyncio.wait_for(writer.start_tls(ctx, server_hostname=args.server_name), args.timeout)
            writer.write(startup_message(args.user, args.dbname, "bench-idle"))
            await writer.drain()
            deadline = time.monotonic() + args.timeout
            while True:
                tag, body = await asyncio.wait_for(read_message(reader), max(0.1, deadline - time.monotonic()))
                if tag == b"E":
                    raise RuntimeError(error_text(body))
                if tag == b"R":
                    (code,) = struct.unpack("!i", body[:4])
                    if code != 0:
                        raise RuntimeError(f"authentication request {code} (this client sends no password)")
                if tag == b"Z":
                    return (reader, writer), None
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            if writer is not None:
                writer.close()
            return None, f"{type(e).__name__}: {e}"


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-name", default="127.0.0.1", help="name checked against the server certificate")
    p.add_argument("--ca", required=True, help="CA that signed the server certificate")
    p.add_argument("--cert", required=True, help="client certificate")
    p.add_argument("--key", required=True, help="client key")
    p.add_argument("--user", default="app")
    p.add_argument("--dbname", default="bench")
    p.add_argument("-n", "--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16, help="connections being opened at once")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per connection attempt")
    p.add_argument("--status", required=True, help="JSON summary written when all are open")
    p.add_argument("--release", help="close everything once this file exists")
    p.add_argument("--hold", type=float, default=600.0, help="close everything after this many seconds at most")
    args = p.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED

    sem = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    results = await asyncio.gather(*(open_one(args, ctx, sem) for _ in range(args.count)))
    elapsed = time.monotonic() - started
    conns = [c for c, err in results if c is not None]
    errors = {}
    for _, err in results:
        if err:
            errors[err] = errors.get(err, 0) + 1
    summary = {"requested": args.count, "ok": len(conns), "failed": args.count - len(conns), "seconds": round(elapsed, 2), "errors": errors}
    tmp = args.status + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f)
    os.replace(tmp, args.status)
    print(json.dumps(summary), file=sys.stderr)

    # Hold the connections idle; make sure none of them was closed under us meanwhile.
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline and not (args.release and os.path.exists(args.release)):
        await asyncio.sleep(0.2)
    closed_early = sum(1 for reader, _ in conns if reader.at_eof())
    for _, writer in conns:
        try:
            writer.write(b"X\0\0\0\x04")
            writer.close()
        except Exception:  # noqa: BLE001
            pass
    for _, writer in conns:
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except Exception:  # noqa: BLE001
            pass
    if closed_early:
        print(f"{closed_early} connections were closed by the server while idle", file=sys.stderr)
    return 0 if summary["failed"] == 0 and closed_early == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
