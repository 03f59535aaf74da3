#!/usr/bin/env python3
"""PyMySQL through the Portcullis proxy, for the MySQL engine's end-to-end tests.

    mysql_client.py --port P --ca CA --cert CERT --key KEY --user U [--db D] SCENARIO

Scenarios: ``basic`` (who am I, is the upstream leg TLS), ``big`` (a 20 MiB value written
and read back, so packets over 16 MiB cross the proxy both ways), ``multi`` (two statements
in one COM_QUERY), ``use`` (USE sent as SQL: alone to an allowed and a denied database, and
inside a multi-statement). Prints one JSON object; a MySQL error is printed as
``{"error": CODE, "message": TEXT}`` (exit status 0 either way, 2 on bad usage).
"""

import argparse
import hashlib
import json
import sys

import pymysql
from pymysql.constants import CLIENT


def connect(args, **extra):
    return pymysql.connect(
        host="127.0.0.1", port=args.port, user=args.user, database=args.db,
        ssl_ca=args.ca, ssl_cert=args.cert, ssl_key=args.key,
        ssl_verify_cert=True, ssl_verify_identity=True,
        connect_timeout=10, read_timeout=60, write_timeout=60, **extra)


def basic(args):
    with connect(args) as conn, conn.cursor() as cur:
        cur.execute("select current_user(), database()")
        user, db = cur.fetchone()
        cur.execute("show session status like 'Ssl_version'")
        tls = cur.fetchone()[1]
        cur.execute("select name from orders.items order by id")
        names = [r[0] for r in cur.fetchall()]
        return {"user": user, "db": db, "upstream_tls": tls, "names": names}


def big(args):
    value = (b"0123456789abcdef" * (20 * 1024 * 1024 // 16))
    with connect(args, max_allowed_packet=64 * 1024 * 1024) as conn, conn.cursor() as cur:
        cur.execute("delete from orders.items where id = 100")
        cur.execute("insert into orders.items (id, name, payload) values (100, 'big', %s)", (value,))
        conn.commit()
        cur.execute("select length(payload), sha2(payload, 256) from orders.items where id = 100")
        length, digest = cur.fetchone()
        cur.execute("select payload from orders.items where id = 100")
        back = cur.fetchone()[0]
        cur.execute("delete from orders.items where id = 100")
        conn.commit()
        return {
            "sent": len(value), "stored": length,
            "stored_sha_matches": digest == hashlib.sha256(value).hexdigest(),
            "read_back_matches": back == value,
        }


def multi(args):
    with connect(args, client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute("select 1; select 2; select name from orders.items where id = 3")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        return {"results": [[list(r) for r in rs] for rs in results]}


def use(args):
    out = {}
    with connect(args, client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        for name, sql in [("allowed", "USE orders"), ("denied", "USE mysql"), ("mixed", "SELECT 1; USE mysql")]:
            try:
                cur.execute(sql)
                while cur.nextset():
                    pass
                cur.execute("select database()")
                out[name] = {"db": cur.fetchone()[0]}
            except pymysql.err.MySQLError as e:
                out[name] = {"error": e.args[0], "message": str(e.args[1])}
        cur.execute("select database()")
        out["after"] = cur.fetchone()[0]
        # An XA transaction through the proxy: statements like any other.
        cur.execute("delete from orders.items where id = 101")
        conn.commit()
        for sql in ["XA START 'portcullis-xa'", "insert into orders.items (id, name) values (101, 'xa')", "XA END 'portcullis-xa'",
                    "XA PREPARE 'portcullis-xa'", "XA COMMIT 'portcullis-xa'"]:
            cur.execute(sql)
        cur.execute("select name from orders.items where id = 101")
        out["xa"] = cur.fetchone()[0]
        cur.execute("delete from orders.items where id = 101")
        conn.commit()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--ca", "--cert", "--key", "--user"):
        ap.add_argument(name, required=True)
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--db")
    ap.add_argument("scenario", choices=["basic", "big", "multi", "use"])
    args = ap.parse_args()
    try:
        result = {"basic": basic, "big": big, "multi": multi, "use": use}[args.scenario](args)
    except pymysql.err.MySQLError as e:
        code, message = (e.args + (None, ""))[:2]
        result = {"error": code, "message": str(message)}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
