//! Errors as DynamoDB returns them — an HTTP status and a JSON body with `__type` and `message` —
//! so SDKs and the AWS CLI raise their usual exceptions with the proxy's explanation.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

/// One error for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error code (`AccessDeniedException`, …).
    pub code: &'static str,
    /// What happened and what to do (never a key, token or signature).
    pub message: String,
}

impl ApiError {
    /// A 400 AccessDeniedException, as DynamoDB answers a request its caller may not make.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "AccessDeniedException", message: message.into() }
    }
    /// A 400 UnrecognizedClientException: the caller is not known (no valid certificate).
    pub fn unrecognized_client(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "UnrecognizedClientException", message: message.into() }
    }
    /// A 400 UnknownOperationException.
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "UnknownOperationException", message: message.into() }
    }
    /// A 400 ValidationException.
    pub fn validation(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "ValidationException", message: message.into() }
    }
    /// A 413 RequestEntityTooLarge.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, code: "RequestEntityTooLarge", message: message.into() }
    }
    /// A 408 RequestTimeoutException.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self { status: StatusCode::REQUEST_TIMEOUT, code: "RequestTimeoutException", message: message.into() }
    }
    /// A 503 ServiceUnavailable: the proxy cannot reach AWS.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "ServiceUnavailable", message: message.into() }
    }
    /// A 500 InternalServerError: the proxy has no usable AWS credentials.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "InternalServerError", message: message.into() }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{}", self.code),
            "message": self.message,
        }))
        .unwrap_or_default()
    }

    /// The HTTP response.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-amz-json-1.0"));
        if let Ok(v) = http::HeaderValue::from_str(self.code) {
            headers.insert("x-amzn-errortype", v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_type_and_message_sdks_read() {
        let e = ApiError::access_denied("role \"x\" is not allowed");
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["__type"], "com.amazonaws.dynamodb.v20120810#AccessDeniedException");
        assert_eq!(body["message"], "role \"x\" is not allowed");
        let r = e.to_response();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["x-amzn-errortype"], "AccessDeniedException");
    }
}
