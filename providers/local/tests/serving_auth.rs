//! Bearer-token authentication, in its own test binary because it sets an environment
//! variable (the token's only home) before any other thread runs.

mod common;

use common::*;
use galley_core::stages::Serving;
use galley_local::serving::EndpointSettings;

const TOKEN_ENV: &str = "GALLEY_LOCAL_TEST_ENDPOINT_TOKEN";
const TOKEN: &str = "s3cr3t-t0ken";

#[test]
fn token_is_required_on_every_route_but_health() {
    // SAFETY: set before the runtime or any other thread of this binary starts.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let model = write_model(tmp.path(), "v1", 1.0, [0.0, 0.0, 0.0]);
    let serving = serving(tmp.path());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = r#"{"instances": [[1, 2, 3]]}"#;

    // First open (loopback, no token) ...
    serving
        .configure("auth", &EndpointSettings::default())
        .unwrap();
    serving
        .deploy(&spec("auth", vec![variant("v1", &model, 100)]))
        .await
        .unwrap();
    let open_pid = state_pid(tmp.path(), "auth");
    let url = serving.endpoint_url("auth").unwrap();
    let r = client
        .post(format!("{url}/invocations"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // ... then a token is configured: resuming restarts the server, which now demands it.
    let settings = EndpointSettings {
        bind: "127.0.0.1".parse().unwrap(),
        port: 0,
        token_env: Some(TOKEN_ENV.into()),
    };
    serving.configure("auth", &settings).unwrap();
    serving.resume("auth").await.unwrap().unwrap();
    assert_ne!(
        state_pid(tmp.path(), "auth"),
        open_pid,
        "a token change restarts the server"
    );
    assert!(!pid_alive(open_pid), "the old server is gone");
    let url = serving.endpoint_url("auth").unwrap();

    let r = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "health needs no token");
    for (path, post) in [
        ("/invocations", true),
        ("/metrics", false),
        ("/version", false),
        ("/ping", false),
        ("/admin/reload", true),
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cr3t-t0ken"),
            Some("Bearer s3cr3t-t0ken-and-more"),
        ] {
            let mut req = if post {
                client.post(format!("{url}{path}"))
            } else {
                client.get(format!("{url}{path}"))
            };
            req = req.header("content-type", "application/json").body(body);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} with {auth:?}");
            let answer: serde_json::Value = r.json().await.unwrap();
            assert_eq!(answer["error_code"], "UNAUTHENTICATED");
        }
        let r = if post {
            client.post(format!("{url}{path}"))
        } else {
            client.get(format!("{url}{path}"))
        }
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }

    // LocalServing's own client and reload path send the token.
    let mut rows = galley_core::Table::new(signature().inputs);
    rows.push(vec![1.0.into(), 2.0.into(), 3i64.into()])
        .unwrap();
    assert_eq!(
        serving.invoke("auth", &rows).await.unwrap().predictions,
        vec![1.0]
    );
    serving
        .shift_traffic("auth", &[("v1".into(), 100)])
        .await
        .unwrap();

    // The token is written nowhere under the endpoint's directory.
    for entry in std::fs::read_dir(tmp.path().join("endpoints/auth")).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&text).contains(TOKEN));
    }
    serving.undeploy("auth").await.unwrap();
}
