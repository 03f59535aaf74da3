#!/usr/bin/env python3
"""A test double of the EC2 instance metadata service (IMDS), standard library only.

    python3 imds_server.py --host H --port P [--mode v2|v2-required|v1-only]
        [--put-ttl N] [--role NAME]
        [--access-key AK --secret-key SK --session-token ST]
        [--region us-east-1] [--account 123456789012] [--log FILE]

Behaves like EC2's IMDS as SDKs see it:

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: N``
  (1..21600; missing or invalid -> 400) answers a random session token
  (text/plain) and echoes the TTL header.  A PUT carrying ``X-Forwarded-For``
  is refused with 403, as EC2 does.  In ``v1-only`` mode there is no IMDSv2 and
  the PUT answers 405 (SDKs then fall back to IMDSv1).
* ``--put-ttl N`` sets the IP TTL (IPv6: unicast hop limit) of the socket of a
  token PUT right before its response is written, and that connection is closed
  after the response: this is how EC2 applies ``HttpPutResponseHopLimit``.  With
  N=1 and one routing hop between client and server the reply never arrives.
  Every other response uses the default TTL.
* ``GET`` with ``X-aws-ec2-metadata-token``: the token is checked (unknown or
  expired -> 401).  Without a token (IMDSv1): allowed in ``v2`` and ``v1-only``
  modes, 401 in ``v2-required`` mode.  In ``v1-only`` mode a token header is
  ignored (that IMDS knows nothing of tokens).
* Tree: ``/``, ``/latest/``, ``/latest/meta-data/`` (listing),
  ``.../placement/region``, ``.../iam/security-credentials/`` (the role name),
  ``.../iam/security-credentials/ROLE`` (JSON credentials, Expiration ~6 h
  ahead), ``.../iam/info``, ``/latest/dynamic/instance-identity/document``, and
  the usual instance leaves.  Unknown paths -> 404; other methods -> 405.

One line per request goes to stderr, or to ``--log FILE``: time, client,
method, path, status (and the TTL applied to a token response).  Neither
tokens nor credentials are ever logged.  On start it prints
``imds_server listening on http://HOST:PORT ...`` on stdout (with the real port
when ``--port 0``).  SIGTERM/SIGINT stop it cleanly.
"""

import argparse
import base64
import datetime
import json
import os
import secrets
import signal
import socket
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
CREDENTIAL_LIFETIME = datetime.timedelta(hours=6)
# Re-issue (new timestamps) once fewer than this remain, as EC2 rotates early.
CREDENTIAL_REFRESH_MARGIN = datetime.timedelta(minutes=15)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _random_id(alphabet, n):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _ec2_json(obj):
    # EC2's IMDS pretty-prints with "key" : value and two-space indents.
    return json.dumps(obj, indent=2, separators=(",", " : "))


def _error_page(code, reason):
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
        '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
        " <head>\n"
        f"  <title>{code} - {reason}</title>\n"
        " </head>\n"
        " <body>\n"
        f"  <h1>{code} - {reason}</h1>\n"
        " </body>\n"
        "</html>\n"
    )


class Credentials:
    """The role's credentials: fixed keys, timestamps renewed before they run out."""

    def __init__(self, access_key, secret_key, session_token):
        self.access_key = access_key or "ASIA" + _random_id(string.ascii_uppercase + string.digits, 16)
        self.secret_key = secret_key or _random_id(string.ascii_letters + string.digits + "+/", 40)
        self.session_token = session_token or base64.b64encode(os.urandom(96)).decode()
        self._lock = threading.Lock()
        self._issued = _utcnow()

    def document(self):
        with self._lock:
            now = _utcnow()
            if self._issued + CREDENTIAL_LIFETIME - now < CREDENTIAL_REFRESH_MARGIN:
                self._issued = now
            issued = self._issued
        return {
            "Code": "Success",
            "LastUpdated": issued.strftime(ISO),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key,
            "SecretAccessKey": self.secret_key,
            "Token": self.session_token,
            "Expiration": (issued + CREDENTIAL_LIFETIME).strftime(ISO),
        }


