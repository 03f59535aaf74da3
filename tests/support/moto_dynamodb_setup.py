#!/usr/bin/env python3
"""Prepare a moto server for the DynamoDB engine's tests, then turn its auth mode on.

    python3 moto_dynamodb_setup.py --endpoint http://127.0.0.1:PORT

Start moto as `Moto::start` does (INITIAL_NO_AUTH_ACTION_COUNT=inf, i.e. auth off). In
account 123456789012 this creates:

  * IAM user `proxy` (the proxy's own identity) with access keys, whose only permission is
    sts:AssumeRole on the two roles below;
  * role `dynamo-writer`, trusting user `proxy`, with an inline policy allowing
    `dynamodb:*` on `*`;
  * role `dynamo-none`, trusting user `proxy`, allowed only `s3:ListBucket` (no DynamoDB);

then posts /moto-api/reset-auth 0, so every later request is signature-checked and
authorized. Prints one JSON object:
  {"access_key", "secret_key", "writer_arn", "none_arn", "account", "moto_version"}.

Observed with moto 5.2.1 (boto3/botocore 1.43.11, aws-cli 1.45.11), auth on, every request
sent to http://127.0.0.1:PORT (moto_server picks the backend from the Credential scope's
service plus X-Amz-Target, not from the Host):

  a. sts.assume_role(RoleArn=writer, RoleSessionName="alice") signed with the proxy's keys
     works (ASIA... key + session token); with those credentials dynamodb create_table /
     put_item / get_item / scan all work. AssumeRole on a role not in the proxy user's
     policy (existing or not) -> 403 AccessDenied. The proxy user's own keys calling
     DynamoDB directly -> 403 AccessDenied (user/proxy ... dynamodb:ListTables).
  b. moto's DynamoDB DOES check SigV4 signatures when auth is on (the generic IAM check in
     BaseResponse.call_action). Its auth failures are NOT DynamoDB-shaped: HTTP 403,
     Content-Type "text/html; charset=utf-8", no x-amzn-ErrorType header, and the
     IAM/STS XML body
       <?xml version="1.0" encoding="utf-8"?>
       <ErrorResponse><Errors><Error><Code>CODE</Code><Message>MSG</Message>
       <Type>Sender</Type></Error></Errors></ErrorResponse>
     botocore's DynamoDB (JSON) parser cannot read it: ClientError Error.Code is "403" and
     Error.Message is the whole XML text. CODE/MSG seen:
       - right key id + token, wrong secret: SignatureDoesNotMatch, "The request signature
         we calculated does not match the signature you provided. Check your AWS Secret
         Access Key and signing method. Consult the service documentation for details."
       - unknown key id (e.g. dummy/dummy), wrong session token, or an ASIA key sent
         without its token: InvalidClientTokenId, "The security token included in the
         request is invalid."
     A request with no Authorization header is not routed to DynamoDB at all (moto_server
     falls back to S3) and gets HTTP 500 (KeyError 'HTTP_AUTHORIZATION'). An unknown
     X-Amz-Target operation (DynamoDB_20120810.NoSuchOp) also gets a bare HTTP 500.
  c. dynamo-none's credentials: HTTP 403, same XML shape, Code AccessDenied, Message
     "User: arn:aws:sts::123456789012:assumed-role/dynamo-none/alice is not authorized to
     perform: dynamodb:ListTables" (dynamodb:GetItem for get_item, and so on). moto
     authorizes DynamoDB actions against Resource "*" only (DynamoHandler has no
     _determine_resource), so table-scoped Resource ARNs in role policies are not tested.
  d. X-Amz-Target: DynamoDBStreams_20120810.ListStreams, signed for service "dynamodb"
     (boto3's dynamodbstreams client signs as "dynamodb"), is served on the same port by
     moto's DynamoDB Streams backend: 200 {"Streams": [...]} (ListStreams, DescribeStream,
     GetShardIterator, GetRecords all work). It is authorized as dynamodb:<Operation>:
     dynamo-writer may, dynamo-none gets the 403 XML AccessDenied for dynamodb:ListStreams.
     Unsigned, it is routed to S3 -> 500 like any unsigned request.

DynamoDB's own errors (what a proxy's errors should look like): HTTP 400, header
X-Amzn-ErrorType: ResourceNotFoundException (the bare code), Content-Type
"application/json" (successes use "application/x-amz-json-1.0"), x-amzn-RequestId,
x-amz-crc32 (CRC32 of the body; botocore checks it for DynamoDB when present, skips it when
absent), body
  {"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
   "message": "Requested resource not found: Table: nope not found"}
(lower-case "message"; botocore takes Error.Code from the part after "#").
e.g. ValidationException: {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
"message": "Validation Exception"}. Every moto answer carries "Connection: close".

What moto's signature check covers (moto/iam/access_control.py; each point observed):
  * it recomputes SigV4 with botocore over the headers listed in SignedHeaders, with their
    received values: changing a signed Host, X-Amz-Target or Content-Type -> 403
    SignatureDoesNotMatch; adding an unsigned header is ignored;
  * path and query string are covered (sending "/?x=1" signed for "/" -> 403);
  * payload: with no x-amz-content-sha256 header the body is hashed (a changed body ->
    403); if x-amz-content-sha256 is signed, its VALUE is used as the payload hash and never
    compared with the body ("UNSIGNED-PAYLOAD" accepted; a body changed under a correct
    hash of the original accepted);
  * region and service come from the request's own Credential scope and are not checked
    against anything: a scope region of eu-west-1 is accepted and selects moto's eu-west-1
    backend (different tables); the scope service picks the backend (service "s3" -> moto's
    S3 answers, "execute-api" -> 404). A User-Agent containing "region/xx-yyyy-N" overrides
    the region moto's DynamoDB backend uses (not the signature);
  * no clock-skew check: X-Amz-Date 20150101T000000Z (scope date 20150101) accepted; per the
    code, no expiry check of assumed-role credentials either;
  * the session token must be present (X-Amz-Security-Token) and equal the issued one;
  * a chunked request body (Transfer-Encoding: chunked, no Content-Length) is accepted and
    hashed correctly.
"""
import argparse
import json

