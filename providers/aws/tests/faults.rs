//! Faults an emulator never produces, driven through the real SDK clients against a scripted
//! HTTP server: multi-step polling by the official waiter rules, throttling and 5xx retried by
//! the SDK per Galley's retry policy, refused and missing credentials reported once, clearly.

mod common;

use std::time::Duration;

use common::scripted::{Reply, Scripted};
use galley_aws::{AwsClients, AwsConfig, CredentialSource, S3Artifacts, SageMakerServing};
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt};
use galley_core::{ErrorKind, RetryPolicy};
use serde_json::json;

fn describe_endpoint(status: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "EndpointName": "wine",
            "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/wine",
            "EndpointConfigName": "wine-0123abcd",
            "EndpointStatus": status,
            "CreationTime": 1.7e9,
            "LastModifiedTime": 1.7e9,
        }),
    )
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts: attempts, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) }
}

async fn clients_for(server: &Scripted, attempts: u32) -> AwsClients {
    let config = AwsConfig::emulator(&server.url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY).with_retry(fast_retry(attempts));
    AwsClients::connect(&config).await.unwrap()
}

fn serving(c: AwsClients) -> SageMakerServing {
    let mut s = SageMakerServing::new(c, Some("img".into()), None);
    s.poll_delay = Some(Duration::from_millis(1));
    s
}

#[tokio::test]
async fn endpoint_waiter_polls_creating_creating_in_service() {
    let server = Scripted::start(vec![describe_endpoint("Creating"), describe_endpoint("Creating"), describe_endpoint("InService")]).await;
    serving(clients_for(&server, 1).await).wait_in_service("wine").await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "one DescribeEndpoint per poll until InService");
    for r in &reqs {
        assert_eq!(r.header("x-amz-target"), Some("SageMaker.DescribeEndpoint"));
        assert_eq!(r.json(), json!({"EndpointName": "wine"}));
    }
}

#[tokio::test]
async fn endpoint_waiter_stops_at_failed_with_the_reason() {
    let mut failed = describe_endpoint("Failed");
    failed.body = json!({
        "EndpointName": "wine", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/wine",
        "EndpointStatus": "Failed", "FailureReason": "The primary container did not pass the ping health check.",
        "CreationTime": 1.7e9, "LastModifiedTime": 1.7e9,
    })
    .to_string()
    .into_bytes();
    let server = Scripted::start(vec![describe_endpoint("Creating"), failed, describe_endpoint("InService")]).await;
    let e = serving(clients_for(&server, 1).await).wait_in_service("wine").await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("ping health check"), "{e}");
    assert_eq!(server.requests().len(), 2, "the waiter stops at the failure state");
}

#[tokio::test]
async fn endpoint_deleted_waiter_treats_validation_exception_as_gone() {
    let gone = Reply::json(400, json!({"__type": "ValidationException", "message": "Could not find endpoint \"wine\"."}));
    let server = Scripted::start(vec![describe_endpoint("Deleting"), describe_endpoint("Deleting"), gone]).await;
    serving(clients_for(&server, 1).await).wait_deleted("wine").await.unwrap();
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_by_the_sdk() {
    let server = Scripted::start(vec![
        Reply::s3_error(503, "SlowDown", "Please reduce your request rate."),
        Reply::s3_error(500, "InternalError", "We encountered an internal error."),
        Reply::xml(200, "hello"),
    ])
    .await;
    let store = S3Artifacts::new(clients_for(&server, 3).await.s3, "bucket");
    let got = store.get_bytes(&ArtifactKey::new("k").unwrap()).await.unwrap();
    assert_eq!(&got[..], b"hello");
    assert_eq!(server.requests().len(), 3, "two retried failures and the success");
}

#[tokio::test]
async fn persistent_throttling_ends_as_a_retryable_error() {
    let server = Scripted::start(vec![Reply::s3_error(503, "SlowDown", "Please reduce your request rate.")]).await;
    let store = S3Artifacts::new(clients_for(&server, 2).await.s3, "bucket");
    let e = store.head(&ArtifactKey::new("k").unwrap()).await.unwrap_err();
    assert!(e.is_retryable(), "{:?}: {e}", e.kind());
    assert_eq!(server.requests().len(), 2, "the SDK made exactly the attempts Galley's policy allows");
}

#[tokio::test]
async fn refused_credentials_are_one_clear_error() {
    let server = Scripted::start(vec![Reply::s3_error(
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    )])
    .await;
    let store = S3Artifacts::new(clients_for(&server, 3).await.s3, "bucket");
    let e = store.list("models/").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("InvalidAccessKeyId") && msg.contains("AWS_PROFILE"), "{msg}");
    assert!(!msg.contains(common::SECRET_KEY), "{msg}");
    assert_eq!(server.requests().len(), 1, "a refusal is not retried");
    // The request was signed with the access key id, never the secret.
    let auth = server.requests()[0].header("authorization").unwrap_or_default().to_owned();
    assert!(auth.contains(common::ACCESS_KEY) && !auth.contains(common::SECRET_KEY));
}

#[tokio::test]
async fn a_missing_profile_names_the_source_tried() {
    let profile = format!("galley-no-such-profile-{}", uuid::Uuid::new_v4().simple());
    let mut config = AwsConfig::new(common::REGION);
    config.endpoint_url = Some("http://127.0.0.1:9".into());
    config.credentials = CredentialSource::Profile(profile.clone());
    let e = AwsClients::connect(&config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("no AWS credentials: tried the profile"), "{msg}");
    assert!(msg.contains(&profile), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one line, not a stack of SDK internals: {msg}");
}
