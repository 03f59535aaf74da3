// Command rdstokencheck is an independent verifier of RDS IAM authentication
// tokens, meant to be run by PostgreSQL's PAM stack through pam_exec:
//
//	auth required pam_exec.so expose_authtok quiet /path/rdstokencheck \
//	    -keys /path/keys.json -endpoint HOST:PORT -region us-east-1 -log /path/check.log
//
// pam_exec writes the password (the token) NUL-terminated on stdin and puts
// the user name in the PAM_USER environment variable. The token is the form
// produced by the AWS SDKs' RDS auth-token helpers: a SigV4 query-presigned
// "GET https://HOST:PORT/?Action=connect&DBUser=USER" for service "rds-db",
// written without the scheme.
//
// The signature is recomputed with aws-sdk-go-v2's v4 signer (PresignHTTP),
// using the token's own X-Amz-Date as signing time and the secret key that
// keys.json (a JSON object {"ACCESS_KEY_ID": "SECRET", ...}) holds for the
// token's access key id. Exit status 0 accepts, 1 rejects. One line per
// decision is appended to the -log file; the token, its signature and the
// secret are never logged.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	service          = "rds-db"
	algorithm        = "AWS4-HMAC-SHA256"
	amzDateFormat    = "20060102T150405Z"
	maxExpires       = 900
	maxFutureSkew    = 5 * time.Minute
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	maxTokenBytes    = 16 << 10
	// Linux-PAM's pam_exec (1.5.2, Debian 12) hands the child at most 511
	// bytes of the password (PAM_MAX_RESP_SIZE 512 with its NUL): longer
	// tokens, e.g. ones carrying an STS session token, arrive cut short.
	pamMaxAuthtok = 511
)

// config is what the command line tells.
type config struct {
	keysPath string
	endpoint string
	region   string
	logPath  string
}

// result is one decision: ok, the reason when not, and fields safe to log.
type result struct {
	ok     bool
	reason string
	akid   string
}

func reject(akid, format string, args ...any) result {
	return result{ok: false, reason: fmt.Sprintf(format, args...), akid: akid}
}

