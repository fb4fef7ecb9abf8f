//! Every SDK error becomes a `galley_core::Error` here, in one place: the kind decides whether
//! Galley's retry loop tries again, the message says what AWS said without SDK internals.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
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
    /// The answer was not AWS's (a proxy's error page, a wrong endpoint).
    pub foreign: Option<ForeignAnswer>,
}

/// An answer whose body is not an AWS answer, reduced to what a user needs to find who gave it.
/// Never holds headers (other than the content type) or credentials.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForeignAnswer {
    /// Who answered, `scheme://host[:port]/`, when the client records it ([`RecordEndpoint`]).
    pub endpoint: Option<String>,
    pub content_type: Option<String>,
    /// The body's first [`EXCERPT_CHARS`] characters, whitespace collapsed.
    pub excerpt: String,
}

/// How much of a foreign body an error quotes.
pub const EXCERPT_CHARS: usize = 80;

impl ForeignAnswer {
    /// `Some` when `raw` has a body; with `html_only`, only when that body is an HTML page.
    fn of(raw: &HttpResponse, html_only: bool) -> Option<Self> {
        let body = raw.body().bytes().filter(|b| !b.iter().all(u8::is_ascii_whitespace))?;
        let content_type = raw.headers().get("content-type").map(str::to_owned);
        let text = String::from_utf8_lossy(body);
        let head = text.trim_start().get(..9).unwrap_or("").to_ascii_lowercase();
        let html = content_type.as_deref().is_some_and(|c| c.contains("html"))
            || head.starts_with("<!doctype")
            || head.starts_with("<html");
        if html_only && !html {
            return None;
        }
        let endpoint = raw.extension::<AnsweredBy>().map(|a| a.0.clone());
        Some(ForeignAnswer { endpoint, content_type, excerpt: excerpt(&text) })
    }
}

