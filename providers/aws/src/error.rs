//! Every SDK error becomes a `galley_core::Error` here, in one place: the kind decides whether
//! Galley's retry loop tries again, the message says what AWS said without SDK internals.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use galley_core::{Error, ErrorKind, Stage};

/// What an AWS error says, reduced to the parts that decide its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsFault {
    pub code: Option<String>,
    pub message: Option<String>,
    pub status: Option<u16>,
    /// The request never got an answer (connection refused, reset, timed out).
    pub transport: Option<TransportFault>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFault {
    Timeout,
    Io,
    /// The request could not be built or signed (e.g. no credentials).
    Construction,
    Other,
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

const UNAUTHENTICATED: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "AuthFailure",
    "MissingAuthenticationToken",
    "IncompleteSignature",
];

const NOT_FOUND: &[&str] = &[
    "NoSuchKey",
    "NoSuchBucket",
    "NotFound",
    "NoSuchUpload",
    "NoSuchVersion",
    "ResourceNotFound",
    "ResourceNotFoundException",
    "NoSuchTagSet",
    "ServerSideEncryptionConfigurationNotFoundError",
];

impl AwsFault {
    pub fn kind(&self) -> ErrorKind {
        if let Some(t) = self.transport {
            return match t {
                TransportFault::Timeout => ErrorKind::Timeout,
                TransportFault::Io => ErrorKind::Unavailable,
                TransportFault::Construction => ErrorKind::Unauthenticated,
                TransportFault::Other => ErrorKind::Unavailable,
            };
        }
        let code = self.code.as_deref().unwrap_or("");
        let message = self.message.as_deref().unwrap_or("");
        if THROTTLING.contains(&code) || self.status == Some(429) {
            return ErrorKind::Throttled;
        }
        if UNAUTHENTICATED.contains(&code) {
            return ErrorKind::Unauthenticated;
        }
        if NOT_FOUND.contains(&code) || self.status == Some(404) {
            return ErrorKind::NotFound;
        }
        // SageMaker reports a missing resource as a ValidationException whose message says so.
        if code == "ValidationException"
            && (message.contains("Could not find") || message.contains("does not exist") || message.contains("not found"))
        {
            return ErrorKind::NotFound;
        }
        match code {
            "AccessDenied" | "AccessDeniedException" | "Forbidden" => return ErrorKind::PermissionDenied,
            "BucketAlreadyOwnedByYou" | "ResourceInUse" | "ResourceInUseException" => return ErrorKind::AlreadyExists,
            "BucketAlreadyExists" => return ErrorKind::Conflict,
            "ConflictException" | "ConditionalRequestConflict" | "PreconditionFailed" | "OperationAborted"
            | "BucketNotEmpty" => return ErrorKind::Conflict,
            "ValidationException" | "ValidationError" | "InvalidParameterValue" | "InvalidParameterCombination"
            | "InvalidRequest" | "InvalidArgument" | "InvalidBucketName" | "MalformedXML" | "ModelError"
            | "ResourceLimitExceeded" | "InvalidParameterValueException" | "MissingParameter" => {
                return ErrorKind::InvalidInput;
            }
            "ServiceUnavailable" | "ServiceUnavailableException" | "InternalError" | "InternalFailure"
            | "InternalServerError" | "InternalServiceError" | "InternalServiceException" | "RequestTimeout"
            | "RequestTimeoutException" | "ModelNotReadyException" => return ErrorKind::Unavailable,
            _ => {}
        }
        match self.status {
            Some(412) | Some(409) => ErrorKind::Conflict,
            Some(403) => ErrorKind::PermissionDenied,
            Some(401) => ErrorKind::Unauthenticated,
            Some(s) if s >= 500 => ErrorKind::Unavailable,
            Some(s) if s >= 400 => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        }
    }

    fn describe(&self) -> String {
        let mut s = String::from("AWS answered");
        if let Some(st) = self.status {
            s.push_str(&format!(" HTTP {st}"));
        }
        if let Some(c) = &self.code {
            s.push_str(&format!(" {c}"));
        }
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {m}"));
        }
        match self.transport {
            Some(TransportFault::Timeout) => "the request to AWS timed out".into(),
            Some(TransportFault::Io) => "could not reach AWS (connection failed)".into(),
            Some(TransportFault::Construction) => "the request could not be built or signed (check the credentials)".into(),
            Some(TransportFault::Other) => "the request to AWS failed before an answer".into(),
            None => s,
        }
    }

    pub fn into_error(self, stage: Stage, operation: &str, resource: &str) -> Error {
        let kind = self.kind();
        let mut message = self.describe();
        match kind {
            ErrorKind::Unauthenticated => message.push_str(
                ". The AWS credentials were refused or missing: check AWS_PROFILE / AWS_ACCESS_KEY_ID, or `platforms.aws.profile`",
            ),
            ErrorKind::PermissionDenied => {
                message.push_str(&format!(". The credentials lack permission for `{operation}` on `{resource}`"))
            }
            ErrorKind::Throttled => message.push_str(". AWS is throttling; the SDK retried with backoff and gave up"),
            _ => {}
        }
        Error::new(kind, message).platform(crate::platform::AWS).stage(stage).operation(operation).resource(resource)
    }
}

