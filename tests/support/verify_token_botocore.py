#!/usr/bin/env python3
"""Verify an RDS IAM auth token with botocore's own SigV4 code.

    python3 verify_token_botocore.py --token T --host H --port P --user U \
        --region R --access-key AK --secret-key SK [--session-token ST] [--now ISO8601]

The token is what boto3's ``generate_db_auth_token`` (or aws_sdk_rds's
auth_token) produces: ``H:P/?Action=connect&DBUser=U&X-Amz-...`` without a
scheme.  The expected signature is re-derived by signing an ``AWSRequest``
for ``GET https://H:P/?Action=connect&DBUser=U`` with
``botocore.auth.SigV4QueryAuth`` (service ``rds-db``, 900 s), with botocore's
clock forced to the token's own X-Amz-Date.

Prints a JSON object ``{"ok": bool, "checks": {name: bool, ...}, ...}`` on
stdout and exits 0 when every check passed, 1 otherwise (2 on bad usage).
Neither the secret key nor the signatures are printed.
"""

import argparse
import datetime
import hmac
import json
import sys
from unittest import mock
from urllib.parse import parse_qs, quote, urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "rds-db"
EXPIRES = 900
AMZ_DATE = "%Y%m%dT%H%M%SZ"
FUTURE_SKEW = datetime.timedelta(minutes=5)


def _forced_clock(signing_time):
    """Patch botocore.auth's clock so SigV4 signs at ``signing_time`` (naive UTC)."""
    if hasattr(botocore.auth, "get_current_datetime"):
        # botocore >= 1.33: SigV4Auth.add_auth calls get_current_datetime().
        return mock.patch.object(
            botocore.auth, "get_current_datetime", lambda *a, **k: signing_time
        )

    # Older botocore calls datetime.datetime.utcnow() through botocore.auth.datetime.
    class _FixedDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return signing_time

        @classmethod
        def now(cls, tz=None):
            return signing_time if tz is None else signing_time.replace(tzinfo=tz)

    fake = mock.MagicMock(wraps=datetime)
    fake.datetime = _FixedDatetime
    return mock.patch.object(botocore.auth, "datetime", fake)


def expected_signature(host, port, user, region, access_key, secret_key,
                       session_token, signing_time):
    """Sign the RDS connect request as botocore does and return (url, signature)."""
    creds = Credentials(access_key, secret_key, session_token)
    url = f"https://{host}:{port}/?Action=connect&DBUser={quote(user, safe='')}"
    request = AWSRequest(method="GET", url=url)
    with _forced_clock(signing_time):
        botocore.auth.SigV4QueryAuth(creds, SERVICE, region, expires=EXPIRES).add_auth(request)
    query = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
    return request.url, query["X-Amz-Signature"][0]


