#!/usr/bin/env python3
"""A stand-in for the Amazon DocumentDB management API (moto has none: it refuses engine docdb).

    python3 docdb_api_standin.py --state FILE [--key AKID:SECRET]... [--deny ACTION]...

Prints ``listening on 127.0.0.1:PORT`` first; SIGTERM stops it. The AWS SDKs reach it with
``AWS_ENDPOINT_URL_DOCDB=http://127.0.0.1:PORT``.

What it does, as the real service does (API version 2014-10-31, the AWS query protocol,
signing name ``rds``):

* POST form bodies ``Action=...&Version=2014-10-31&...``; answers ``<ActionResponse
  xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><ActionResult>...`` XML.
* Every request must carry a SigV4 ``Authorization`` header for service ``rds``. With
  ``--key`` given, the access key must be one of them and the signature must verify (else 403
  ``InvalidClientTokenId`` / ``SignatureDoesNotMatch``); temporary credentials (a session
  token) are accepted without a signature check, since their secret is STS's.
* ``--deny ACTION`` answers that action 403 ``AccessDenied`` ("User: ... is not authorized to
  perform: rds:ACTION"), the way IAM refuses it.
* DescribeDBClusters (``DBClusterIdentifier``; ``Filters`` on ``engine``; ``MaxRecords`` /
  ``Marker`` paging): an unknown identifier is 404 ``DBClusterNotFoundFault``. Without a filter
  it lists every cluster, RDS ones included, as DocumentDB does.
* DescribeDBInstances (``DBInstanceIdentifier``): 404 ``DBInstanceNotFound`` when unknown.
* DescribeDBClusterParameters (``DBClusterParameterGroupName``): 404
  ``DBParameterGroupNotFound`` when unknown.
* ListTagsForResource (``ResourceName``, an ARN): 404 ``DBClusterNotFoundFault`` when unknown.
* Any other action: 400 ``InvalidAction``.

The state file is JSON, re-read on every request (tests change it between syncs):

    {"account": "123456789012", "region": "us-east-1",
     "clusters": [{"id": "docs", "engine": "docdb", "version": "5.0.0", "port": 27017,
                   "parameterGroup": "docs-params", "tags": {"env": "prod"},
                   "status": "available"}],
     "parameterGroups": {"docs-params": {"tls": "enabled"}}}

Endpoints are ``<id>.cluster-c0ffee.<region>.docdb.amazonaws.com`` and ``<id>.cluster-ro-...``.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import sys
import urllib.parse
from xml.sax.saxutils import escape

NS = "http://rds.amazonaws.com/doc/2014-10-31/"


def fault(status, code, message):
    body = (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error><RequestId>standin</RequestId></ErrorResponse>")
    return status, body


def el(name, value):
    return "" if value is None else f"<{name}>{escape(str(value))}</{name}>"


class Api:
    def __init__(self, args):
        self.args = args
        self.keys = dict(k.split(":", 1) for k in args.key)

    def state(self):
        with open(self.args.state) as f:
            return json.load(f)

    def cluster_xml(self, c, st):
        region, account = st.get("region", "us-east-1"), st.get("account", "123456789012")
        host = f"{c['id']}.cluster-c0ffee.{region}.docdb.amazonaws.com"
        reader = f"{c['id']}.cluster-ro-c0ffee.{region}.docdb.amazonaws.com"
        available = c.get("status", "available") == "available"
        return ("<DBCluster>" + el("DBClusterIdentifier", c["id"]) + el("Engine", c.get("engine", "docdb"))
                + el("EngineVersion", c.get("version", "5.0.0")) + el("Status", c.get("status", "available"))
                + (el("Endpoint", host) + el("ReaderEndpoint", reader) if available else "")
                + el("Port", c.get("port", 27017)) + el("DBClusterParameterGroup", c.get("parameterGroup"))
                + el("DbClusterResourceId", f"cluster-{c['id'].upper()}RESOURCE")
                + el("DBClusterArn", f"arn:aws:rds:{region}:{account}:cluster:{c['id']}")
                + "<DBClusterMembers>" + "".join(f"<DBClusterMember>{el('DBInstanceIdentifier', m)}</DBClusterMember>"
                                                 for m in c.get("members", [])) + "</DBClusterMembers>"
                + "</DBCluster>")

    def handle(self, headers, body, caller):
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}
        action = form.get("Action", "")
        if action in self.args.deny:
            return fault(403, "AccessDenied", f"User: {caller} is not authorized to perform: rds:{action}")
        st = self.state()
        clusters = st.get("clusters", [])
        if action == "DescribeDBClusters":
            wanted = form.get("DBClusterIdentifier")
            engines = [v for k, v in form.items() if k.startswith("Filters.Filter.") and ".Values." in k
                       and form.get(k.split(".Values.")[0] + ".Name") == "engine"]
            found = [c for c in clusters if (not wanted or c["id"] == wanted) and (not engines or c.get("engine", "docdb") in engines)]
            if wanted and not found:
                return fault(404, "DBClusterNotFoundFault", f"DBCluster {wanted} not found.")
            start = int(form.get("Marker") or 0)
            size = int(form.get("MaxRecords") or 100)
            page = found[start:start + size]
            marker = el("Marker", start + size) if start + size < len(found) else ""
            inner = "<DBClusters>" + "".join(self.cluster_xml(c, st) for c in page) + "</DBClusters>" + marker
        elif action == "DescribeDBInstances":
            wanted = form.get("DBInstanceIdentifier")
            members = [(m, c) for c in clusters for m in c.get("members", []) if not wanted or m == wanted]
            if wanted and not members:
                return fault(404, "DBInstanceNotFound", f"DBInstance {wanted} not found.")
            region = st.get("region", "us-east-1")
            inner = "<DBInstances>" + "".join(
                "<DBInstance>" + el("DBInstanceIdentifier", m) + el("Engine", c.get("engine", "docdb"))
                + el("EngineVersion", c.get("version", "5.0.0")) + el("DBClusterIdentifier", c["id"])
                + f"<Endpoint>{el('Address', f'{m}.c0ffee.{region}.docdb.amazonaws.com')}{el('Port', c.get('port', 27017))}</Endpoint>"
                + "</DBInstance>" for m, c in members) + "</DBInstances>"
        elif action == "DescribeDBClusterParameters":
            group = form.get("DBClusterParameterGroupName", "")
            params = st.get("parameterGroups", {}).get(group)
            if params is None:
                return fault(404, "DBParameterGroupNotFound", f"DBClusterParameterGroup not found: {group}")
            inner = "<Parameters>" + "".join(f"<Parameter>{el('ParameterName', k)}{el('ParameterValue', v)}</Parameter>"
                                             for k, v in params.items()) + "</Parameters>"
        elif action == "ListTagsForResource":
            arn = form.get("ResourceName", "")
            match = [c for c in clusters if arn.endswith(f":cluster:{c['id']}")]
            if not match:
                return fault(404, "DBClusterNotFoundFault", f"DBCluster {arn} not found.")
            inner = "<TagList>" + "".join(f"<Tag>{el('Key', k)}{el('Value', v)}</Tag>" for k, v in match[0].get("tags", {}).items()) + "</TagList>"
        else:
            return fault(400, "InvalidAction", f"The action {action} is not valid for this web service.")
        return 200, f'<{action}Response xmlns="{NS}"><{action}Result>{inner}</{action}Result><ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata></{action}Response>'

    def authenticate(self, method, path, headers, body):
        auth = headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return fault(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        akid, date, region, service, _ = parts["Credential"].split("/")
        if service != "rds":
            return fault(403, "SignatureDoesNotMatch", f"Credential should be scoped to correct service: 'rds', not '{service}'")
        if not self.keys or "x-amz-security-token" in headers:
            return None
        secret = self.keys.get(akid)
        if secret is None:
            return fault(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        signed = parts["SignedHeaders"].split(";")
        canonical = "\n".join([method, path or "/", "", "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed),
                               parts["SignedHeaders"], hashlib.sha256(body).hexdigest()])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), f"{date}/{region}/{service}/aws4_request",
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + secret).encode()
        for piece in (date, region, service, "aws4_request"):
            key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
        if hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() != parts["Signature"]:
            return fault(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--state", required=True)
    p.add_argument("--key", action="append", default=[])
    p.add_argument("--deny", action="append", default=[])
    p.add_argument("--port", type=int, default=0)
    api = Api(p.parse_args())

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                denied = api.authenticate("POST", self.path, headers, body)
                akid = headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
                status, xml = denied or api.handle(headers, body.decode(), f"arn:aws:iam::000000000000:user/{akid}")
            except Exception as e:  # a malformed request is the client's fault, as AWS says it
                status, xml = fault(400, "MalformedQueryString", f"cannot read the request: {e}")
            data = xml.encode()
            self.send_response(status)
            self.send_header("content-type", "text/xml")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", api.args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    main()