/// Reduces any SDK error to an [`AwsFault`].
pub fn fault<E>(err: &SdkError<E, HttpResponse>) -> AwsFault
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err {
        SdkError::ServiceError(se) => AwsFault {
            code: se.err().code().map(str::to_owned),
            // Without a message, say what the SDK saw (never includes credentials).
            message: se.err().message().map(str::to_owned).or_else(|| Some(source_chain(err))),
            status,
            transport: None,
        },
        SdkError::TimeoutError(_) => AwsFault { code: None, message: None, status, transport: Some(TransportFault::Timeout) },
        SdkError::DispatchFailure(d) => {
            let t = if d.is_timeout() {
                TransportFault::Timeout
            } else if d.is_io() {
                TransportFault::Io
            } else if d.is_user() {
                TransportFault::Construction
            } else {
                TransportFault::Other
            };
            AwsFault { code: None, message: None, status, transport: Some(t) }
        }
        SdkError::ConstructionFailure(_) => {
            AwsFault { code: None, message: None, status, transport: Some(TransportFault::Construction) }
        }
        // A response that could not be parsed: judge it by its status, and say why.
        SdkError::ResponseError(_) => AwsFault {
            code: None,
            message: Some(format!("an answer the SDK could not read ({})", source_chain(err))),
            status,
            transport: if status.is_none() { Some(TransportFault::Other) } else { None },
        },
        _ => AwsFault { code: None, message: None, status, transport: if status.is_none() { Some(TransportFault::Other) } else { None } },
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(inner) = cur {
        parts.push(inner.to_string());
        cur = inner.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

/// Maps an SDK error, naming the stage, operation and resource.
pub fn sdk<E>(stage: Stage, operation: &str, resource: &str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error + use<E>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (operation, resource) = (operation.to_owned(), resource.to_owned());
    move |err| fault(&err).into_error(stage, &operation, &resource)
}

/// True when the error says the thing is not there.
pub fn is_not_found(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(code: &str, message: &str, status: u16) -> AwsFault {
        AwsFault { code: Some(code.into()), message: Some(message.into()), status: Some(status), transport: None }
    }

    #[test]
    fn throttling_and_5xx_are_retryable() {
        for f in [
            svc("ThrottlingException", "Rate exceeded", 400),
            svc("SlowDown", "Please reduce your request rate.", 503),
            svc("", "", 429),
            svc("InternalFailure", "", 500),
            svc("Whatever", "", 502),
        ] {
            assert!(f.kind().is_retryable(), "{f:?} -> {:?}", f.kind());
        }
        assert_eq!(svc("ThrottlingException", "", 400).kind(), ErrorKind::Throttled);
        assert_eq!(svc("Whatever", "", 503).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn client_errors_are_not_retryable_and_classified() {
        assert_eq!(svc("InvalidAccessKeyId", "", 403).kind(), ErrorKind::Unauthenticated);
        assert_eq!(svc("SignatureDoesNotMatch", "", 403).kind(), ErrorKind::Unauthenticated);
        assert_eq!(svc("AccessDenied", "", 403).kind(), ErrorKind::PermissionDenied);
        assert_eq!(svc("NoSuchKey", "", 404).kind(), ErrorKind::NotFound);
        assert_eq!(
            svc("ValidationException", "Could not find endpoint \"arn:aws:sagemaker:x\".", 400).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(svc("ValidationException", "1 validation error detected", 400).kind(), ErrorKind::InvalidInput);
        assert_eq!(svc("PreconditionFailed", "", 412).kind(), ErrorKind::Conflict);
        assert_eq!(svc("ResourceInUse", "", 400).kind(), ErrorKind::AlreadyExists);
        let io = AwsFault { code: None, message: None, status: None, transport: Some(TransportFault::Io) };
        assert_eq!(io.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn message_names_context_and_says_what_to_do() {
        let e = svc("InvalidClientTokenId", "The security token included in the request is invalid.", 403)
            .into_error(Stage::Serving, "CreateEndpoint", "wine");
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        let s = e.to_string();
        assert!(s.starts_with("[aws serving CreateEndpoint wine]"), "{s}");
        assert!(s.contains("AWS_PROFILE"), "{s}");
    }
}