def verify(token, host, port, user, region, access_key, secret_key,
           session_token=None, now=None):
    """Return the result dict: {"ok": bool, "checks": {...}, "errors": [...]}."""
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    checks = {}
    errors = []
    info = {}

    def check(name, cond, why=None):
        checks[name] = bool(cond)
        if not cond and why:
            errors.append(f"{name}: {why}")
        return bool(cond)

    check("no_scheme", not token.startswith(("http://", "https://")),
          "token must not carry a scheme")
    parts = urlsplit("https://" + token.split("://", 1)[-1])
    try:
        tok_port = parts.port
    except ValueError:
        tok_port = None
    check("host", (parts.hostname or "").lower() == host.lower().strip("[]"),
          f"token host {parts.hostname!r} != {host!r}")
    check("port", tok_port == int(port), f"token port {tok_port!r} != {port}")
    check("path", parts.path in ("/", ""), f"path {parts.path!r}")

    raw = parse_qs(parts.query, keep_blank_values=True)
    check("no_repeated_params", all(len(v) == 1 for v in raw.values()),
          "repeated query parameters")
    q = {k: v[0] for k, v in raw.items()}
    required = ["Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"]
    missing = [k for k in required if k not in q]
    check("params_present", not missing, f"missing {missing}")
    allowed = set(required) | {"X-Amz-Security-Token"}
    extra = sorted(set(q) - allowed)
    check("no_extra_params", not extra, f"unexpected {extra}")

    check("action", q.get("Action") == "connect", f"Action={q.get('Action')!r}")
    check("user", q.get("DBUser") == user, f"DBUser={q.get('DBUser')!r} != {user!r}")
    check("algorithm", q.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256",
          f"X-Amz-Algorithm={q.get('X-Amz-Algorithm')!r}")
    check("signed_headers", q.get("X-Amz-SignedHeaders") == "host",
          f"X-Amz-SignedHeaders={q.get('X-Amz-SignedHeaders')!r}")
    check("expires", q.get("X-Amz-Expires") == str(EXPIRES),
          f"X-Amz-Expires={q.get('X-Amz-Expires')!r} != {EXPIRES}")

    scope = q.get("X-Amz-Credential", "").split("/")
    scope_ok = len(scope) == 5 and scope[4] == "aws4_request"
    check("credential_scope", scope_ok, "malformed X-Amz-Credential")
    if not scope_ok:
        scope = ["", "", "", "", ""]
    info["access_key"] = scope[0]
    info["credential_region"] = scope[2]
    info["credential_service"] = scope[3]
    check("access_key", scope[0] == access_key, f"access key {scope[0]!r} != {access_key!r}")
    check("region", scope[2] == region, f"region {scope[2]!r} != {region!r}")
    check("service", scope[3] == SERVICE, f"service {scope[3]!r} != {SERVICE!r}")

    tok_session = q.get("X-Amz-Security-Token")
    check("session_token", tok_session == session_token,
          "X-Amz-Security-Token differs from --session-token"
          if session_token or tok_session else None)

    signed_at = None
    try:
        signed_at = datetime.datetime.strptime(q.get("X-Amz-Date", ""), AMZ_DATE)
    except ValueError:
        pass
    check("date", signed_at is not None and scope[1] == signed_at.strftime("%Y%m%d"),
          "malformed X-Amz-Date or scope date differs")
    info["x_amz_date"] = q.get("X-Amz-Date")
    if signed_at is not None:
        expiry = signed_at + datetime.timedelta(seconds=EXPIRES)
        info["expires_at"] = expiry.strftime(AMZ_DATE)
        check("not_expired", now <= expiry, f"expired at {expiry:%Y-%m-%dT%H:%M:%SZ}")
        check("not_future", signed_at <= now + FUTURE_SKEW, "signed in the future")

    sig_ok = False
    if signed_at is not None and "X-Amz-Signature" in q and parts.hostname and tok_port:
        # Sign for the *expected* host/port/user/region: a token minted for
        # anything else cannot match even if the field checks were skipped.
        bare = host.strip("[]")
        netloc_host = f"[{bare}]" if ":" in bare else bare  # IPv6 literal
        _, want = expected_signature(netloc_host, port, user, region, access_key,
                                     secret_key, session_token, signed_at)
        sig_ok = hmac.compare_digest(q["X-Amz-Signature"].lower().encode(), want.encode())
    check("signature", sig_ok, "signature mismatch")

    result = {"ok": all(checks.values()), "checks": checks, "info": info}
    if errors:
        result["errors"] = errors
    return result


def pam_main(argv):
    """As a pam_exec helper (``--pam``): the token arrives NUL-terminated on stdin, the user in
    PAM_USER; the secret comes from --keys (a JSON object access key -> secret). Appends one
    line per decision to --log (never the token) and exits 0 to accept, 1 to refuse."""
    import os
    from urllib.parse import parse_qs as _qs
    ap = argparse.ArgumentParser()
    ap.add_argument("--pam", action="store_true")
    ap.add_argument("--keys", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--region", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args(argv)
    token = sys.stdin.buffer.read().split(b"\0", 1)[0].decode("utf-8", "replace")
    user = os.environ.get("PAM_USER", "")
    with open(args.keys) as f:
        keys = json.load(f)
    query = _qs(urlsplit("https://" + token).query)
    credential = (query.get("X-Amz-Credential") or [""])[0]
    access_key = credential.split("/", 1)[0]
    secret = keys.get(access_key)
    if secret is None:
        ok, reason = False, "unknown access key"
    else:
        session = (query.get("X-Amz-Security-Token") or [None])[0]
        result = verify(token, args.host, args.port, user, args.region, access_key, secret, session)
        ok = result["ok"]
        reason = "botocore signature valid" if ok else ",".join(k for k, v in result["checks"].items() if not v)
    with open(args.log, "a") as f:
        f.write(f"{'accept' if ok else 'reject'} user={user!r} reason={reason!r}\n")
    return 0 if ok else 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--pam" in argv:
        return pam_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--session-token")
    ap.add_argument("--now", help="override the clock (ISO 8601 UTC, e.g. 2026-11-21T12:00:00Z)")
    args = ap.parse_args(argv)
    now = None
    if args.now:
        now = datetime.datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        if now.tzinfo is not None:
            now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    result = verify(args.token, args.host, args.port, args.user, args.region,
                    args.access_key, args.secret_key, args.session_token, now)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
