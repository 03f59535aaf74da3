#!/usr/bin/env python3
"""Prepare a moto server for assume-role tests, then turn its auth mode on.

    python3 moto_setup.py --endpoint http://127.0.0.1:PORT --external-id ID

Creates the proxy's IAM user (with access keys and permission to sts:AssumeRole on the
role), a role whose trust policy names that user and requires the external ID, and a user
without any permission; then posts /moto-api/reset-auth 0 so every later request is
signature-checked and authorized. Prints JSON with the keys and ARNs.
"""
import argparse
import json

import requests

import boto3

ACCOUNT = "123456789012"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--external-id", required=True)
    a = p.parse_args()
    # moto counts every call made before reset-auth as free; keep them in this script.
    iam = boto3.client("iam", endpoint_url=a.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    role_name = "orders-access"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    iam.create_user(UserName="proxy")
    key = iam.create_access_key(UserName="proxy")["AccessKey"]
    iam.put_user_policy(UserName="proxy", PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
    }))
    iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/proxy"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": a.external_id}},
        }],
    }))
    reader_arn = f"arn:aws:iam::{ACCOUNT}:role/reader"
    iam.put_role_policy(RoleName=role_name, PolicyName="connect", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*"},
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": reader_arn},
        ],
    }))
    # The second hop: a db user that is an IAM role, assumable from the first hop's role.
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }))
    iam.create_user(UserName="nopriv")
    nopriv = iam.create_access_key(UserName="nopriv")["AccessKey"]
    requests.post(f"{a.endpoint}/moto-api/reset-auth", data=b"0", timeout=30).raise_for_status()
    print(json.dumps({
        "access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"],
        "nopriv_access_key": nopriv["AccessKeyId"], "nopriv_secret_key": nopriv["SecretAccessKey"],
        "role_arn": role_arn, "reader_arn": reader_arn, "account": ACCOUNT,
    }))


if __name__ == "__main__":
    main()
