//! Checks of the IRSA web identity token file, for messages that say what is wrong with it.

use base64::Engine;

/// When `AWS_WEB_IDENTITY_TOKEN_FILE` is set but its token is unusable, says why (unreadable,
/// empty, not a JWT, expired). `None` when it looks fine or is not configured.
pub fn diagnose() -> Option<String> {
    let path = std::env::var("AWS_WEB_IDENTITY_TOKEN_FILE").ok()?;
    if std::env::var("AWS_ROLE_ARN").is_err() {
        return Some(format!(
            "AWS_WEB_IDENTITY_TOKEN_FILE={path} is set but AWS_ROLE_ARN is not: IRSA needs both (is the ServiceAccount annotated with eks.amazonaws.com/role-arn?)"
        ));
    }
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return Some(format!("the web identity token file {path} cannot be read ({e}): is the projected service account token volume mounted?")),
    };
    check_token(&path, token.trim(), time::OffsetDateTime::now_utc().unix_timestamp())
}

/// Checks one token's shape and `exp` claim at `now` (seconds since the epoch).
pub fn check_token(path: &str, token: &str, now: i64) -> Option<String> {
    if token.is_empty() {
        return Some(format!("the web identity token file {path} is empty"));
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    (exp < now).then(|| {
        let when = time::OffsetDateTime::from_unix_timestamp(exp)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| exp.to_string());
        format!("the web identity token in {path} expired at {when}: the kubelet refreshes projected tokens, so check the token volume and the pod's clock")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: i64) -> String {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(&format!(r#"{{"sub":"system:serviceaccount:ns:sa","exp":{exp}}}"#)))
    }

    #[test]
    fn expired_and_empty_tokens_are_named() {
        assert!(check_token("/t", &jwt(100), 200).unwrap().contains("expired at 1970-01-01T00:01:40Z"));
        assert_eq!(check_token("/t", &jwt(300), 200), None);
        assert!(check_token("/t", "", 200).unwrap().contains("is empty"));
        assert_eq!(check_token("/t", "not-a-jwt", 200), None);
    }
}
