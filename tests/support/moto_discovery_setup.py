#!/usr/bin/env python3
"""Prepare moto for the discovery tests, then turn its auth mode on.

    python3 moto_discovery_setup.py --endpoint http://127.0.0.1:PORT --external-id ID [--bulk N]

Two accounts: 123456789012 (the operator's) and 222222222222, reached only through the role
portcullis-discovery, whose trust policy names the operator's user and requires the external
ID. In the first account: the user `admin` (everything, for the tests' own changes), the user
`operator` (rds:Describe*, rds:ListTagsForResource,
rds:ModifyDB*, sts:AssumeRole on the two roles) and the role `no-clusters`, which may
DescribeDBInstances but not DescribeDBClusters. Databases (tags env=prod unless said):

  123456789012 us-east-1: orders (postgres 16.3, IAM on), legacy (mariadb 10.5: skipped),
                          devbox (env=dev), Aurora cluster ledger (aurora-postgresql 15.4)
                          with member ledger-1
  123456789012 eu-west-1: reports (mysql 8.0)
  222222222222 us-east-1: partner (postgres, IAM on), partner-off (postgres, IAM off)

--bulk N instead creates N postgres instances (env=prod) split over us-east-1 and eu-west-1
of the first account and nothing else. Prints JSON: the operator's and the admin's keys, the role
ARNs, and every endpoint.
"""
import argparse
import json

import boto3
import requests

A1, A2 = "123456789012", "222222222222"


def client(endpoint, service, region="us-east-1", creds=None):
    creds = creds or {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"}
    return boto3.client(service, endpoint_url=endpoint, region_name=region, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds.get("SessionToken"))


def instance(rds, name, engine, version, tags, iam=True, cluster=None):
    args = dict(DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro", Engine=engine, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    if cluster:
        args["DBClusterIdentifier"] = cluster
    else:
        args.update(EngineVersion=version, MasterUsername="admin", MasterUserPassword="password123", AllocatedStorage=20,
                    EnableIAMDatabaseAuthentication=iam)
    out = rds.create_db_instance(**args)["DBInstance"]
    return out.get("Endpoint", {}).get("Address")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--external-id", required=True)
    p.add_argument("--bulk", type=int, default=0)
    a = p.parse_args()
    e = a.endpoint
    iam = client(e, "iam")
    iam.create_user(UserName="admin")
    admin = iam.create_access_key(UserName="admin")["AccessKey"]
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    iam.create_user(UserName="operator")
    key = iam.create_access_key(UserName="operator")["AccessKey"]
    discovery_role = f"arn:aws:iam::{A2}:role/portcullis-discovery"
    limited_role = f"arn:aws:iam::{A1}:role/no-clusters"
    rds_read = ["rds:DescribeDBInstances", "rds:DescribeDBClusters", "rds:DescribeDBProxies", "rds:ListTagsForResource",
                "rds:DescribeDBClusterParameters"]
    iam.put_user_policy(UserName="operator", PolicyName="portcullis", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": rds_read + ["rds:ModifyDBInstance", "rds:ModifyDBCluster"], "Resource": "*"},
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": [discovery_role, limited_role]},
        ],
    }))
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A1}:user/operator"},
                                                     "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="no-clusters", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="no-clusters", PolicyName="instances-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["rds:DescribeDBInstances"], "Resource": "*"}]}))

    # The second account: credentials for it come from assuming a role there (auth is still off).
    second = client(e, "sts").assume_role(RoleArn=f"arn:aws:iam::{A2}:role/bootstrap", RoleSessionName="setup")["Credentials"]
    iam2 = client(e, "iam", creds=second)
    trust2 = json.loads(json.dumps(trust))
    trust2["Statement"][0]["Condition"] = {"StringEquals": {"sts:ExternalId": a.external_id}}
    iam2.create_role(RoleName="portcullis-discovery", AssumeRolePolicyDocument=json.dumps(trust2))
    iam2.put_role_policy(RoleName="portcullis-discovery", PolicyName="discovery", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": rds_read + ["rds:ModifyDBInstance"], "Resource": "*"}]}))

    hosts = {}
    prod = {"env": "prod"}
    if a.bulk:
        for i in range(a.bulk):
            region = "us-east-1" if i % 2 == 0 else "eu-west-1"
            hosts[f"bulk-{i}"] = instance(client(e, "rds", region), f"bulk-{i}", "postgres", "16.3", {"env": "prod", "n": str(i)})
    else:
        r1 = client(e, "rds")
        hosts["orders"] = instance(r1, "orders", "postgres", "16.3", {"env": "prod", "team": "payments", "aws:cloudformation:stack-name": "Orders Stack"})
        hosts["legacy"] = instance(r1, "legacy", "mariadb", "10.5.16", prod)
        hosts["devbox"] = instance(r1, "devbox", "postgres", "16.3", {"env": "dev"})
        c = r1.create_db_cluster(DBClusterIdentifier="ledger", Engine="aurora-postgresql", EngineVersion="15.4", MasterUsername="admin",
                                 MasterUserPassword="password123", EnableIAMDatabaseAuthentication=True,
                                 Tags=[{"Key": "env", "Value": "prod"}])["DBCluster"]
        hosts["ledger"], hosts["ledger-reader"] = c["Endpoint"], c["ReaderEndpoint"]
        instance(r1, "ledger-1", "aurora-postgresql", None, prod, cluster="ledger")
        hosts["reports"] = instance(client(e, "rds", "eu-west-1"), "reports", "mysql", "8.0.35", prod)
        r2 = client(e, "rds", creds=second)
        hosts["partner"] = instance(r2, "partner", "postgres", "16.3", prod)
        hosts["partner-off"] = instance(r2, "partner-off", "postgres", "16.3", prod, iam=False)
    requests.post(f"{e}/moto-api/reset-auth", data="0").raise_for_status()
    print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"], "admin_key": admin["AccessKeyId"],
                      "admin_secret": admin["SecretAccessKey"], "discovery_role": discovery_role, "limited_role": limited_role,
                      "hosts": hosts}, default=str))


if __name__ == "__main__":
    main()
