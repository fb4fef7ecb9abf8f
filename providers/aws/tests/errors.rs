//! What a first user reads when the state bucket is missing or something other than AWS answers.

mod common;

use common::scripted::{Reply, Scripted};
use galley_aws::{AwsConfig, S3StateBackend};
use galley_core::ErrorKind;
use galley_engine::{LockInfo, State, StateBackend};

/// A state bucket that does not exist is named, with how to create it; reading the state from
/// it is an error too, not "no state yet".
#[test]
fn a_missing_state_bucket_says_how_to_create_it() {
    let Some(url) = common::moto_url() else { return };
    let bucket = common::unique("galley-missing");
    let backend = S3StateBackend::connect(&common::config(&url), &bucket, "galley/state.json").unwrap();
    let lock = backend.lock(&LockInfo::new("apply")).unwrap_err();
    let load = backend.load().unwrap_err();
    let save = backend.save(&State::new()).unwrap_err();
    for e in [lock, load, save] {
        let s = e.to_string();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{s}");
        assert!(s.contains(&format!("the state bucket `{bucket}` does not exist (region {})", common::REGION)), "{s}");
        assert!(s.contains(&format!("aws s3api create-bucket --bucket {bucket} --region us-east-1 --endpoint-url {url}`")), "{s}");
        assert!(s.contains(&format!("aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled")), "{s}");
    }
}

/// A proxy's HTML error page is reported as such: the operation, the status and who answered,
/// never the SDK's parser error.
#[tokio::test(flavor = "multi_thread")]
async fn an_html_answer_names_the_operation_status_and_endpoint() {
    let server = Scripted::route(|_, _| Reply {
        status: 502,
        content_type: "text/html",
        body: b"<html><body>Bad gateway</body></html>".to_vec(),
    })
    .await;
    let config = AwsConfig::emulator(&server.url, common::REGION, common::ACCESS_KEY, common::SECRET_KEY)
        .with_retry(galley_core::RetryPolicy { max_attempts: 1, ..Default::default() });
    let backend = S3StateBackend::connect(&config, "b", "galley/state.json").unwrap();
    // The backend blocks its caller: off the runtime's workers, so the server keeps answering.
    let e = tokio::task::spawn_blocking(move || backend.load().unwrap_err()).await.unwrap();
    let s = e.to_string();
    assert!(s.starts_with("[aws artifacts GetObject s3://b/galley/state.json] "), "{s}");
    assert!(
        s.contains(&format!(
            "{}/ answered HTTP 502 with a body that is not an AWS answer (text/html: \"<html><body>Bad gateway</body></html>\")",
            server.url
        )),
        "{s}"
    );
    assert!(s.contains("check the endpoint URL and any proxy"), "{s}");
    assert!(!s.contains("unexpected token") && !s.contains("unhandled error"), "{s}");
    assert!(!s.contains(common::SECRET_KEY) && !s.contains(common::ACCESS_KEY), "{s}");
    assert!(!server.requests().is_empty());
}

/// The same through a JSON protocol (SageMaker), whose parser fails on `<` with "unexpected
/// token": the one SDK-error mapping reports it alike.
#[tokio::test]
async fn an_html_answer_to_a_json_protocol_is_reported_alike() {
    use galley_aws::error::{RecordEndpoint, sdk};
    let server = Scripted::route(|_, _| Reply {
        status: 502,
        content_type: "text/html",
        body: b"<html><body>Bad gateway</body></html>".to_vec(),
    })
    .await;
    let c = common::clients(&server.url).await;
    let sagemaker = aws_sdk_sagemaker::Client::from_conf(c.sagemaker.config().to_builder().interceptor(RecordEndpoint).build());
    let e = sagemaker
        .describe_endpoint()
        .endpoint_name("wine")
        .send()
        .await
        .map_err(sdk(galley_core::Stage::Serving, "DescribeEndpoint", "wine"))
        .unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("[aws serving DescribeEndpoint wine] "), "{s}");
    assert!(s.contains(&format!("{}/ answered HTTP 502 with a body that is not an AWS answer (text/html: ", server.url)), "{s}");
    assert!(!s.contains("unexpected token"), "{s}");
}
