//! Probes EC2 instance metadata (IMDS) and classifies what answers: IMDSv2 working, hop limit
//! probably 1 (the token PUT's reply never arrives while a plain GET answers), IMDSv1 only, or
//! unreachable.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long each probe request may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum ImdsVerdict {
    /// The token PUT and metadata GET both answered.
    Working,
    /// The PUT timed out while the GET answered: the token reply died on the way.
    HopLimitProbablyOne,
    /// Only IMDSv1 answers (the PUT was refused).
    V1Only {
        /// The PUT's HTTP status.
        put_status: u16,
    },
    /// Nothing answered.
    Unreachable {
        /// What failed.
        detail: String,
    },
}

impl ImdsVerdict {
    /// A sentence for people, with the fix.
    pub fn explain(&self) -> String {
        match self {
            ImdsVerdict::Working => "IMDSv2 answers (token PUT and metadata GET)".into(),
            ImdsVerdict::HopLimitProbablyOne => "the IMDSv2 token PUT timed out while a plain metadata GET answered: the instance's \
                 metadata hop limit is probably 1, so the token reply dies one hop before this pod. Use IRSA or EKS Pod \
                 Identity (preferred), or set HttpPutResponseHopLimit to 2 (aws ec2 modify-instance-metadata-options \
                 --http-put-response-hop-limit 2)"
                .into(),
            ImdsVerdict::V1Only { put_status } => {
                format!("only IMDSv1 answers (the token PUT got HTTP {put_status}); the SDK falls back to it, but prefer IRSA or EKS Pod Identity")
            }
            ImdsVerdict::Unreachable { detail } => format!("instance metadata is unreachable ({detail}): not on EC2, or metadata is disabled"),
        }
    }
}

/// Whether a probe is meaningful: no IRSA or Pod Identity variables and IMDS not disabled.
pub fn should_probe() -> bool {
    not_probed_because().is_none()
}

/// Why IMDS is not probed (IRSA or Pod Identity is configured, or IMDS is disabled), or `None`
/// when it should be.
pub fn not_probed_because() -> Option<&'static str> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        Some("IRSA is configured (AWS_WEB_IDENTITY_TOKEN_FILE is set)")
    } else if set("AWS_CONTAINER_CREDENTIALS_FULL_URI") || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        Some("EKS Pod Identity is configured (AWS_CONTAINER_CREDENTIALS_FULL_URI is set)")
    } else if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        Some("IMDS is disabled (AWS_EC2_METADATA_DISABLED=true)")
    } else {
        None
    }
}

/// The IMDS endpoint: `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `http://169.254.169.254`.
pub fn endpoint() -> String {
    std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|_| "http://169.254.169.254".into())
}

/// Probes the token PUT and a metadata GET side by side.
pub async fn probe(endpoint: &str, timeout: Duration) -> ImdsVerdict {
    let Some(authority) = endpoint.strip_prefix("http://").map(|a| a.trim_end_matches('/').to_owned()) else {
        return ImdsVerdict::Unreachable { detail: format!("{endpoint} is not an http:// endpoint") };
    };
    let put = request(&authority, "PUT /latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n", timeout);
    let get = request(&authority, "GET /latest/meta-data/", "", timeout);
    let (put, get) = tokio::join!(put, get);
    classify(put, get)
}

/// The outcome of one request: a status, a timeout, or a connection error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP status line arrived.
    Status(u16),
    /// Nothing arrived in time.
    TimedOut,
    /// The connection failed.
    Failed(String),
}

/// Classifies the two outcomes.
pub fn classify(put: Outcome, get: Outcome) -> ImdsVerdict {
    match (put, get) {
        (Outcome::Status(200), _) => ImdsVerdict::Working,
        (Outcome::TimedOut, Outcome::Status(_)) => ImdsVerdict::HopLimitProbablyOne,
        (Outcome::Status(s), Outcome::Status(200)) => ImdsVerdict::V1Only { put_status: s },
        (put, get) => ImdsVerdict::Unreachable { detail: format!("token PUT: {}; metadata GET: {}", describe(&put), describe(&get)) },
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Status(s) => format!("HTTP {s}"),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Failed(e) => e.clone(),
    }
}

async fn request(authority: &str, request_line: &str, headers: &str, timeout: Duration) -> Outcome {
    let attempt = async {
        let mut stream = TcpStream::connect(authority).await.map_err(|e| Outcome::Failed(format!("cannot connect to {authority}: {e}")))?;
        let text = format!("{request_line} HTTP/1.1\r\nHost: {authority}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(text.as_bytes()).await.map_err(|e| Outcome::Failed(e.to_string()))?;
        let mut buf = vec![0u8; 256];
        let mut have = 0;
        while have < 12 {
            let n = stream.read(&mut buf[have..]).await.map_err(|e| Outcome::Failed(e.to_string()))?;
            if n == 0 {
                return Err(Outcome::Failed("closed without an answer".into()));
            }
            have += n;
        }
        let line = String::from_utf8_lossy(&buf[..have]);
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).map(Outcome::Status).ok_or_else(|| Outcome::Failed("not an HTTP answer".into()))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(o)) | Ok(Err(o)) => o,
        Err(_) => Outcome::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    #[test]
    fn outcomes_are_classified_like_the_four_real_cases() {
        assert_eq!(classify(Status(200), Status(200)), ImdsVerdict::Working);
        assert_eq!(classify(TimedOut, Status(200)), ImdsVerdict::HopLimitProbablyOne);
        assert_eq!(classify(TimedOut, Status(401)), ImdsVerdict::HopLimitProbablyOne);
        assert_eq!(classify(Status(405), Status(200)), ImdsVerdict::V1Only { put_status: 405 });
        assert!(matches!(classify(Failed("refused".into()), Failed("refused".into())), ImdsVerdict::Unreachable { .. }));
        assert!(matches!(classify(TimedOut, TimedOut), ImdsVerdict::Unreachable { .. }));
        assert!(ImdsVerdict::HopLimitProbablyOne.explain().contains("HttpPutResponseHopLimit"));
    }
}