// verify checks token for user against cfg's endpoint and region, the keys
// and the clock now.
func verify(token, user string, cfg config, keys map[string]string, now time.Time) result {
	if token == "" {
		return reject("", "empty token")
	}
	if len(token) > maxTokenBytes {
		return reject("", "token too long")
	}
	if user == "" {
		return reject("", "PAM_USER not set")
	}
	raw := token
	if strings.HasPrefix(raw, "https://") || strings.HasPrefix(raw, "http://") {
		return reject("", "token must not carry a scheme")
	}
	u, err := url.Parse("https://" + raw)
	if err != nil {
		return reject("", "token is not a URL")
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return reject("", "token has unexpected URL parts")
	}
	if !strings.EqualFold(u.Host, cfg.endpoint) {
		return reject("", "endpoint mismatch: token is for %q, expected %q", u.Host, cfg.endpoint)
	}
	// botocore and the Rust SDK write "HOST:PORT/?...", aws-sdk-go-v2 writes
	// "HOST:PORT?..."; both sign the canonical URI "/".
	if u.Path != "/" && u.Path != "" {
		return reject("", "unexpected path %q", u.Path)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return reject("", "malformed query")
	}
	one := func(k string) (string, error) {
		v, ok := q[k]
		if !ok {
			return "", fmt.Errorf("missing %s", k)
		}
		if len(v) != 1 {
			return "", fmt.Errorf("repeated %s", k)
		}
		return v[0], nil
	}
	allowed := map[string]bool{
		"Action": true, "DBUser": true, "X-Amz-Algorithm": true, "X-Amz-Credential": true,
		"X-Amz-Date": true, "X-Amz-Expires": true, "X-Amz-SignedHeaders": true,
		"X-Amz-Signature": true, "X-Amz-Security-Token": true,
	}
	for k, v := range q {
		if !allowed[k] {
			return reject("", "unexpected query parameter %q", k)
		}
		if len(v) != 1 {
			return reject("", "repeated query parameter %q", k)
		}
	}
	fields := map[string]string{}
	for _, k := range []string{"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential",
		"X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"} {
		v, err := one(k)
		if err != nil {
			return reject("", "%v", err)
		}
		fields[k] = v
	}
	sessionToken := ""
	if _, ok := q["X-Amz-Security-Token"]; ok {
		sessionToken = q.Get("X-Amz-Security-Token")
	}

	if fields["Action"] != "connect" {
		return reject("", "Action is %q, expected \"connect\"", fields["Action"])
	}
	if fields["DBUser"] != user {
		return reject("", "DBUser %q does not match PAM_USER %q", fields["DBUser"], user)
	}
	if fields["X-Amz-Algorithm"] != algorithm {
		return reject("", "unsupported algorithm %q", fields["X-Amz-Algorithm"])
	}
	if fields["X-Amz-SignedHeaders"] != "host" {
		return reject("", "signed headers %q, expected \"host\"", fields["X-Amz-SignedHeaders"])
	}

	// Credential: AKID/YYYYMMDD/REGION/SERVICE/aws4_request
	scope := strings.Split(fields["X-Amz-Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || scope[0] == "" {
		return reject("", "malformed credential scope")
	}
	akid, scopeDate, scopeRegion, scopeService := scope[0], scope[1], scope[2], scope[3]
	if scopeRegion != cfg.region {
		return reject(akid, "region %q in credential scope, expected %q", scopeRegion, cfg.region)
	}
	if scopeService != service {
		return reject(akid, "service %q in credential scope, expected %q", scopeService, service)
	}
	secret, ok := keys[akid]
	if !ok || secret == "" {
		return reject(akid, "unknown access key id")
	}

	signedAt, err := time.Parse(amzDateFormat, fields["X-Amz-Date"])
	if err != nil {
		return reject(akid, "malformed X-Amz-Date")
	}
	if scopeDate != signedAt.Format("20060102") {
		return reject(akid, "credential scope date %q does not match X-Amz-Date", scopeDate)
	}
	expires, err := strconv.Atoi(fields["X-Amz-Expires"])
	if err != nil || expires <= 0 || strconv.Itoa(expires) != fields["X-Amz-Expires"] {
		return reject(akid, "malformed X-Amz-Expires")
	}
	if expires > maxExpires {
		return reject(akid, "X-Amz-Expires %d exceeds %d", expires, maxExpires)
	}
	if signedAt.After(now.Add(maxFutureSkew)) {
		return reject(akid, "token signed in the future (%s, now %s)",
			signedAt.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	expiry := signedAt.Add(time.Duration(expires) * time.Second)
	if now.After(expiry) {
		return reject(akid, "token expired at %s (now %s)",
			expiry.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}

	want, err := expectedSignature(u.Host, fields["DBUser"], expires, cfg.region, akid, secret, sessionToken, signedAt)
	if err != nil {
		return reject(akid, "cannot recompute signature: %v", err)
	}
	got := strings.ToLower(fields["X-Amz-Signature"])
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return reject(akid, "signature mismatch")
	}
	return result{ok: true, reason: "signature valid", akid: akid}
}

// expectedSignature presigns the same request the SDKs presign and returns
// the hex signature the v4 signer computes for it.
func expectedSignature(host, dbUser string, expires int, region, akid, secret, sessionToken string, signedAt time.Time) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
	if err != nil {
		return "", err
	}
	values := url.Values{}
	values.Set("Action", "connect")
	values.Set("DBUser", dbUser)
	values.Set("X-Amz-Expires", strconv.Itoa(expires))
	req.URL.RawQuery = values.Encode()

	creds := aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret, SessionToken: sessionToken}
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req,
		emptyPayloadHash, service, region, signedAt)
	if err != nil {
		return "", err
	}
	su, err := url.Parse(signed)
	if err != nil {
		return "", err
	}
	sig := su.Query().Get("X-Amz-Signature")
	if sig == "" {
		return "", errors.New("signer produced no signature")
	}
	return sig, nil
}