class Imds:
    """State shared by all handler threads."""

    def __init__(self, args):
        self.mode = args.mode
        self.put_ttl = args.put_ttl
        self.role = args.role
        self.region = args.region
        self.account = args.account
        self.az = args.region + "a"
        self.instance_id = "i-0" + secrets.token_hex(8)
        self.ami_id = "ami-0" + secrets.token_hex(8)
        self.instance_type = "t3.micro"
        self.private_ip = "172.31.16.10"  # data only, never contacted
        self.hostname = "ip-172-31-16-10.ec2.internal"
        self.mac = "0e:00:00:00:00:01"
        self.started = _utcnow()
        self.credentials = Credentials(args.access_key, args.secret_key, args.session_token)
        self.profile_id = "AIPA" + _random_id(string.ascii_uppercase + string.digits, 17)
        self._tokens = {}  # token -> monotonic expiry
        self._tokens_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._log = open(args.log, "a", buffering=1) if args.log else sys.stderr

    # tokens
    def issue_token(self, ttl):
        token = base64.b64encode(b"\x01\x00\x04\x00" + os.urandom(38)).decode()  # "AQAEA..." like EC2's
        now = time.monotonic()
        with self._tokens_lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
        return token

    def token_valid(self, token):
        with self._tokens_lock:
            exp = self._tokens.get(token)
        return exp is not None and exp > time.monotonic()

    # the metadata tree: dict = directory, str = leaf, callable = computed leaf
    def tree(self):
        role = self.role
        return {
            "latest": {
                "meta-data": {
                    "ami-id": self.ami_id,
                    "ami-launch-index": "0",
                    "hostname": self.hostname,
                    "iam": {
                        "info": lambda: _ec2_json({
                            "Code": "Success",
                            "LastUpdated": self.credentials.document()["LastUpdated"],
                            "InstanceProfileArn": f"arn:aws:iam::{self.account}:instance-profile/{role}",
                            "InstanceProfileId": self.profile_id,
                        }),
                        "security-credentials": {
                            role: lambda: _ec2_json(self.credentials.document()),
                        },
                    },
                    "instance-id": self.instance_id,
                    "instance-life-cycle": "on-demand",
                    "instance-type": self.instance_type,
                    "local-hostname": self.hostname,
                    "local-ipv4": self.private_ip,
                    "mac": self.mac,
                    "placement": {
                        "availability-zone": self.az,
                        "availability-zone-id": "use1-az1" if self.region == "us-east-1" else self.region + "-az1",
                        "region": self.region,
                    },
                    "reservation-id": "r-0" + self.instance_id[3:],
                    "security-groups": "default",
                    "services": {
                        "domain": "amazonaws.com",
                        "partition": "aws",
                    },
                },
                "dynamic": {
                    "instance-identity": {
                        "document": lambda: _ec2_json({
                            "accountId": self.account,
                            "architecture": "x86_64",
                            "availabilityZone": self.az,
                            "billingProducts": None,
                            "devpayProductCodes": None,
                            "marketplaceProductCodes": None,
                            "imageId": self.ami_id,
                            "instanceId": self.instance_id,
                            "instanceType": self.instance_type,
                            "kernelId": None,
                            "pendingTime": self.started.strftime(ISO),
                            "privateIp": self.private_ip,
                            "ramdiskId": None,
                            "region": self.region,
                            "version": "2017-09-30",
                        }),
                    },
                },
            },
        }

    def lookup(self, path):
        """The body for a GET of ``path``, or None when there is no such node."""
        node = self.tree()
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if isinstance(node, dict):
            return "\n".join(k + "/" if isinstance(v, dict) else k for k, v in node.items())
        return node() if callable(node) else node

    def log(self, line):
        with self._log_lock:
            try:
                self._log.write(f"{_utcnow().strftime(ISO)} {line}\n")
                self._log.flush()
            except (OSError, ValueError):
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    timeout = 30  # idle keep-alive connections are dropped after this
    imds = None  # set in main()

    def version_string(self):
        return self.server_version

    # logging: exactly one line per request, never headers or bodies
    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        method = self.command or "-"
        path = urlsplit(self.path).path if getattr(self, "path", None) else "-"
        extra = getattr(self, "_log_extra", "")
        self.imds.log(f"{self.client_address[0]} {method} {path} {code}{extra}")

    def log_message(self, format, *args):  # noqa: A002 - silence http.server's own lines
        pass

    def _send(self, code, body="", content_type="text/plain", headers=(), close=False):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "none")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _fail(self, code, close=False):
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  404: "Not Found", 405: "Method Not Allowed"}[code]
        self._send(code, _error_page(code, reason), "text/html", close=close)

    def _apply_put_ttl(self):
        """Give this connection's remaining packets the hop limit, as EC2 does."""
        ttl = self.imds.put_ttl
        if ttl is None:
            return False
        sock = self.connection
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        self._log_extra = f" ttl={ttl}"
        return True

    def do_PUT(self):
        self._log_extra = ""
        self._drain_body()
        path = urlsplit(self.path).path
        if path != TOKEN_PATH or self.imds.mode == "v1-only":
            return self._fail(405)
        close = self._apply_put_ttl()
        if self.headers.get("X-Forwarded-For") is not None:
            return self._fail(403, close=close)
        raw = self.headers.get(TTL_HEADER)
        try:
            ttl = int(raw.strip()) if raw is not None and raw.strip().isdigit() else None
        except ValueError:
            ttl = None
        if ttl is None or not 1 <= ttl <= MAX_TOKEN_TTL:
            return self._fail(400, close=close)
        token = self.imds.issue_token(ttl)
        self._send(200, token, headers=[(TTL_HEADER, str(ttl))], close=close)

    def do_GET(self):
        self._log_extra = ""
        self._drain_body()
        path = urlsplit(self.path).path
        if path == TOKEN_PATH:
            return self._fail(405)
        if self.imds.mode != "v1-only":
            token = self.headers.get(TOKEN_HEADER)
            if token is not None:
                if not self.imds.token_valid(token.strip()):
                    return self._fail(401)
            elif self.imds.mode == "v2-required":
                return self._fail(401)
        body = self.imds.lookup(path)
        if body is None:
            return self._fail(404)
        self._send(200, body)

    do_HEAD = do_GET

    def _not_allowed(self):
        self._log_extra = ""
        self._drain_body()
        self._fail(405)

    do_POST = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _drain_body(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if 0 < n <= 65536:
            self.rfile.read(n)
        elif n > 65536:
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host, port):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--mode", choices=["v2", "v2-required", "v1-only"], default="v2",
                   help="v2: tokens optional (IMDSv1 allowed); v2-required: token needed; v1-only: no PUT")
    p.add_argument("--put-ttl", type=int, default=None, metavar="N",
                   help="IP TTL of token PUT responses (EC2's HttpPutResponseHopLimit), 1..64")
    p.add_argument("--role", default="portcullis-test-role")
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    p.add_argument("--session-token")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account", default="123456789012")
    p.add_argument("--log", metavar="FILE", help="append request lines here instead of stderr")
    args = p.parse_args(argv)
    if args.put_ttl is not None and not 1 <= args.put_ttl <= 255:
        p.error("--put-ttl must be within 1..255")
    if not args.role or "/" in args.role:
        p.error("--role must be a non-empty name without '/'")

    Handler.imds = Imds(args)
    server = Server(args.host, args.port)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"imds_server listening on http://{shown}:{port} mode={args.mode} "
          f"put_ttl={args.put_ttl if args.put_ttl is not None else 'default'} role={args.role}",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
