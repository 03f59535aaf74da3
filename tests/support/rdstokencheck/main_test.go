package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
)

const (
	testAKID     = "AKIDEXAMPLE0000TEST"
	testSecret   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	testEndpoint = "127.0.0.1:5432"
	testRegion   = "us-east-1"
)

func buildToken(t *testing.T, endpoint, region, user, akid, secret, session string) string {
	t.Helper()
	creds := credentials.NewStaticCredentialsProvider(akid, secret, session)
	tok, err := rdsauth.BuildAuthToken(context.Background(), endpoint, region, user, creds)
	if err != nil {
		t.Fatalf("BuildAuthToken: %v", err)
	}
	return tok
}

func testCfg() config {
	return config{endpoint: testEndpoint, region: testRegion}
}

func testKeys() map[string]string {
	return map[string]string{testAKID: testSecret}
}

func TestAccept(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "")
	if r := verify(tok, "alice", testCfg(), testKeys(), time.Now()); !r.ok {
		t.Fatalf("want accept, got reject: %s", r.reason)
	}
}

func TestAcceptWithSessionToken(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "FQoGZXIvYXdzEXAMPLE/+=session")
	if !strings.Contains(tok, "X-Amz-Security-Token=") {
		t.Fatalf("token has no security token: %s", tok)
	}
	if r := verify(tok, "alice", testCfg(), testKeys(), time.Now()); !r.ok {
		t.Fatalf("want accept, got reject: %s", r.reason)
	}
}

func TestAcceptUserNeedingEscapes(t *testing.T) {
	user := "al ice+ü@x"
	tok := buildToken(t, testEndpoint, testRegion, user, testAKID, testSecret, "")
	if r := verify(tok, user, testCfg(), testKeys(), time.Now()); !r.ok {
		t.Fatalf("want accept, got reject: %s", r.reason)
	}
}

func expectReject(t *testing.T, r result, reasonPart string) {
	t.Helper()
	if r.ok {
		t.Fatalf("want reject (%s), got accept", reasonPart)
	}
	if !strings.Contains(r.reason, reasonPart) {
		t.Fatalf("want reason containing %q, got %q", reasonPart, r.reason)
	}
}

func TestRejectWrongSecret(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, "not-the-secret", "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now()), "signature mismatch")
}

func TestRejectUnknownKey(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", "AKIDUNKNOWN", testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now()), "unknown access key id")
}

func TestRejectWrongUser(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "bob", testAKID, testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now()), "does not match PAM_USER")
}

func TestRejectWrongEndpoint(t *testing.T) {
	tok := buildToken(t, "127.0.0.1:6543", testRegion, "alice", testAKID, testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now()), "endpoint mismatch")
}

func TestRejectWrongRegion(t *testing.T) {
	tok := buildToken(t, testEndpoint, "eu-west-1", "alice", testAKID, testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now()), "region")
}

func TestRejectExpired(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now().Add(16*time.Minute)), "expired")
	// Still valid just inside the 900 s window.
	if r := verify(tok, "alice", testCfg(), testKeys(), time.Now().Add(14*time.Minute)); !r.ok {
		t.Fatalf("want accept inside window, got %s", r.reason)
	}
}

func TestRejectFuture(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "")
	expectReject(t, verify(tok, "alice", testCfg(), testKeys(), time.Now().Add(-10*time.Minute)), "future")
}