import requests

import boto3
import moto

ACCOUNT = "123456789012"


def trust_proxy():
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/proxy"},
            "Action": "sts:AssumeRole",
        }],
    })


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--prefix", default="dynamo",
                   help="role names are PREFIX-writer and PREFIX-none (the DocumentDB tests use docdb)")
    a = p.parse_args()
    # moto counts every call made before reset-auth as free; keep them in this script.
    iam = boto3.client("iam", endpoint_url=a.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    writer, none = f"{a.prefix}-writer", f"{a.prefix}-none"
    writer_arn = f"arn:aws:iam::{ACCOUNT}:role/{writer}"
    none_arn = f"arn:aws:iam::{ACCOUNT}:role/{none}"
    iam.create_user(UserName="proxy")
    key = iam.create_access_key(UserName="proxy")["AccessKey"]
    iam.put_user_policy(UserName="proxy", PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                       "Resource": [writer_arn, none_arn]}],
    }))
    iam.create_role(RoleName=writer, AssumeRolePolicyDocument=trust_proxy())
    iam.put_role_policy(RoleName=writer, PolicyName="dynamodb", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}],
    }))
    iam.create_role(RoleName=none, AssumeRolePolicyDocument=trust_proxy())
    iam.put_role_policy(RoleName=none, PolicyName="s3-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
    }))
    requests.post(f"{a.endpoint}/moto-api/reset-auth", data=b"0", timeout=30).raise_for_status()
    print(json.dumps({
        "access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
        "writer_arn": writer_arn, "none_arn": none_arn, "account": ACCOUNT,
        "moto_version": moto.__version__,
    }))


if __name__ == "__main__":
    main()
