//! The model server over real HTTP on loopback, started as the real `galley-local-endpoint`
//! binary by `LocalServing`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use galley_core::stages::{EndpointState, Serving};
use galley_core::table::{Column, DType, Table, Value};
use galley_local::serving::{EndpointSettings, ServerConfig, ServingOptions, VariantConfig};
use serde_json::{Value as Json, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(url: &str, body: &str) -> (u16, Json, Option<String>) {
    post_typed(url, body, "application/json").await
}

async fn post_typed(url: &str, body: &str, content_type: &str) -> (u16, Json, Option<String>) {
    let r = client()
        .post(format!("{url}/invocations"))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let variant = r
        .headers()
        .get("x-galley-variant")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
        variant,
    )
}

const GOOD: &str = r#"{"dataframe_split": {"columns": ["x1","x2","n"], "data": [[1.0, 2.0, 3]]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scoring_format_gives_the_same_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let model = write_model(tmp.path(), "v1", 0.5, [1.0, -2.0, 0.25]);
    let serving = serving(tmp.path());
    let info = serving
        .deploy(&spec("formats", vec![variant("v1", &model, 100)]))
        .await
        .unwrap();
    assert_eq!(info.state, EndpointState::InService);
    let url = serving.endpoint_url("formats").unwrap();
    assert_eq!(url, info.url);

    // 0.5 + x1 - 2 x2 + 0.25 n for (1, 2, 4) and (-3, 0.5, 0).
    let want = json!([0.5 + 1.0 - 4.0 + 1.0, 0.5 - 3.0 - 1.0]);
    for body in [
        r#"{"dataframe_split": {"columns": ["x1","x2","n"], "data": [[1, 2, 4], [-3, 0.5, 0]]}}"#,
        r#"{"dataframe_split": {"index": [7, 8], "columns": ["n","x2","x1"], "data": [[4, 2, 1], [0, 0.5, -3]]}}"#,
        r#"{"dataframe_records": [{"x1": 1, "x2": 2, "n": 4}, {"n": 0, "x1": -3, "x2": 0.5}]}"#,
        r#"{"instances": [{"x1": 1, "x2": 2, "n": 4}, {"x1": -3, "x2": 0.5, "n": 0}]}"#,
        r#"{"instances": [[1, 2, 4], [-3, 0.5, 0]]}"#,
        r#"{"inputs": [[1, 2, 4], [-3, 0.5, 0]]}"#,
        r#"{"inputs": [{"x1": 1, "x2": 2, "n": 4}, {"x1": -3, "x2": 0.5, "n": 0}]}"#,
        r#"{"inputs": {"x1": [1, -3], "x2": [2, 0.5], "n": [4, 0]}, "params": {}}"#,
    ] {
        let (status, answer, variant) = post(&url, body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer, json!({"predictions": want}), "{body}");
        assert_eq!(variant.as_deref(), Some("v1"));
    }

    // The Serving trait's own client speaks dataframe_split.
    let mut rows = Table::new(vec![
        Column::new("x1", DType::Float),
        Column::new("x2", DType::Float),
        Column::new("n", DType::Int),
    ]);
    rows.push(vec![Value::Float(1.0), Value::Float(2.0), Value::Int(4)])
        .unwrap();
    let p = serving.invoke("formats", &rows).await.unwrap();
    assert_eq!(p.predictions, vec![want[0].as_f64().unwrap()]);
    assert_eq!(p.variant, "v1");

    for path in ["/health", "/ping", "/version", "/metrics"] {
        let r = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let version: Json = client()
        .get(format!("{url}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["variants"][0]["name"], "v1");
    let metrics = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"galley_requests_total{endpoint="formats",variant="v1",code="200"} 9"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("galley_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"galley_model_info{endpoint="formats",variant="v1",model="wine",version="1",weight="100"} 1"#), "{metrics}");
    assert!(metrics.contains("galley_requests_in_flight"), "{metrics}");

    serving.undeploy("formats").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_named_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let model = write_model(tmp.path(), "v1", 0.0, [1.0, 1.0, 1.0]);
    let serving = serving(tmp.path()).with_options(ServingOptions {
        max_body_bytes: 4096,
        ..ServingOptions::default()
    });
    serving
        .deploy(&spec("errors", vec![variant("v1", &model, 100)]))
        .await
        .unwrap();
    let url = serving.endpoint_url("errors").unwrap();

    let huge = format!(
        r#"{{"instances": [{}]}}"#,
        vec!["[1, 2, 3]"; 1000].join(",")
    );
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "missing",
            r#"{"dataframe_records": [{"x1": 1, "x2": 2}]}"#.into(),
            "application/json",
            400,
            "missing feature `n`",
        ),
        (
            "extra",
            r#"{"dataframe_records": [{"x1": 1, "x2": 2, "n": 1, "bogus": 3}]}"#.into(),
            "application/json",
            400,
            "unexpected feature `bogus`",
        ),
        (
            "wrong type",
            r#"{"instances": [{"x1": "high", "x2": 2, "n": 1}]}"#.into(),
            "application/json",
            400,
            "feature `x1` expects float",
        ),
        (
            "fractional int",
            r#"{"instances": [[1, 2, 1.5]]}"#.into(),
            "application/json",
            400,
            "feature `n` expects int",
        ),
        (
            "short row",
            r#"{"instances": [[1, 2]]}"#.into(),
            "application/json",
            400,
            "expects 3 features",
        ),
        (
            "malformed",
            r#"{"instances": [[1, 2"#.into(),
            "application/json",
            400,
            "Failed to parse input from JSON",
        ),
        (
            "not an object",
            "[1, 2, 3]".into(),
            "application/json",
            400,
            "Failed to parse input from JSON",
        ),
        (
            "unknown key",
            r#"{"rows": [[1, 2, 3]]}"#.into(),
            "application/json",
            400,
            "dataframe_split, dataframe_records, instances, inputs",
        ),
        (
            "two keys",
            r#"{"instances": [[1,2,3]], "inputs": [[1,2,3]]}"#.into(),
            "application/json",
            400,
            "exactly one",
        ),
        (
            "too large",
            huge,
            "application/json",
            413,
            "larger than the limit of 4096 bytes",
        ),
        (
            "plain text",
            "x1,x2,n\n1,2,3\n".into(),
            "text/plain",
            415,
            "text/csv",
        ),
        ("no type", GOOD.into(), "", 415, "application/json"),
    ];
    for (what, body, content_type, status, needle) in &cases {
        let (got, answer, _) = post_typed(&url, body, content_type).await;
        assert_eq!(got, *status, "{what}: {answer}");
        let message = answer["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no message in {answer}"));
        assert!(
            message.contains(needle),
            "{what}: `{message}` does not mention `{needle}`"
        );
        let code = answer["error_code"].as_str().unwrap();
        if *status == 400 {
            assert_eq!(code, "BAD_REQUEST", "{what}");
        }
        // The server is still there and still right.
        let (ok, answer, _) = post(&url, GOOD).await;
        assert_eq!(
            (ok, answer),
            (200, json!({"predictions": [6.0]})),
            "after {what}"
        );
    }
    let r = client().get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client()
        .get(format!("{url}/invocations"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    let metrics = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"variant="none",code="400"} 9"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"variant="none",code="413"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"variant="none",code="415"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(r#"variant="v1",code="200"}} {}"#, cases.len())),
        "{metrics}"
    );
    // `text/csv`, as MLflow's scoring server and SageMaker's CSV serializer send it: with
    // pandas' header (any column order) or without (the signature's order), the same answer.
    for (what, body) in [("with a header", "n,x2,x1\n3,2,1\n"), ("headerless", "1,2,3\n")] {
        let (got, answer, _) = post_typed(&url, body, "text/csv").await;
        assert_eq!((got, answer), (200, json!({"predictions": [6.0]})), "CSV {what}");
    }
    let (got, answer, _) = post_typed(&url, "1,2\n", "text/csv").await;
    assert_eq!(got, 400, "a short CSV row: {answer}");
    serving.undeploy("errors").await.unwrap();
}

async fn split_of(url: &str, n: usize) -> (usize, usize) {
    let (mut a, mut b) = (0, 0);
    for _ in 0..n {
        let (status, _, variant) = post(url, GOOD).await;
        assert_eq!(status, 200);
        match variant.as_deref() {
            Some("v1") => a += 1,
            Some("v2") => b += 1,
            other => panic!("unexpected variant {other:?}"),
        }
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_is_exact_and_traffic_shifts() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let m1 = write_model(tmp.path(), "v1", 1.0, [0.0, 0.0, 0.0]);
    let m2 = write_model(tmp.path(), "v2", 2.0, [0.0, 0.0, 0.0]);
    let serving = serving(tmp.path());
    serving
        .deploy(&spec(
            "canary",
            vec![variant("v1", &m1, 90), variant("v2", &m2, 10)],
        ))
        .await
        .unwrap();
    let url = serving.endpoint_url("canary").unwrap();
    assert_eq!(split_of(&url, 1000).await, (900, 100));

    let info = serving
        .shift_traffic("canary", &[("v1".into(), 50), ("v2".into(), 50)])
        .await
        .unwrap();
    assert_eq!(
        info.variants.iter().map(|v| v.weight).collect::<Vec<_>>(),
        vec![50, 50]
    );
    assert_eq!(
        serving.endpoint_url("canary").unwrap(),
        url,
        "a shift keeps the same server"
    );
    assert_eq!(split_of(&url, 100).await, (50, 50));

    serving
        .shift_traffic("canary", &[("v2".into(), 100)])
        .await
        .unwrap();
    assert_eq!(split_of(&url, 20).await, (0, 20));
    let (_, answer, _) = post(&url, GOOD).await;
    assert_eq!(answer, json!({"predictions": [2.0]}), "v2's model answers");

    let e = serving
        .shift_traffic("canary", &[("v9".into(), 100)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no variant `v9`"), "{e}");
    let e = serving
        .shift_traffic("canary", &[("v1".into(), 60)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("add up to 60"), "{e}");
    assert_eq!(
        split_of(&url, 10).await,
        (0, 10),
        "a refused shift changes nothing"
    );
    serving.undeploy("canary").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_during_traffic_fails_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let m1 = write_model(tmp.path(), "v1", 1.0, [0.0, 0.0, 0.0]);
    let m2 = write_model(tmp.path(), "v2", 2.0, [0.0, 0.0, 0.0]);
    let serving = serving(tmp.path());
    serving
        .deploy(&spec("swap", vec![variant("v1", &m1, 100)]))
        .await
        .unwrap();
    let url = serving.endpoint_url("swap").unwrap();
    let pid = state_pid(tmp.path(), "swap");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            // Bounded: stops when the swaps are done, or after 20,000 requests at most.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r = client
                    .post(format!("{url}/invocations"))
                    .header("content-type", "application/json")
                    .body(GOOD)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let body: Json = r.json().await.unwrap();
                        let p = body["predictions"][0].as_f64().unwrap();
                        assert!(p == 1.0 || p == 2.0, "{body}");
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("{}", r.status())),
                    Err(e) => failed.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    for i in 0..20 {
        let (name, model) = if i % 2 == 0 { ("v2", &m2) } else { ("v1", &m1) };
        serving
            .deploy(&spec("swap", vec![variant(name, model, 100)]))
            .await
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let served = ok.load(Ordering::SeqCst);
    eprintln!("hot swap: {served} requests served across 20 swaps");
    assert!(served > 0);
    assert_eq!(
        state_pid(tmp.path(), "swap"),
        pid,
        "swaps never restart the server"
    );
    // The last deploy (i = 19) serves v1.
    let (_, answer, variant) = post(&url, GOOD).await;
    assert_eq!(
        (answer, variant.as_deref()),
        (json!({"predictions": [1.0]}), Some("v1"))
    );
    let version: Json = client()
        .get(format!("{url}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["generation"], 21);
    serving.undeploy("swap").await.unwrap();
}

use std::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_deploy_keeps_the_old_model_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let m1 = write_model(tmp.path(), "v1", 1.0, [0.0, 0.0, 0.0]);
    let broken = tmp.path().join("broken.model.json");
    std::fs::write(&broken, b"{\"format\": \"something else\"}").unwrap();
    let serving = serving(tmp.path());
    serving
        .deploy(&spec("keep", vec![variant("v1", &m1, 100)]))
        .await
        .unwrap();
    let url = serving.endpoint_url("keep").unwrap();
    let e = serving
        .deploy(&spec("keep", vec![variant("v2", &broken, 100)]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a Galley model"), "{e}");
    let (status, answer, answered_by) = post(&url, GOOD).await;
    assert_eq!(
        (status, answer, answered_by.as_deref()),
        (200, json!({"predictions": [1.0]}), Some("v1"))
    );
    let missing = tmp.path().join("nope.json");
    let e = serving
        .deploy(&spec("keep", vec![variant("v3", &missing, 100)]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    serving.undeploy("keep").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_leaves_no_process_and_resume_restarts_a_dead_server() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let m1 = write_model(tmp.path(), "v1", 1.0, [0.0, 0.0, 0.0]);
    let serving = serving(tmp.path());
    serving
        .configure("life", &EndpointSettings::default())
        .unwrap();
    serving
        .deploy(&spec("life", vec![variant("v1", &m1, 100)]))
        .await
        .unwrap();
    let pid = state_pid(tmp.path(), "life");
    assert!(pid_alive(pid));

    // A crashed server shows as Failed and comes back with resume.
    // SAFETY: SIGKILL to the server this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    for _ in 0..200 {
        if !pid_alive(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let info = serving.describe("life").await.unwrap().unwrap();
    assert_eq!(info.state, EndpointState::Failed);
    assert!(serving.endpoint_url("life").is_none());
    let info = serving.resume("life").await.unwrap().unwrap();
    assert_eq!(info.state, EndpointState::InService);
    let pid = state_pid(tmp.path(), "life");
    assert!(pid_alive(pid));
    assert_eq!(
        serving.describe("life").await.unwrap().unwrap().state,
        EndpointState::InService
    );

    serving.undeploy("life").await.unwrap();
    assert!(
        !pid_alive(pid),
        "server pid {pid} still running after undeploy"
    );
    assert!(!tmp.path().join("endpoints/life/state.json").exists());
    assert!(serving.describe("life").await.unwrap().is_none());
    assert!(serving.endpoint_url("life").is_none());
    serving.undeploy("life").await.unwrap();
    let rows = galley_core::Table::new(signature().inputs);
    let e = serving.invoke("life", &rows).await.unwrap_err();
    assert_eq!(e.kind(), galley_core::ErrorKind::NotFound, "{e}");
    serving.undeploy("never-deployed").await.unwrap();
    assert!(serving.resume("never-deployed").await.unwrap().is_none());
}

#[test]
fn non_loopback_without_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let serving = serving(tmp.path());
    let open = EndpointSettings {
        bind: "0.0.0.0".parse().unwrap(),
        port: 0,
        token_env: None,
    };
    let e = serving.configure("open", &open).unwrap_err();
    assert!(e.to_string().contains("without authentication"), "{e}");

    let mut config = ServerConfig {
        endpoint: "open".into(),
        bind: "0.0.0.0".parse().unwrap(),
        port: 0,
        token_env: None,
        token: None,
        max_body_bytes: 1024,
        variants: vec![VariantConfig {
            name: "v1".into(),
            model_path: "/m".into(),
            weight: 100,
            model: None,
            version: None,
        }],
        signature: signature(),
        monitor_dir: None,
        state_file: tmp.path().join("state.json"),
        platform_authenticated: false,
    };
    let e = config.validate().unwrap_err();
    assert!(
        e.to_string().contains("refusing to serve") && e.to_string().contains("token_env"),
        "{e}"
    );
    config.token = Some("secret".into());
    config.validate().unwrap();
    config.bind = "127.0.0.1".parse().unwrap();
    config.token = None;
    config.validate().unwrap();

    // The config file never carries the token itself.
    config.token_env = Some("SOME_VAR".into());
    config.token = Some("do-not-write-me".into());
    let path = tmp.path().join("config.json");
    config.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("do-not-write-me") && text.contains("SOME_VAR"),
        "{text}"
    );
    let e = ServerConfig::load(&path).unwrap_err();
    assert!(e.to_string().contains("`SOME_VAR` is unset"), "{e}");
}