// tamper rewrites one query parameter of a token, keeping the rest.
func tamper(t *testing.T, tok, key, val string) string {
	t.Helper()
	i := strings.IndexByte(tok, '?')
	q, err := url.ParseQuery(tok[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	q.Set(key, val)
	return tok[:i+1] + q.Encode()
}

func TestRejectTampered(t *testing.T) {
	tok := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "")
	cases := map[string][2]string{
		"expires too long": {"X-Amz-Expires", "3600"},
		"expires shorter":  {"X-Amz-Expires", "60"},
		"action":           {"Action", "other"},
		"extra":            {"Extra", "1"},
		"signed headers":   {"X-Amz-SignedHeaders", "host;x-amz-date"},
	}
	for name, kv := range cases {
		t.Run(name, func(t *testing.T) {
			r := verify(tamper(t, tok, kv[0], kv[1]), "alice", testCfg(), testKeys(), time.Now())
			if r.ok {
				t.Fatalf("tampered %s accepted", kv[0])
			}
		})
	}
	// Changing the date by one second must break the signature.
	i := strings.Index(tok, "X-Amz-Date=")
	d, _ := time.Parse(amzDateFormat, tok[i+11:i+27])
	moved := tamper(t, tok, "X-Amz-Date", d.Add(-time.Second).Format(amzDateFormat))
	expectReject(t, verify(moved, "alice", testCfg(), testKeys(), time.Now()), "signature mismatch")
	expectReject(t, verify("https://"+tok, "alice", testCfg(), testKeys(), time.Now()), "scheme")
}

// TestRunAsPamExec drives run() as pam_exec does: NUL-terminated token on
// stdin, PAM_USER in the environment, and checks the log holds no secrets.
func TestRunAsPamExec(t *testing.T) {
	dir := t.TempDir()
	keysPath := filepath.Join(dir, "keys.json")
	b, _ := json.Marshal(testKeys())
	if err := os.WriteFile(keysPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "check.log")
	args := []string{"-keys", keysPath, "-endpoint", testEndpoint, "-region", testRegion, "-log", logPath}
	env := func(k string) string {
		return map[string]string{"PAM_USER": "alice", "PAM_RHOST": "127.0.0.1"}[k]
	}
	good := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, "")
	bad := buildToken(t, testEndpoint, testRegion, "alice", testAKID, "wrong-secret", "")

	if rc := run(args, strings.NewReader(good+"\x00"), env, time.Now()); rc != 0 {
		t.Fatalf("good token: exit %d", rc)
	}
	if rc := run(args, strings.NewReader(good+"\n"), env, time.Now()); rc != 0 {
		t.Fatalf("good token with newline: exit %d", rc)
	}
	if rc := run(args, strings.NewReader(bad+"\x00"), env, time.Now()); rc != 1 {
		t.Fatalf("bad token: exit %d", rc)
	}
	// A token cut at pam_exec's 511-byte limit gets a hint in the log.
	long := buildToken(t, testEndpoint, testRegion, "alice", testAKID, testSecret, strings.Repeat("S", 600))
	if rc := run(args, strings.NewReader(long[:pamMaxAuthtok]), env, time.Now()); rc != 1 {
		t.Fatalf("truncated token: exit %d", rc)
	}
	logb, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := string(logb)
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], " accept ") || !strings.Contains(lines[2], " reject ") ||
		!strings.Contains(lines[3], "probably truncated") {
		t.Fatalf("unexpected log:\n%s", log)
	}
	for _, tok := range []string{good, bad, long} {
		sig := tok[strings.Index(tok, "X-Amz-Signature=")+16:]
		if strings.Contains(log, sig) || strings.Contains(log, tok) {
			t.Fatalf("log contains a token or signature:\n%s", log)
		}
	}
	if strings.Contains(log, testSecret) {
		t.Fatalf("log contains the secret:\n%s", log)
	}
}

// Tokens made by botocore 1.43 (boto3 generate_db_auth_token) with its clock
// fixed at 2026-11-21T12:00:00Z: cross-implementation vectors, in the
// "HOST:PORT/?..." form (with the slash) that botocore and the Rust SDK write.
const (
	botocoreToken        = "127.0.0.1:5432/?Action=connect&DBUser=alice&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE0000TEST%2F20261121%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261121T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=6a916f58a77b25bebc8a2ea6c570c28689bb4bc988243b83ed61b6e61ee0d6e2"
	botocoreSessionToken = "127.0.0.1:5432/?Action=connect&DBUser=alice&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE0000TEST%2F20261121%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261121T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE%2F%2B%3Dsession&X-Amz-Signature=58a9297c6253c58c97297154ad6b1143eb7ddc0116ffd4b0272d5f58da43a165"
)

func TestBotocoreVectors(t *testing.T) {
	at := time.Date(2026, 11, 21, 12, 5, 0, 0, time.UTC)
	for _, tok := range []string{botocoreToken, botocoreSessionToken} {
		if r := verify(tok, "alice", testCfg(), testKeys(), at); !r.ok {
			t.Fatalf("botocore token rejected: %s", r.reason)
		}
		bad := map[string]string{testAKID: "wrong"}
		expectReject(t, verify(tok, "alice", testCfg(), bad, at), "signature mismatch")
		expectReject(t, verify(tok, "alice", testCfg(), testKeys(), at.Add(15*time.Minute)), "expired")
	}
}

func TestMotoKeysAreAddedFromItsDataDump(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/moto-api/data.json" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"sts": {"AssumedRole": [{"access_key_id": "ASIAWEBIDENTITY", "secret_access_key": "s1", "session_name": "x"}]},
			"iam": {"AccessKey": [{"access_key_id": "AKIAUSER", "secret_access_key": "s2"}], "Role": [{"name": "r"}]}}`))
	}))
	defer srv.Close()
	keys := map[string]string{"AKIASTATIC": "s0"}
	if err := addMotoKeys(srv.URL, keys); err != nil {
		t.Fatal(err)
	}
	if keys["ASIAWEBIDENTITY"] != "s1" || keys["AKIAUSER"] != "s2" || keys["AKIASTATIC"] != "s0" || len(keys) != 3 {
		t.Fatalf("keys = %v", keys)
	}
	if err := addMotoKeys(srv.URL+"/nothing", keys); err == nil {
		t.Fatal("a moto that answers 404 was accepted")
	}
}
