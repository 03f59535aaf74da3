//! The proxy's login to DocumentDB: TLS (`verify-full`), then MONGODB-AWS as the user's role —
//! saslStart with a fresh nonce, the server's nonce and STS host checked, the signed
//! `GetCallerIdentity` in saslContinue.

use std::time::SystemTime;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::aws_auth;
use super::codec::{self, HEADER, Header};
use crate::proxy::connect;
use crate::proxy::session::SessionError;
use crate::proxy::tls::UpstreamStream;
use crate::proxy::{ProxyState, Upstream};

/// The largest login reply the proxy reads.
const MAX_LOGIN_REPLY: usize = 1 << 20;

/// Connects to DocumentDB and logs in with `credentials` (the role's) as `role_arn`.
pub async fn connect_and_login(
    state: &ProxyState,
    upstream: &Upstream,
    role_arn: &str,
    credentials: &aws_credential_types::Credentials,
) -> Result<UpstreamStream, SessionError> {
    let tcp = connect::tcp(state, upstream).await?;
    let mut tls = connect::tls(state, upstream, tcp).await?;
    let nonce: [u8; 32] = rand::random();
    let start = doc! {
        "saslStart": 1,
        "mechanism": "MONGODB-AWS",
        "payload": Binary { subtype: BinarySubtype::Generic, bytes: aws_auth::client_first(&nonce) },
        "$db": "$external",
    };
    let reply = exchange(state, &mut tls, 1, &start).await?;
    check_ok(&reply, role_arn)?;
    let conversation = reply.get("conversationId").cloned().unwrap_or(Bson::Int32(1));
    let payload = payload_bytes(&reply)?;
    let (server_nonce, host) = aws_auth::server_first(&payload, &nonce).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
    let host_name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&host);
    state.endpoints.check_sts_host(host_name)?;
    let region = aws_auth::sts_region(&host);
    let (authorization, date, token) = aws_auth::sign_caller_identity(&host, &region, &server_nonce, credentials, SystemTime::now())
        .map_err(|e| SessionError::UpstreamProtocol(e.to_string()))?;
    let cont = doc! {
        "saslContinue": 1,
        "conversationId": conversation,
        "payload": Binary { subtype: BinarySubtype::Generic, bytes: aws_auth::client_final(&authorization, &date, token.as_deref()) },
        "$db": "$external",
    };
    let reply = exchange(state, &mut tls, 2, &cont).await?;
    check_ok(&reply, role_arn)?;
    if !reply.get_bool("done").unwrap_or(true) {
        return Err(SessionError::UpstreamProtocol("the database wants a third MONGODB-AWS step".into()));
    }
    debug!(role = role_arn, sts_host = %host, "logged in to DocumentDB with MONGODB-AWS");
    Ok(tls)
}

async fn exchange(state: &ProxyState, tls: &mut UpstreamStream, id: i32, command: &Document) -> Result<Document, SessionError> {
    tls.write_all(&codec::encode_msg(id, 0, command)).await.map_err(SessionError::UpstreamIo)?;
    tls.flush().await.map_err(SessionError::UpstreamIo)?;
    let read = async {
        let mut head = [0u8; HEADER];
        tls.read_exact(&mut head).await?;
        let header = Header::parse(&head).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if header.length > MAX_LOGIN_REPLY {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a login reply over 1 MiB"));
        }
        let mut body = vec![0u8; header.length - HEADER];
        tls.read_exact(&mut body).await?;
        Ok((header, body))
    };
    let (header, body) = tokio::time::timeout(state.limits.connect_timeout * 2, read)
        .await
        .map_err(|_| SessionError::UpstreamProtocol("the database did not answer the login in time".into()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SessionError::UpstreamProtocol("the database closed the connection during login".into()),
            _ => SessionError::UpstreamProtocol(e.to_string()),
        })?;
    codec::reply_document(&header, &body).map_err(|e| SessionError::UpstreamProtocol(e.to_string()))
}

fn payload_bytes(reply: &Document) -> Result<Vec<u8>, SessionError> {
    match reply.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        _ => Err(SessionError::UpstreamProtocol("the SASL reply has no binary payload".into())),
    }
}

/// `ok: 1`, or the refusal in words that say what to fix.
fn check_ok(reply: &Document, role_arn: &str) -> Result<(), SessionError> {
    let ok = match reply.get("ok") {
        Some(Bson::Double(v)) => *v == 1.0,
        Some(Bson::Int32(v)) => *v == 1,
        Some(Bson::Int64(v)) => *v == 1,
        Some(Bson::Boolean(v)) => *v,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let code = reply.get_i32("code").unwrap_or(0);
    let message = reply.get_str("errmsg").unwrap_or("").to_owned();
    warn!(code, message, role = role_arn, "the database refused the login");
    match code {
        18 => Err(SessionError::UpstreamRejected { db_user: role_arn.into(), sqlstate: code.to_string(), message }),
        // BadValue / MechanismUnavailable: no MONGODB-AWS before DocumentDB 5.0.
        2 | 334 => Err(SessionError::UpstreamFatal {
            sqlstate: code.to_string(),
            message: format!(
                "the database does not accept MONGODB-AWS ({message}): IAM authentication needs Amazon DocumentDB 5.0 or later; upgrade the cluster's engine version"
            ),
            code: u16::try_from(code).ok(),
        }),
        _ => Err(SessionError::UpstreamFatal { sqlstate: code.to_string(), message, code: u16::try_from(code).ok() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_remedy() {
        assert!(check_ok(&doc! { "ok": 1.0 }, "r").is_ok());
        let e = check_ok(&doc! { "ok": 0.0, "code": 18, "errmsg": "Authentication failed." }, "arn:aws:iam::1:role/r").unwrap_err();
        let m = e.client_message(&crate::proxy::mongodb::REMEDY).unwrap();
        assert!(m.hint.unwrap().contains("$external"), "{}", m.message);
        let e = check_ok(&doc! { "ok": 0, "code": 2, "errmsg": "Received authentication for mechanism MONGODB-AWS which is unknown or not enabled" }, "r")
            .unwrap_err();
        assert!(e.to_string().contains("DocumentDB 5.0 or later"), "{e}");
    }
}