// readToken reads the password as pam_exec writes it: the token, followed by
// a NUL in some Linux-PAM versions (Debian 12's 1.5.2 writes none); a
// trailing newline, as when run by hand, is dropped too.
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+2))
	if err != nil {
		return "", err
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func loadKeys(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys := map[string]string{}
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return keys, nil
}

// logLine appends one decision; it carries no token, signature or secret.
func logLine(path string, now time.Time, user, rhost string, r result) {
	if path == "" {
		return
	}
	decision := "reject"
	if r.ok {
		decision = "accept"
	}
	line := fmt.Sprintf("%s %s user=%q rhost=%q akid=%q reason=%q\n",
		now.UTC().Format(time.RFC3339), decision, user, rhost, r.akid, r.reason)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rdstokencheck: cannot open log: %v\n", err)
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line)
}

// addMotoKeys adds the access keys of every role session moto's STS has handed out
// (AssumeRole, AssumeRoleWithWebIdentity) and of every IAM user: what a real RDS would
// accept because AWS knows those keys.
func addMotoKeys(base string, keys map[string]string) error {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(strings.TrimSuffix(base, "/") + "/moto-api/data.json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("moto answered %s", resp.Status)
	}
	var data map[string]map[string][]map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&data); err != nil {
		return err
	}
	for _, m := range []struct{ service, model string }{{"sts", "AssumedRole"}, {"iam", "AccessKey"}} {
		for _, inst := range data[m.service][m.model] {
			id, _ := inst["access_key_id"].(string)
			secret, _ := inst["secret_access_key"].(string)
			if id != "" && secret != "" {
				keys[id] = secret
			}
		}
	}
	return nil
}

// run is main without the process: it returns the exit status.
func run(args []string, stdin io.Reader, getenv func(string) string, now time.Time) int {
	fs := flag.NewFlagSet("rdstokencheck", flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.keysPath, "keys", "", "JSON file {\"ACCESS_KEY_ID\": \"SECRET\", ...}")
	fs.StringVar(&cfg.endpoint, "endpoint", "", "expected HOST:PORT in the token")
	fs.StringVar(&cfg.region, "region", "", "expected signing region")
	fs.StringVar(&cfg.logPath, "log", "", "file to append one line per decision to")
	motoURL := fs.String("moto", "", "also trust the temporary keys moto's STS handed out (URL of a moto server; read from /moto-api/data.json at each check)")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	user, rhost := getenv("PAM_USER"), getenv("PAM_RHOST")
	if cfg.keysPath == "" || cfg.endpoint == "" || cfg.region == "" {
		logLine(cfg.logPath, now, user, rhost, reject("", "usage: -keys, -endpoint and -region are required"))
		fmt.Fprintln(os.Stderr, "rdstokencheck: -keys, -endpoint and -region are required")
		return 1
	}
	keys, err := loadKeys(cfg.keysPath)
	if err != nil {
		logLine(cfg.logPath, now, user, rhost, reject("", "cannot load keys: %v", err))
		return 1
	}
	if *motoURL != "" {
		if err := addMotoKeys(*motoURL, keys); err != nil {
			logLine(cfg.logPath, now, user, rhost, reject("", "cannot read moto's keys: %v", err))
			return 1
		}
	}
	token, err := readToken(stdin)
	if err != nil {
		logLine(cfg.logPath, now, user, rhost, reject("", "cannot read token from stdin"))
		return 1
	}
	r := verify(token, user, cfg, keys, now)
	if !r.ok && len(token) >= pamMaxAuthtok {
		r.reason += fmt.Sprintf(" (token is %d bytes: pam_exec passes at most %d, so it was probably truncated)",
			len(token), pamMaxAuthtok)
	}
	logLine(cfg.logPath, now, user, rhost, r)
	if r.ok {
		return 0
	}
	return 1
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Getenv, time.Now()))
}
