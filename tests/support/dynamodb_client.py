#!/usr/bin/env python3
"""DynamoDB clients for the DynamoDB engine's end-to-end tests.

    dynamodb_client.py --endpoint http://127.0.0.1:PORT [--region us-east-1] SCENARIO

The endpoint is the proxy's local tunnel (plain HTTP). Every request is signed with the dummy
keys "dummy"/"dummy" and no session token: the proxy drops that signature and re-signs with
the credentials of the role it assumed, so the same scenarios pointed straight at a moto
server only work while moto's auth is off.

Scenarios (each prints one JSON object on stdout; exit status 0; 1 with a traceback on any
other failure, e.g. connection refused; 2 on bad usage):

  cli     the AWS CLI only (`aws dynamodb ... --endpoint-url URL --region R --output json`,
          with a scrubbed environment: dummy keys, no config/credentials file, no IMDS, no
          pager, AWS_MAX_ATTEMPTS=1): create-table `orders` (pk S, HASH, PAY_PER_REQUEST), put-item, scan.
          -> {"items": [...scan Items...], "commands": {"create-table": {"rc", "stderr"},
              "put-item": {...}, "scan": {...}}}
  boto3   boto3: creates table `items` if missing, puts 120 small items and one item with a
          400,000-byte string attribute, reads the big item back, then scans with the
          paginator (Limit=25 per page).
          -> {"pages", "total_items", "big_roundtrip", "big_size", "page_sizes",
              "crc_checked", "crc_mismatches"}: every response that carries x-amz-crc32
              (moto sets it on DynamoDB answers) has it checked against the body here,
              because botocore's standard retry mode with one attempt would not complain.
  denied  one list_tables call.
          -> {"ok": true, "tables": [...]} or {"ok": false, "code", "message", "status",
              "error_type_header", "content_type"} from botocore's ClientError
              (`Error.Code`, `Error.Message`, HTTP status, the x-amzn-ErrorType and
              Content-Type response headers).

A botocore ClientError in `boto3` is printed as {"error": CODE, "message", "status"}.
Retries are off (one attempt per call) so a proxy fault is not hidden by a retry.

Note (moto 5.2.1): moto's DynamoDB answers its own auth failures (SignatureDoesNotMatch,
InvalidClientTokenId, AccessDenied) with HTTP 403 and an IAM-style XML body
(Content-Type text/html), which botocore's JSON parser cannot read: `denied` then shows
code "403" and the raw XML as the message. A DynamoDB-shaped JSON error (400, body
{"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException", "message": ...}, the
shape a proxy should answer with) comes out as code "AccessDeniedException".
"""

import argparse
import json
import os
import subprocess
import sys
from zlib import crc32

# Keep the caller's AWS configuration out of every client this script makes.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
    os.environ.pop(_name, None)
os.environ.update({
    "AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy",
    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "",
})

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

BIG_SIZE = 400_000  # bytes in the big item's string attribute (DynamoDB: 400 KB per item)
SMALL_ITEMS = 120


def client(args):
    return boto3.client(
        "dynamodb", endpoint_url=args.endpoint, region_name=args.region,
        aws_access_key_id="dummy", aws_secret_access_key="dummy",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                      connect_timeout=10, read_timeout=60))


def client_error(e):
    meta = e.response.get("ResponseMetadata", {})
    headers = meta.get("HTTPHeaders", {})
    err = e.response.get("Error", {})
    return {"code": err.get("Code"), "message": err.get("Message"),
            "status": meta.get("HTTPStatusCode"),
            "error_type_header": headers.get("x-amzn-errortype"),
            "content_type": headers.get("content-type")}


def cli(args):
    # One attempt (legacy retry mode, which still fails a call whose x-amz-crc32 does not
    # match the body), so a proxy fault shows as a non-zero exit code.
    env = dict(os.environ, AWS_MAX_ATTEMPTS="1")
    base = ["aws", "dynamodb"]
    tail = ["--endpoint-url", args.endpoint, "--region", args.region, "--output", "json"]
    commands = {}

    def run(name, *argv):
        p = subprocess.run(base + [name, *argv] + tail, env=env, capture_output=True,
                           text=True, timeout=120)
        commands[name] = {"rc": p.returncode, "stderr": p.stderr}
        return p

    run("create-table", "--table-name", "orders",
        "--attribute-definitions", "AttributeName=pk,AttributeType=S",
        "--key-schema", "AttributeName=pk,KeyType=HASH",
        "--billing-mode", "PAY_PER_REQUEST")
    run("put-item", "--table-name", "orders",
        "--item", json.dumps({"pk": {"S": "order-1"}, "qty": {"N": "3"},
                              "note": {"S": "via the AWS CLI"}}))
    scan = run("scan", "--table-name", "orders")
    items = None
    if scan.returncode == 0:
        try:
            items = json.loads(scan.stdout).get("Items")
        except ValueError:
            commands["scan"]["stdout"] = scan.stdout[:2000]
    return {"items": items, "commands": commands}


def boto3_scenario(args):
    ddb = client(args)
    crc = {"checked": 0, "mismatches": 0}

    def check_crc(http_response, **_):
        expected = http_response.headers.get("x-amz-crc32")
        if expected is not None:
            crc["checked"] += 1
            if crc32(http_response.content) & 0xFFFFFFFF != int(expected):
                crc["mismatches"] += 1

    ddb.meta.events.register("after-call.dynamodb", check_crc)
    try:
        ddb.describe_table(TableName="items")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        ddb.create_table(
            TableName="items",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST")
        ddb.get_waiter("table_exists").wait(
            TableName="items", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    for i in range(SMALL_ITEMS):
        ddb.put_item(TableName="items", Item={"pk": {"S": f"small-{i:03d}"}, "n": {"N": str(i)}})
    big = ("0123456789abcdef" * (BIG_SIZE // 16 + 1))[:BIG_SIZE]
    ddb.put_item(TableName="items", Item={"pk": {"S": "big"}, "blob": {"S": big}})
    got = ddb.get_item(TableName="items", Key={"pk": {"S": "big"}}, ConsistentRead=True)
    back = got.get("Item", {}).get("blob", {}).get("S")
    pages = 0
    total = 0
    page_sizes = []
    for page in ddb.get_paginator("scan").paginate(TableName="items",
                                                   PaginationConfig={"PageSize": 25}):
        pages += 1
        page_sizes.append(len(page["Items"]))
        total += len(page["Items"])
    return {"pages": pages, "total_items": total, "page_sizes": page_sizes,
            "big_roundtrip": back == big, "big_size": len(back) if back is not None else None,
            "crc_checked": crc["checked"], "crc_mismatches": crc["mismatches"]}


def denied(args):
    try:
        tables = client(args).list_tables()["TableNames"]
    except ClientError as e:
        return dict({"ok": False}, **client_error(e))
    return {"ok": True, "tables": tables}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("scenario", choices=["cli", "boto3", "denied"])
    args = ap.parse_args()
    try:
        result = {"cli": cli, "boto3": boto3_scenario, "denied": denied}[args.scenario](args)
    except ClientError as e:
        err = client_error(e)
        result = {"error": err["code"], "message": err["message"], "status": err["status"]}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
