#!/usr/bin/env python3
"""pymongo through the Portcullis proxy (DocumentDB engine), for the end-to-end tests.

    mongo_client.py --port P --ca CA --pem CERT_AND_KEY_PEM SCENARIO

No credentials and no authMechanism: the proxy logs in for the client. Scenarios:
``basic`` (insert_one and find_one in orders.items), ``other_db`` (a find in hr), ``sasl`` (the
client's own saslStart), ``transaction`` (two inserts in orders in one transaction, committed),
``transaction_denied`` (an insert in orders, then one in hr, in one transaction: refused, and
the orders insert rolled back), ``workload`` (10,000 documents by insert_many, update_many,
delete_many and an aggregate $group, timed). Prints one JSON object; a server error is
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


def transaction(args):
    with client(args) as c:
        items = c["orders"]["txn"]
        with c.start_session() as s:
            s.with_transaction(lambda s: (items.insert_one({"n": 1}, session=s), items.insert_one({"n": 2}, session=s)))
        return {"count": items.count_documents({})}


def transaction_denied(args):
    with client(args) as c:
        items = c["orders"]["txn_denied"]
        before = items.count_documents({})
        try:
            with c.start_session() as s:
                s.with_transaction(lambda s: (items.insert_one({"n": 1}, session=s), c["hr"]["salaries"].insert_one({"n": 2}, session=s)))
            outcome = {"committed": True}
        except OperationFailure as e:
            outcome = {"error": e.code, "message": str(e.details.get("errmsg") if e.details else e)}
        return {**outcome, "before": before, "after": items.count_documents({})}


def workload(args):
    import time
    with client(args) as c:
        items = c["orders"]["workload"]
        started = time.monotonic()
        items.insert_many([{"_id": i, "group": i % 10, "qty": i} for i in range(10000)])
        inserted = time.monotonic() - started
        updated = items.update_many({"group": 3}, {"$inc": {"qty": 1}, "$set": {"seen": True}}).modified_count
        deleted = items.delete_many({"group": 9}).deleted_count
        groups = list(items.aggregate([{"$match": {"qty": {"$gte": 0}}}, {"$group": {"_id": "$group", "n": {"$sum": 1}, "total": {"$sum": "$qty"}}}, {"$sort": {"_id": 1}}]))
        return {"insert_seconds": round(inserted, 3), "updated": updated, "deleted": deleted, "groups": groups, "left": items.count_documents({})}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--pem", required=True)
    ap.add_argument("--timeout-ms", type=int, default=10000, help="server selection timeout")
    scenarios = {"basic": basic, "other_db": other_db, "sasl": sasl, "transaction": transaction, "transaction_denied": transaction_denied, "workload": workload}
    ap.add_argument("scenario", choices=sorted(scenarios))
    args = ap.parse_args()
    try:
        result = scenarios[args.scenario](args)
    except OperationFailure as e:
        result = {"error": e.code, "type": type(e).__name__, "message": str(e.details.get("errmsg") if e.details else e)}
    except PyMongoError as e:
        # A refused handshake: the driver reports the server's error document in its text.
        result = {"error": None, "type": type(e).__name__, "message": str(e)}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    sys.exit(main())
