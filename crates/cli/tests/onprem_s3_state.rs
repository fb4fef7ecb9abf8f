//! onprem's state in an S3-compatible store (`backend: { type: s3, endpoint_url }`), through the
//! real binary, on moto's S3 server (`GALLEY_TEST_MOTO_URL`): the same S3 code as the aws
//! platform, pointed at a store that is not AWS. Moto's S3 API is what answers here; MinIO (the
//! usual on-prem store) does not install on this machine, so it is not what these tests ran on.
//!
//! What is checked, each through moto's S3 API rather than Galley: `galley init` creates the
//! bucket versioned; apply writes the state object there (and no local state file); a lock held
//! in the store stops a destroy, naming its holder; destroy leaves a state with no
//! resources; the credentials appear nowhere in the store; a store that is down fails the apply
//! naming the endpoint, with nothing written anywhere.

#![cfg(feature = "onprem-s3")]

mod common;
#[path = "../../../providers/aws/tests/common/substrate.rs"]
mod substrate;

use std::process::Output;

use common::{Project, ok};
use serde_json::Value;

const SECRET: &str = "galley-planted-s3-secret-41c7d2";

/// An onprem blueprint whose state lives in bucket `bucket` at `endpoint`.
fn project(endpoint: &str, bucket: &str) -> Project {
    let text = format!(
        "apiVersion: galley/v1\nname: s3-state\nplatform: onprem\nbackend:\n  type: s3\n  bucket: {bucket}\n  key: galley/s3-state/state.json\n  endpoint_url: {endpoint}\ndata:\n  source: builtin:winequality\n  target: quality\n  positive_when: {{at_least: 6}}\nplatforms:\n  onprem:\n    dir: shared\n    mlflow_tracking_uri: http://127.0.0.1:9\nstages:\n  artifacts:\n    bucket: wine-artifacts\n"
    );
    let mut p = Project::with_text("blueprint.yaml", &text);
    for (k, v) in [("AWS_ACCESS_KEY_ID", "galley-test"), ("AWS_SECRET_ACCESS_KEY", SECRET), ("AWS_REGION", "us-east-1")] {
        p.env.push((k.into(), v.into()));
    }
    p
}

/// curl, signing as S3 wants (SigV4 with the test's keys): a client that is not Galley's.
fn curl() -> std::process::Command {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &format!("galley-test:{SECRET}")]);
    c
}

/// `GET /{bucket}/{key}` on the store: status and body.
fn object(url: &str, bucket: &str, key: &str) -> (u16, String) {
    let out = curl().args(["-w", "\n%{http_code}", &format!("{url}/{bucket}/{key}")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn put(url: &str, bucket: &str, key: &str, body: &str) {
    let out = curl().args(["-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "content-type: application/json", "--data-binary", body, &format!("{url}/{bucket}/{key}")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "moto refused PUT {bucket}/{key}");
}

fn delete(url: &str, bucket: &str, key: &str) {
    curl().args(["-X", "DELETE", &format!("{url}/{bucket}/{key}")]).output().unwrap();
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn state(url: &str, bucket: &str) -> Value {
    let (code, body) = object(url, bucket, "galley/s3-state/state.json");
    assert_eq!(code, 200, "no state object in the store: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("the state object is not JSON ({e}): {body}"))
}

#[test]
fn onprem_keeps_its_state_in_an_s3_compatible_store() {
    let Some(url) = substrate::moto_url() else { return };
    let bucket = format!("galley-state-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let p = project(&url, &bucket);

    ok(&p.galley(&["validate"]));
    let init = p.galley(&["init"]);
    assert!(text(&init).contains("created the state bucket"), "{}", text(&init));
    let (code, versioning) = object(&url, &bucket, "?versioning");
    assert_eq!(code, 200, "{versioning}");
    assert!(versioning.contains("<Status>Enabled</Status>"), "the state bucket is not versioned: {versioning}");

    ok(&p.galley(&["apply", "--auto-approve"]));
    let after_apply = state(&url, &bucket);
    assert!(after_apply["resources"].get("artifacts.store").is_some(), "the store's state lacks the artifact store: {after_apply}");
    assert!(!p.path().join(".galley/state.json").exists(), "a local state file was written beside the S3 one");
    let (lock, _) = object(&url, &bucket, "galley/s3-state/state.json.lock");
    assert_eq!(lock, 404, "apply left its lock in the store");

    // A lock another galley holds, as it would write it: a destroy stops, names it, and changes
    // nothing.
    let holder = serde_json::json!({ "id": "held-by-test", "owner": "ci@elsewhere", "pid": 1, "host": "elsewhere", "created": "2026-12-08T00:00:00Z", "operation": "apply" });
    put(&url, &bucket, "galley/s3-state/state.json.lock", &holder.to_string());
    let blocked = p.galley(&["destroy", "--auto-approve"]);
    assert!(!blocked.status.success(), "destroy ran under another galley's lock: {}", text(&blocked));
    assert!(text(&blocked).contains("ci@elsewhere"), "the lock error does not name its holder: {}", text(&blocked));
    assert_eq!(state(&url, &bucket), after_apply, "a destroy under another's lock changed the state");
    delete(&url, &bucket, "galley/s3-state/state.json.lock");

    ok(&p.galley(&["destroy", "--auto-approve"]));
    let after_destroy = state(&url, &bucket);
    assert_eq!(after_destroy["resources"].as_object().map(|r| r.len()), Some(0), "destroy left resources in the state: {after_destroy}");
    for doc in [&after_apply, &after_destroy] {
        assert!(!doc.to_string().contains(SECRET), "the secret key reached the state");
    }
}

#[test]
fn a_store_that_is_down_fails_naming_it_and_writes_nothing() {
    let Some(_) = substrate::moto_url() else { return };
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}");
    let p = project(&down, "galley-state-down");
    let out = p.galley(&["apply", "--auto-approve"]);
    assert!(!out.status.success(), "apply succeeded against a store that is down");
    let said = text(&out);
    assert!(said.contains(&format!("127.0.0.1:{port}")), "the error does not name the store: {said}");
    assert!(!said.contains(SECRET), "the secret key was printed: {said}");
    assert!(!p.path().join(".galley/state.json").exists(), "a local state file was written instead");
    assert!(!p.path().join("shared").exists(), "something was applied without state to record it");
}
