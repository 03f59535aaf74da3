#!/usr/bin/env python3
"""A test double of the EKS Pod Identity Agent's credentials endpoint, standard library only.

    python3 pod_identity_agent.py --token-file F --access-key AK --secret-key SK \
        --session-token ST [--account 123456789012] [--log FILE]

On EKS the agent listens on 169.254.170.23:80 (and [fd00:ec2::23]); the Pod Identity webhook
gives a pod AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials and
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (a projected ServiceAccount token, audience
pods.eks.amazonaws.com). SDKs read the token file and send its contents as the Authorization
header. This double listens on 127.0.0.1 (SDKs accept a loopback full URI) and answers as the
agent does:

* ``GET /v1/credentials`` with ``Authorization`` equal to the token file's contents (read on
  every request, as the kubelet rotates it): 200, JSON ``{"AccessKeyId", "SecretAccessKey",
  "Token", "AccountId", "Expiration"}`` (Expiration about 6 h ahead, RFC 3339 ``Z``).
* no Authorization header: 400 ``{"message": "Service account token cannot be empty"}``.
* a token that is not the current one: 403, the EKS Auth refusal the agent passes on
  (``{"code": "AccessDeniedException", "message": ...}``).
* any other path: 404; any other method: 405.

On start it prints ``listening on 127.0.0.1:PORT`` on stdout. One line per request goes to
``--log`` (method, path, status), never the token or the credentials.
"""

import argparse
import datetime
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--token-file", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--session-token", required=True)
    p.add_argument("--account", default="123456789012")
    p.add_argument("--log")
    a = p.parse_args()
    log = open(a.log, "a", buffering=1) if a.log else sys.stderr

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            log.write(f"{self.command} {self.path} {status}\n")

        def do_GET(self):
            if self.path != "/v1/credentials":
                return self.answer(404, {"message": "not found"})
            token = self.headers.get("Authorization")
            if not token:
                return self.answer(400, {"message": "Service account token cannot be empty"})
            with open(a.token_file) as f:
                current = f.read().strip()
            if token.strip() != current:
                return self.answer(403, {"code": "AccessDeniedException", "message": "the service account token is not valid"})
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=6)
            self.answer(200, {
                "AccessKeyId": a.access_key,
                "SecretAccessKey": a.secret_key,
                "Token": a.session_token,
                "AccountId": a.account,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            })

        def do_POST(self):
            self.answer(405, {"message": "method not allowed"})

        do_PUT = do_POST
        do_DELETE = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
