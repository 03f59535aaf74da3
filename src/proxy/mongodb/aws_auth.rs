//! The client side of MONGODB-AWS (DocumentDB 5.0+ IAM authentication), without I/O: the first
//! SASL payload with the client nonce, checks of the server's answer (its nonce extends ours, the
//! STS host is well-formed), the SigV4-signed `GetCallerIdentity` request, and the final payload.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use bson::spec::BinarySubtype;
use bson::{Binary, Document, doc};

/// The body every MONGODB-AWS client signs.
pub const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// `p`: the GS2 channel-binding flag `n`, as a byte.
const GS2_CB_FLAG: i32 = 110;

/// Why the server's answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsAuthError {
    /// The payload is not what MONGODB-AWS specifies.
    #[error("malformed MONGODB-AWS server payload: {0}")]
    Malformed(&'static str),
    /// The server nonce does not extend the client's.
    #[error("the server's nonce does not start with the proxy's nonce (a replayed or forged conversation)")]
    NonceMismatch,
    /// The STS host is not a host name.
    #[error("the server named an invalid STS host {0:?}")]
    BadHost(String),
    /// Signing failed.
    #[error("cannot sign the GetCallerIdentity request: {0}")]
    Sign(String),
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

fn to_bytes(doc: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    doc.to_writer(&mut out).expect("writing to a Vec");
    out
}

/// The saslStart payload: `{r: client nonce, p: 110}`.
pub fn client_first(nonce: &[u8; 32]) -> Vec<u8> {
    to_bytes(&doc! { "r": binary(nonce.to_vec()), "p": GS2_CB_FLAG })
}

/// The server's first answer: its 64-byte nonce (which must start with ours) and the STS host.
pub fn server_first(payload: &[u8], client_nonce: &[u8; 32]) -> Result<(Vec<u8>, String), AwsAuthError> {
    let doc = Document::from_reader(&mut &payload[..]).map_err(|_| AwsAuthError::Malformed("not BSON"))?;
    let nonce = match doc.get("s") {
        Some(bson::Bson::Binary(b)) => b.bytes.clone(),
        _ => return Err(AwsAuthError::Malformed("no binary s")),
    };
    if nonce.len() != 64 {
        return Err(AwsAuthError::Malformed("s is not 64 bytes"));
    }
    if nonce[..32] != client_nonce[..] {
        return Err(AwsAuthError::NonceMismatch);
    }
    let host = doc.get_str("h").map_err(|_| AwsAuthError::Malformed("no string h"))?.to_owned();
    let name = host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map(|(h, _)| h).unwrap_or(&host);
    let valid = !name.is_empty() && host.len() <= 255 && name.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        return Err(AwsAuthError::BadHost(host));
    }
    Ok((nonce, host))
}

/// The region to sign for, derived from the STS host as the MongoDB drivers' auth specification
/// says (and DocumentDB expects): `sts.amazonaws.com` or a single label is us-east-1; otherwise
/// the second label.
pub fn sts_region(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').collect();
    if host == "sts.amazonaws.com" || labels.len() == 1 {
        return "us-east-1".into();
    }
    labels[1].to_owned()
}

/// The signed `GetCallerIdentity` request's parts for the final payload: (Authorization,
/// X-Amz-Date, session token).
pub fn sign_caller_identity(
    host: &str,
    region: &str,
    server_nonce: &[u8],
    credentials: &Credentials,
    now: SystemTime,
) -> Result<(String, String, Option<String>), AwsAuthError> {
    let nonce = base64::engine::general_purpose::STANDARD.encode(server_nonce);
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "43"),
        ("host", host),
        ("x-mongodb-server-nonce", nonce.as_str()),
        ("x-mongodb-gs2-cb-flag", "n"),
    ];
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| AwsAuthError::Sign(e.to_string()))?
        .into();
    let url = format!("https://{host}/");
    let signable =
        SignableRequest::new("POST", &url, headers.into_iter(), SignableBody::Bytes(STS_BODY.as_bytes())).map_err(|e| AwsAuthError::Sign(e.to_string()))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| AwsAuthError::Sign(e.to_string()))?.into_parts();
    let mut authorization = None;
    let mut date = None;
    for (name, value) in instructions.headers() {
        match name {
            "authorization" => authorization = Some(value.to_owned()),
            "x-amz-date" => date = Some(value.to_owned()),
            _ => {}
        }
    }
    let authorization = authorization.ok_or(AwsAuthError::Sign("no Authorization header".into()))?;
    let date = date.ok_or(AwsAuthError::Sign("no X-Amz-Date header".into()))?;
    Ok((authorization, date, credentials.session_token().map(str::to_owned)))
}

