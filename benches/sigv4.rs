//! Benchmark (`cargo bench --bench sigv4`; not part of the test suite): the DynamoDB engine's
//! cost of re-signing one request (`proxy::dynamodb::sign::resign`: drop the client's signature
//! and hop-by-hop headers, rebuild the request for the endpoint, SigV4-sign it) against signing
//! the same request with `aws-sigv4` directly — the least any signer must do. Prints a table;
//! the target is at most 1.3× the raw cost.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use portcullis::proxy::dynamodb::sign::{Destination, resign};

/// A PutItem of about `size` bytes, as the AWS CLI sends it through the tunnel.
fn client_request(size: usize) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8000"));
    headers.insert("x-amz-target", HeaderValue::from_static("DynamoDB_20120810.PutItem"));
    headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
    headers.insert("user-agent", HeaderValue::from_static("aws-cli/1.45.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7"));
    headers.insert("x-amz-date", HeaderValue::from_static("20261121T120000Z"));
    headers.insert("authorization", HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=dummy/20261121/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000000000000000000000000000000000000000000000000000000000000000"));
    headers.insert("content-length", HeaderValue::from(size));
    let body = format!("{{\"TableName\":\"orders\",\"Item\":{{\"pk\":{{\"S\":\"{}\"}}}}}}", "x".repeat(size.saturating_sub(50)));
    (headers, Bytes::from(body))
}

/// What a minimal signer does: the request for the endpoint with its own headers, signed.
fn raw_sign(body: &Bytes, credentials: &Credentials, now: SystemTime) -> Request<Bytes> {
    let uri = "https://dynamodb.us-east-1.amazonaws.com/";
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("host", "dynamodb.us-east-1.amazonaws.com")
        .header("x-amz-target", "DynamoDB_20120810.PutItem")
        .header("content-type", "application/x-amz-json-1.0")
        .header("content-length", body.len())
        .body(body.clone())
        .unwrap();
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("dynamodb")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(&str, &str)> = request.headers().iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
    let signable = SignableRequest::new("POST", uri, headers.into_iter(), SignableBody::Bytes(request.body())).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}

fn per_call(mut f: impl FnMut(), budget: Duration) -> Duration {
    for _ in 0..200 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    start.elapsed() / n
}

fn main() {
    let credentials = Credentials::new("ASIAEXAMPLEEXAMPLE01", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("IQoJb3JpZ2luX2VjE".repeat(40)), None, "bench");
    let now = SystemTime::now();
    let to = Destination { authority: "dynamodb.us-east-1.amazonaws.com", scheme: "https", region: "us-east-1", signing_name: "dynamodb" };
    let budget = Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000));
    println!("| request body | raw SigV4 (aws-sigv4) | Portcullis re-sign | ratio (target ≤ 1.30) |");
    println!("|---:|---:|---:|---:|");
    for size in [100usize, 1024, 16 * 1024, 400 * 1024] {
        let (headers, body) = client_request(size);
        let raw = per_call(|| drop(black_box(raw_sign(&body, &credentials, now))), budget);
        let ours = per_call(|| drop(black_box(resign(&Method::POST, "/", &headers, body.clone(), &to, &credentials, now).unwrap())), budget);
        let ratio = ours.as_secs_f64() / raw.as_secs_f64();
        println!(
            "| {} B | {:.2} µs | {:.2} µs | {ratio:.2}× {} |",
            body.len(),
            raw.as_secs_f64() * 1e6,
            ours.as_secs_f64() * 1e6,
            if ratio <= 1.3 { "✓" } else { "✗" }
        );
    }
}
