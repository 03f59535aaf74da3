#!/usr/bin/env python3
"""Probe how moto server's IAM "auth mode" behaves (written against moto 5.2.1).

    python3 moto_auth_probe.py                 # starts its own moto_server on a free 127.0.0.1 port
    python3 moto_auth_probe.py --endpoint http://127.0.0.1:5000   # use a running one (state is added to it)

Prints one JSON line per finding: {"finding", "expected", "observed", "as_expected"}
and a summary line; exits 0 when every observation matches what moto 5.2.1 did
when this was written, 1 otherwise (e.g. after a moto upgrade changed something).

How moto's auth mode works (moto/core/authorization.py, moto/iam/access_control.py):
  * INITIAL_NO_AUTH_ACTION_COUNT (env var, read once at import; default inf =
    auth off): the first N requests that reach a service handler are served
    without any check; every later one is authenticated (SigV4 recomputed with
    the secret moto stored for the access key) and authorized (the caller's
    identity policies, plus the role's trust policy for sts:AssumeRole).
    /moto-api/* calls do not count.
  * POST /moto-api/reset-auth with body "N" sets the allowance to N and resets
    the counter to 0 at run time ("0" = auth on now, "inf" = auth off). Its
    answer carries PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT.
  * POST /moto-api/reset wipes the backends (IAM users/keys too) but NOT the
    auth counter: with auth on, everything then fails InvalidClientTokenId
    until reset-auth is posted again.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/"
EXTERNAL_ID = "ext-123"
SIG_MSG = ("The request signature we calculated does not match the signature you provided. "
           "Check your AWS Secret Access Key and signing method. Consult the service "
           "documentation for details.")
TOKEN_MSG = "The security token included in the request is invalid."


def denied(arn, action="sts:AssumeRole"):
    return {"status": 403, "code": "AccessDenied",
            "message": f"User: {arn} is not authorized to perform: {action}"}


OK = {"status": 200, "code": "OK"}
BAD_SIG = {"status": 403, "code": "SignatureDoesNotMatch", "message": SIG_MSG}
BAD_TOKEN = {"status": 403, "code": "InvalidClientTokenId", "message": TOKEN_MSG}
HTTP500 = {"status": 500, "code": "InternalServerError(non-XML)"}


class Probe:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.results = []

    # -- clients ---------------------------------------------------------
    def client(self, service, ak="testing", sk="testing", token=None):
        return boto3.client(
            service, region_name=REGION, endpoint_url=self.endpoint,
            aws_access_key_id=ak, aws_secret_access_key=sk, aws_session_token=token,
            config=Config(retries={"max_attempts": 1}))

    def raw_sts(self, params, creds=None):
        """POST an STS query by hand, SigV4-signed when creds is given
        (boto3 never signs AssumeRoleWithWebIdentity)."""
        body = urlencode(dict(params, Version="2011-06-15"))
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        if creds is not None:
            req = AWSRequest(method="POST", url=self.endpoint + "/", data=body, headers=headers)
            SigV4Auth(creds, "sts", REGION).add_auth(req)
            headers = dict(req.headers.items())
        r = requests.post(self.endpoint + "/", data=body, headers=headers, timeout=30)
        if r.status_code == 200:
            return dict(OK)
        try:
            root = ET.fromstring(r.content)
        except ET.ParseError:
            return {"status": r.status_code, "code": "InternalServerError(non-XML)"}
        code = root.find(".//{*}Code")
        msg = root.find(".//{*}Message")
        return {"status": r.status_code, "code": code.text if code is not None else None,
                "message": msg.text if msg is not None else None}

    def moto_api(self, path, data=None):
        r = requests.post(self.endpoint + path, data=data, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else {}

    # -- recording -------------------------------------------------------
    @staticmethod
    def outcome(fn):
        try:
            fn()
            return dict(OK)
        except ClientError as e:
            err = e.response.get("Error", {})
            return {"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                    "code": err.get("Code"), "message": err.get("Message")}
        except Exception as e:  # moto answered 500 with an HTML page
            if "500 Internal Server Error" in str(e):
                return dict(HTTP500)
            return {"status": None, "code": type(e).__name__, "message": str(e)[:200]}

    def check(self, finding, expected, observed):
        same = all(observed.get(k) == v for k, v in expected.items())
        rec = {"finding": finding, "expected": expected, "observed": observed, "as_expected": same}
        self.results.append(rec)
        print(json.dumps(rec), flush=True)

    def expect(self, finding, expected, fn):
        self.check(finding, expected, self.outcome(fn))


def bootstrap(p):
    """The IAM calls made inside the no-auth allowance (BOOTSTRAP_CALLS of them).
    Every one counts, whatever credentials sign it (here the dummy 'testing')."""
    iam = p.client("iam")
    user_arn = iam.create_user(UserName="caller")["User"]["Arn"]                       # 1
    key = iam.create_access_key(UserName="caller")["AccessKey"]                        # 2
    iam.put_user_policy(UserName="caller", PolicyName="assume", PolicyDocument=json.dumps({  # 3
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "iam:GetUser"],
                       "Resource": "*"}]}))
    iam.create_user(UserName="nopriv")                                                 # 4
    nopriv = iam.create_access_key(UserName="nopriv")["AccessKey"]                     # 5

    def trust(principal=user_arn, condition=None, effect="Allow"):
        st = {"Effect": effect, "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}
        if condition:
            st["Condition"] = condition
        return json.dumps({"Version": "2012-10-17", "Statement": [st]})

    iam.create_role(RoleName="ext-role", AssumeRolePolicyDocument=trust(            # 6
        condition={"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}))
    iam.create_role(RoleName="plain-role", AssumeRolePolicyDocument=trust())          # 7
    iam.put_role_policy(RoleName="plain-role", PolicyName="list", PolicyDocument=json.dumps({  # 8
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}]}))
    iam.create_role(RoleName="root-role", AssumeRolePolicyDocument=trust(            # 9
        principal=f"arn:aws:iam::{ACCOUNT}:root"))
    iam.create_role(RoleName="deny-role", AssumeRolePolicyDocument=trust(effect="Deny"))  # 10
    iam.create_role(RoleName="like-role", AssumeRolePolicyDocument=trust(            # 11
        condition={"StringLike": {"sts:ExternalId": "abc*"}}))
    iam.create_role(RoleName="svc-role", AssumeRolePolicyDocument=json.dumps({      # 12
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                       "Action": "sts:AssumeRole"}]}))
    return user_arn, key, nopriv


BOOTSTRAP_CALLS = 12


def run(p):
    user_arn, key, nopriv = bootstrap(p)
    ak, sk = key["AccessKeyId"], key["SecretAccessKey"]
    sts = p.client("sts", ak, sk)
    nopriv_arn = f"arn:aws:iam::{ACCOUNT}:user/nopriv"

    # (4) the allowance is used up: the next request is checked.
    p.expect("4: first call after the allowance, dummy 'testing' key", BAD_TOKEN,
             lambda: p.client("sts").get_caller_identity())
    p.expect("4: bootstrapped user's key works (GetCallerIdentity is always allowed)", OK,
             sts.get_caller_identity)
    p.expect("4: user policy allows iam:GetUser", OK,
             lambda: p.client("iam", ak, sk).get_user(UserName="caller"))
    p.expect("4: user policy lacks iam:ListUsers", denied(user_arn, "iam:ListUsers"),
             lambda: p.client("iam", ak, sk).list_users())

    # (3) signature checks.
    p.expect("3: right key id, wrong secret (sts)", BAD_SIG,
             lambda: p.client("sts", ak, "wrong-secret").get_caller_identity())
    p.expect("3: right key id, wrong secret (iam)", BAD_SIG,
             lambda: p.client("iam", ak, "wrong-secret").get_user(UserName="caller"))
    p.expect("3: unknown access key id", BAD_TOKEN,
             lambda: p.client("sts", "AKIAUNKNOWN000000000", sk).get_caller_identity())
    p.expect("3: IAM-user key sent with a session token", BAD_TOKEN,
             lambda: p.client("sts", ak, sk, "bogus").get_caller_identity())

    # (1) ExternalId condition in the trust policy (StringEquals only).
    def assume(role, c=sts, **kw):
        return lambda: c.assume_role(RoleArn=ROLE + role, RoleSessionName="probe", **kw)

    p.expect("1: ExternalId correct", OK, assume("ext-role", ExternalId=EXTERNAL_ID))
    p.expect("1: ExternalId wrong -> refused", denied(user_arn),
             assume("ext-role", ExternalId="wrong"))
    p.expect("1: ExternalId MISSING -> accepted (moto only compares keys present in the request)",
             OK, assume("ext-role"))
    p.expect("1: StringLike condition is ignored (only StringEquals is evaluated)", OK,
             assume("like-role", ExternalId="no-match"))
    p.expect("1: trust policy Principal = account root does not match an IAM user ARN",
             denied(user_arn), assume("root-role"))
    p.expect("1: trust statement with Effect Deny is treated as Allow", OK, assume("deny-role"))
    p.expect("1: trust policy with only a Service principal -> HTTP 500 (TypeError in moto's "
             "_check_principal)", HTTP500, assume("svc-role"))
    p.expect("1: role that does not exist in IAM -> no trust check, accepted", OK,
             assume("no-such-role"))

    # (2) the caller's own permission.
    p.expect("2: caller without sts:AssumeRole permission", denied(nopriv_arn),
             assume("plain-role", c=p.client("sts", nopriv["AccessKeyId"],
                                             nopriv["SecretAccessKey"])))

    # Assumed-role credentials are checked too (role policies apply).
    creds = sts.assume_role(RoleArn=ROLE + "plain-role", RoleSessionName="probe")["Credentials"]
    rk, rs, rt = creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    role_arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/plain-role/probe"
    p.expect("assumed-role creds: GetCallerIdentity", OK,
             lambda: p.client("sts", rk, rs, rt).get_caller_identity())
    p.expect("assumed-role creds: role policy allows iam:ListRoles", OK,
             lambda: p.client("iam", rk, rs, rt).list_roles())
    p.expect("assumed-role creds: iam:ListUsers not in role policy",
             denied(role_arn, "iam:ListUsers"), lambda: p.client("iam", rk, rs, rt).list_users())
    p.expect("assumed-role creds: wrong session token", BAD_TOKEN,
             lambda: p.client("sts", rk, rs, "bogus").get_caller_identity())
    p.expect("assumed-role creds: wrong secret", BAD_SIG,
             lambda: p.client("sts", rk, "bogus", rt).get_caller_identity())

    # (5) AssumeRoleWithWebIdentity.
    web = {"Action": "AssumeRoleWithWebIdentity", "RoleArn": ROLE + "plain-role",
           "RoleSessionName": "probe", "WebIdentityToken": "not-a-jwt"}
    p.check("5: auth ON, unsigned AssumeRoleWithWebIdentity (as boto3 sends it) -> HTTP 500 "
            "(KeyError 'HTTP_AUTHORIZATION' in moto)", HTTP500, p.raw_sts(web))
    p.check("5: auth ON, same request SigV4-signed by a user lacking "
            "sts:AssumeRoleWithWebIdentity", denied(user_arn, "sts:AssumeRoleWithWebIdentity"),
            p.raw_sts(web, Credentials(ak, sk)))

    prev = p.moto_api("/moto-api/reset-auth", b"inf")
    p.check("reset-auth 'inf' turns auth off at run time",
            {"status": "ok", "PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT": str(float(BOOTSTRAP_CALLS))},
            prev)
    anon = p.client("sts")
    p.expect("5: auth OFF, AssumeRoleWithWebIdentity with a junk token -> credentials", OK,
             lambda: anon.assume_role_with_web_identity(**{k: v for k, v in web.items()
                                                           if k != "Action"}))
    p.expect("5: auth OFF, AssumeRoleWithWebIdentity for a role that does not exist", OK,
             lambda: anon.assume_role_with_web_identity(
                 RoleArn=ROLE + "ghost", RoleSessionName="probe", WebIdentityToken="junk"))
    p.expect("auth OFF: AssumeRole with a wrong ExternalId is accepted (no checks at all)", OK,
             assume("ext-role", c=anon, ExternalId="wrong"))

    p.moto_api("/moto-api/reset-auth", b"0")
    p.expect("reset-auth '0' turns auth on at once", BAD_TOKEN,
             lambda: p.client("sts").get_caller_identity())
    p.expect("reset-auth '0': bootstrapped key still valid", OK, sts.get_caller_identity)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", help="use this running moto server instead of starting one")
    ap.add_argument("--moto-server", default="moto_server", help="moto_server executable")
    args = ap.parse_args()

    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(BOOTSTRAP_CALLS))
        proc = subprocess.Popen([args.moto_server, "-H", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint + "/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("moto_server did not start")
                time.sleep(0.2)
    p = Probe(endpoint)
    try:
        if proc is None:
            # A running server: wipe its state and give the bootstrap its allowance.
            p.moto_api("/moto-api/reset")
            p.moto_api("/moto-api/reset-auth", str(BOOTSTRAP_CALLS).encode())
        run(p)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    bad = [r["finding"] for r in p.results if not r["as_expected"]]
    print(f"moto_auth_probe: {len(p.results) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