/// The saslContinue payload: `{a: Authorization, d: X-Amz-Date, t: token}`.
pub fn client_final(authorization: &str, date: &str, token: Option<&str>) -> Vec<u8> {
    let mut doc = doc! { "a": authorization, "d": date };
    if let Some(t) = token {
        doc.insert("t", t);
    }
    to_bytes(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_payload(s: &[u8], h: &str) -> Vec<u8> {
        to_bytes(&doc! { "s": binary(s.to_vec()), "h": h })
    }

    #[test]
    fn the_first_payload_carries_the_nonce_and_the_flag() {
        let nonce = [7u8; 32];
        let doc = Document::from_reader(&mut &client_first(&nonce)[..]).unwrap();
        assert_eq!(doc.get_binary_generic("r").unwrap(), &nonce.to_vec());
        assert_eq!(doc.get_i32("p").unwrap(), 110);
    }

    #[test]
    fn the_server_nonce_must_extend_ours_and_the_host_must_be_a_name() {
        let ours = [1u8; 32];
        let mut s = ours.to_vec();
        s.extend([2u8; 32]);
        assert_eq!(server_first(&server_payload(&s, "sts.amazonaws.com"), &ours).unwrap(), (s.clone(), "sts.amazonaws.com".to_owned()));
        let mut forged = s.clone();
        forged[0] = 9;
        assert_eq!(server_first(&server_payload(&forged, "sts.amazonaws.com"), &ours), Err(AwsAuthError::NonceMismatch));
        assert!(matches!(server_first(&server_payload(&s[..40], "sts.amazonaws.com"), &ours), Err(AwsAuthError::Malformed(_))));
        for bad in ["", "sts..amazonaws.com", ".sts.amazonaws.com", "sts.amazonaws.com/evil", "a b"] {
            assert!(matches!(server_first(&server_payload(&s, bad), &ours), Err(AwsAuthError::BadHost(_))), "{bad:?}");
        }
        assert!(server_first(b"\x05\x00\x00\x00\x00", &ours).is_err());
    }

    #[test]
    fn regions_come_from_sts_host_names() {
        assert_eq!(sts_region("sts.amazonaws.com"), "us-east-1");
        assert_eq!(sts_region("sts.eu-central-1.amazonaws.com"), "eu-central-1");
        assert_eq!(sts_region("sts.cn-north-1.amazonaws.com.cn"), "cn-north-1");
        assert_eq!(sts_region("localhost:4566"), "us-east-1");
        assert_eq!(sts_region("127.0.0.1:4566"), "0", "what pymongo and the Node driver do too");
    }

    #[test]
    fn the_signature_covers_the_nonce_and_the_channel_binding_flag() {
        let creds = Credentials::new("ASIAEXAMPLE", "secret", Some("token".into()), None, "test");
        let (a, d, t) =
            sign_caller_identity("sts.amazonaws.com", "us-east-1", &[3u8; 64], &creds, SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000))
                .unwrap();
        assert!(a.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20270115/us-east-1/sts/aws4_request"), "{a}");
        assert!(a.contains("x-mongodb-gs2-cb-flag") && a.contains("x-mongodb-server-nonce"), "{a}");
        assert_eq!(d, "20270115T080000Z");
        assert_eq!(t.as_deref(), Some("token"));
        let payload = Document::from_reader(&mut &client_final(&a, &d, t.as_deref())[..]).unwrap();
        assert_eq!(payload.get_str("t").unwrap(), "token");
    }
}