fn excerpt(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = flat.chars().filter(|c| !c.is_control());
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Records on every response which endpoint answered (`scheme://host[:port]/`, nothing of the
/// path, query or user info), so [`fault`] can name it when the answer is not AWS's. Install it
/// on a client's config builder: `.interceptor(RecordEndpoint)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordEndpoint;

/// The origin a response came from, as a response extension.
#[derive(Debug, Clone)]
struct AnsweredBy(String);

impl Storable for AnsweredBy {
    type Storer = StoreReplace<Self>;
}

impl Intercept for RecordEndpoint {
    fn name(&self) -> &'static str {
        "galley::RecordEndpoint"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(AnsweredBy(origin(context.request().uri())));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(a) = cfg.load::<AnsweredBy>() {
            context.response_mut().add_extension(a.clone());
        }
        Ok(())
    }
}

/// `scheme://host[:port]/` of a URL: no user info, path or query.
fn origin(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("https", uri));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/")
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
        if let Some(f) = &self.foreign {
            let who = f.endpoint.as_deref().unwrap_or("the endpoint");
            let status = self.status.map(|st| format!(" HTTP {st}")).unwrap_or_default();
            let what = f.content_type.as_deref().unwrap_or("no content type");
            return format!(
                "{who} answered{status} with a body that is not an AWS answer ({what}: {:?}): check the endpoint URL and any proxy",
                f.excerpt
            );
        }
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
            // A foreign answer says nothing about credentials or AWS's throttling.
            _ if self.foreign.is_some() => {}
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
        // Every AWS error answer carries a code: a body without one was not written by AWS.
        SdkError::ServiceError(se) if se.err().code().is_none() && se.err().message().is_none() => {
            match ForeignAnswer::of(se.raw(), false) {
                Some(foreign) => AwsFault { code: None, message: None, status, transport: None, foreign: Some(foreign) },
                None => AwsFault { code: None, message: Some(source_chain(err)), status, transport: None, foreign: None },
            }
        }
        SdkError::ServiceError(se) => AwsFault {
            code: se.err().code().map(str::to_owned),
            // Without a message, say what the SDK saw (never includes credentials).
            message: se.err().message().map(str::to_owned).or_else(|| Some(source_chain(err))),
            status,
            transport: None,
            foreign: None,
        },
        SdkError::TimeoutError(_) => {
            AwsFault { code: None, message: None, status, transport: Some(TransportFault::Timeout), foreign: None }
        }
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
            AwsFault { code: None, message: None, status, transport: Some(t), foreign: None }
        }
        SdkError::ConstructionFailure(_) => {
            AwsFault { code: None, message: None, status, transport: Some(TransportFault::Construction), foreign: None }
        }
        // A response that could not be parsed: an HTML page is someone else's; otherwise judge
        // it by its status, and say why.
        SdkError::ResponseError(r) => match ForeignAnswer::of(r.raw(), true) {
            Some(foreign) => AwsFault { code: None, message: None, status, transport: None, foreign: Some(foreign) },
            None => AwsFault {
                code: None,
                message: Some(format!("an answer the SDK could not read ({})", source_chain(err))),
                status,
                transport: if status.is_none() { Some(TransportFault::Other) } else { None },
                foreign: None,
            },
        },
        _ => AwsFault {
            code: None,
            message: None,
            status,
            transport: if status.is_none() { Some(TransportFault::Other) } else { None },
            foreign: None,
        },
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
    use aws_smithy_types::error::ErrorMetadata;

    fn svc(code: &str, message: &str, status: u16) -> AwsFault {
        AwsFault { code: Some(code.into()), message: Some(message.into()), status: Some(status), transport: None, foreign: None }
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
        let io = AwsFault { code: None, message: None, status: None, transport: Some(TransportFault::Io), foreign: None };
        assert_eq!(io.kind(), ErrorKind::Unavailable);
    }

    fn answer(status: u16, content_type: &str, body: &str, endpoint: Option<&str>) -> HttpResponse {
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap();
        let mut raw = HttpResponse::new(status, aws_smithy_types::body::SdkBody::from(body));
        raw.headers_mut().insert("content-type", content_type.to_owned());
        raw.headers_mut().insert("x-amz-security-token", "SECRET-HEADER".to_owned());
        if let Some(e) = endpoint {
            raw.add_extension(AnsweredBy(e.into()));
        }
        raw
    }

    /// An error answer the SDK could not parse: no code, no message (what the SDK's error
    /// parsers leave for an HTML page).
    fn unparsed(raw: HttpResponse) -> SdkError<ErrorMetadata, HttpResponse> {
        SdkError::service_error(ErrorMetadata::builder().build(), raw)
    }

    #[test]
    fn a_foreign_error_page_names_the_operation_status_and_who_answered() {
        let html = "<html><body>Bad gateway</body></html>";
        let raw = answer(502, "text/html", html, Some("http://127.0.0.1:9/"));
        let e = sdk(Stage::Artifacts, "PutObject", "s3://b/k")(unparsed(raw));
        let s = e.to_string();
        assert_eq!(
            s,
            "[aws artifacts PutObject s3://b/k] http://127.0.0.1:9/ answered HTTP 502 with a body that is not an AWS answer \
             (text/html: \"<html><body>Bad gateway</body></html>\"): check the endpoint URL and any proxy"
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable, "a 5xx is still worth retrying");
        assert!(!s.contains("SECRET-HEADER"), "{s}");

        // A proxy's 403 is not a credentials problem: no AWS hint.
        let raw = answer(403, "text/html; charset=utf-8", &format!("<!DOCTYPE html>{}", "x".repeat(200)), None);
        let s = sdk(Stage::Artifacts, "GetObject", "s3://b/k")(unparsed(raw)).to_string();
        assert!(s.contains("the endpoint answered HTTP 403 with a body that is not an AWS answer"), "{s}");
        assert!(!s.contains("credentials"), "{s}");
        let quoted = s.split('"').nth(1).unwrap();
        assert_eq!(quoted.chars().count(), EXCERPT_CHARS + 1, "{quoted}");
        assert!(quoted.ends_with('…'), "{quoted}");
    }

    #[test]
    fn aws_errors_and_readable_answers_are_not_called_foreign() {
        let xml = "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        let coded = SdkError::service_error(
            ErrorMetadata::builder().code("NoSuchKey").message("gone").build(),
            answer(404, "application/xml", xml, Some("http://h/")),
        );
        let f = fault(&coded);
        assert_eq!((&f.foreign, f.code.as_deref(), f.kind()), (&None, Some("NoSuchKey"), ErrorKind::NotFound));

        // An empty error body (a HEAD) is AWS's way, not a foreign answer.
        assert_eq!(fault(&unparsed(answer(404, "application/xml", "", None))).foreign, None);

        // A success answer the SDK could not read is foreign only when it is an HTML page.
        let unreadable = |raw| {
            SdkError::<ErrorMetadata, HttpResponse>::response_error(std::io::Error::other("unexpected token '<'"), raw)
        };
        let f = fault(&unreadable(answer(200, "text/html", "<html>captive portal</html>", Some("http://proxy:3128/"))));
        assert_eq!(f.foreign.as_ref().and_then(|f| f.endpoint.as_deref()), Some("http://proxy:3128/"));
        let f = fault(&unreadable(answer(200, "application/json", "{\"Half\":", None)));
        assert_eq!(f.foreign, None);
        assert!(f.message.unwrap().contains("could not read"));
    }

    #[test]
    fn the_recorded_endpoint_is_the_origin_only() {
        assert_eq!(origin("http://127.0.0.1:9/b/k?x-id=PutObject"), "http://127.0.0.1:9/");
        assert_eq!(origin("https://user:pw@b.s3.eu-west-1.amazonaws.com/k"), "https://b.s3.eu-west-1.amazonaws.com/");
        assert_eq!(origin("https://api.sagemaker.us-east-1.amazonaws.com"), "https://api.sagemaker.us-east-1.amazonaws.com/");
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
