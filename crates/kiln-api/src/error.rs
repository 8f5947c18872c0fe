//! The AWS error envelope: `{"__type": "<Code>", "message": "<text>"}` with an HTTP status.

use serde::Serialize;

/// An error as an AWS JSON 1.1 service reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    /// HTTP status code.
    pub status: u16,
    /// The `__type` code botocore maps to an exception class.
    pub code: &'static str,
    /// Human-readable text.
    pub message: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "__type")]
    code: &'a str,
    message: &'a str,
}

impl AwsError {
    /// Builds an error with an explicit status and code.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `ValidationException` (400), the service's answer to any constraint violation.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    /// `SerializationException` (400): the body is not the JSON shape the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message)
    }

    /// `ResourceNotFound` (400), SageMaker's modeled not-found error.
    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceNotFound", message)
    }

    /// `ResourceInUse` (400).
    pub fn resource_in_use(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceInUse", message)
    }

    /// `ResourceLimitExceeded` (400).
    pub fn resource_limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceLimitExceeded", message)
    }

    /// `ConflictException` (400).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(400, "ConflictException", message)
    }

    /// `UnknownOperationException` (400) for an `X-Amz-Target` this service does not serve.
    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            400,
            "UnknownOperationException",
            format!("Operation {target} is not supported by this service."),
        )
    }

    /// `InternalFailure` (500): something on the server's side went wrong; the message says what.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalFailure", message)
    }

    /// CloudWatch Logs' `ResourceNotFoundException`.
    pub fn logs_not_found(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceNotFoundException", message)
    }

    /// CloudWatch Logs' `InvalidParameterException`.
    pub fn logs_invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterException", message)
    }

    /// CloudWatch Logs' `ResourceAlreadyExistsException`.
    pub fn logs_already_exists(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceAlreadyExistsException", message)
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> String {
        serde_json::to_string(&Envelope {
            code: self.code,
            message: &self.message,
        })
        .unwrap_or_else(|_| String::from("{\"__type\":\"InternalFailure\",\"message\":\"\"}"))
    }
}

/// Shorthand for results of API operations.
pub type ApiResult<T> = Result<T, AwsError>;
