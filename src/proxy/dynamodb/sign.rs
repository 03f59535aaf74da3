//! Re-signing: the client's request without its signature, headers for the real endpoint, and a
//! fresh SigV4 signature made with the role's credentials.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};

/// Headers never passed on: the client's signature and credentials (signed with dummy keys),
/// hop-by-hop headers, and what the proxy sets itself.
const DROPPED: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub struct SignError(String);

/// What a signed request is for.
pub struct Destination<'a> {
    /// The `Host` header (with `:port` when not the scheme's default).
    pub authority: &'a str,
    /// `https` or `http`.
    pub scheme: &'a str,
    /// The region.
    pub region: &'a str,
    /// The SigV4 signing name.
    pub signing_name: &'a str,
}

/// Builds the request for `to`: the client's method, path, query and headers (minus
/// [`DROPPED`]), the body, and a new signature by `credentials` at `now`.
pub fn resign(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
    to: &Destination<'_>,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<Request<Bytes>, SignError> {
    let uri = format!("{}://{}{}", to.scheme, to.authority, path_and_query);
    let length = body.len();
    let mut request = Request::builder().method(method.clone()).uri(&uri).body(body).map_err(|e| SignError(e.to_string()))?;
    let out = request.headers_mut();
    for (name, value) in headers {
        if !DROPPED.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(http::header::HOST, HeaderValue::from_str(to.authority).map_err(|e| SignError(e.to_string()))?);
    out.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(to.region)
        .name(to.signing_name)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let signable_headers: Vec<(&str, &str)> = request.headers().iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    let signable =
        SignableRequest::new(method.as_str(), &uri, signable_headers.into_iter(), SignableBody::Bytes(request.body())).map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| SignError(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_signature_goes_and_a_new_one_for_the_endpoint_comes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=dummy/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=abc"),
        );
        headers.insert("x-amz-target", HeaderValue::from_static("DynamoDB_20120810.ListTables"));
        headers.insert("x-amz-security-token", HeaderValue::from_static("client-token"));
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8000"));
        headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
        let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Some("session".into()), None, "test");
        let to = Destination { authority: "dynamodb.us-east-1.amazonaws.com", scheme: "https", region: "us-east-1", signing_name: "dynamodb" };
        let body = Bytes::from_static(b"{}");
        let request =
            resign(&Method::POST, "/", &headers, body, &to, &credentials, SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)).unwrap();
        let h = request.headers();
        let auth = h["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/us-east-1/dynamodb/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-target"), "the target is signed: {auth}");
        assert_eq!(h["host"], "dynamodb.us-east-1.amazonaws.com");
        assert_eq!(h["x-amz-security-token"], "session", "the role's session token, not the client's");
        assert_eq!(h["content-length"], "2");
        assert_eq!(request.uri().to_string(), "https://dynamodb.us-east-1.amazonaws.com/");
    }
}
