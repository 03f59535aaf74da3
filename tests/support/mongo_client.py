#!/usr/bin/env python3
"""pymongo through the Portcullis proxy (DocumentDB engine), for the end-to-end tests.

    mongo_client.py --port P --ca CA --pem CERT_AND_KEY_PEM SCENARIO

No credentials and no authMechanism: the proxy logs in for the client. Scenarios:
``basic`` (insert_one and find_one in orders.items), ``other_db`` (a find in hr), ``sasl`` (the
client's own saslStart), ``stand_in`` (see below). Prints one JSON object; a server error is
``{"error": CODE, "type": EXCEPTION, "message": TEXT}`` (exit status 0 either way); when the proxy
refuses the connection's first message (the handshake), pymongo reports it as a server selection
error whose text carries the error document, and CODE is null.
"""

import argparse
import json
import sys

import pymongo
from pymongo.errors import OperationFailure, PyMongoError


def client(args):
    return pymongo.MongoClient(
        host="127.0.0.1", port=args.port, tls=True, tlsCAFile=args.ca, tlsCertificateKeyFile=args.pem,
        directConnection=True, serverSelectionTimeoutMS=args.timeout_ms, connectTimeoutMS=10000)


def basic(args):
    with client(args) as c:
        items = c["orders"]["items"]
        inserted = items.insert_one({"sku": "apple", "qty": 3}).inserted_id
        found = items.find_one({"sku": "apple"})
        return {"inserted": str(inserted), "found_qty": found["qty"] if found else None}


def other_db(args):
    with client(args) as c:
        return {"found": c["hr"]["salaries"].find_one({})}


def sasl(args):
    with client(args) as c:
        return {"answer": str(c["admin"].command({"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"n,,n=x,r=abc"}))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--pem", required=True)
    ap.add_argument("--timeout-ms", type=int, default=10000, help="server selection timeout")
    ap.add_argument("scenario", choices=["basic", "other_db", "sasl"])
    args = ap.parse_args()
    try:
        result = {"basic": basic, "other_db": other_db, "sasl": sasl}[args.scenario](args)
    except OperationFailure as e:
        result = {"error": e.code, "type": type(e).__name__, "message": str(e.details.get("errmsg") if e.details else e)}
    except PyMongoError as e:
        # A refused handshake: the driver reports the server's error document in its text.
        result = {"error": None, "type": type(e).__name__, "message": str(e)}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    sys.exit(main())
