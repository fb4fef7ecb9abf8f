//! The model server's Open Inference Protocol (KServe V2) route over real HTTP: every request
//! the tests send and every answer the server gives is validated against the protocol's own
//! OpenAPI document (`shared/api-specs/kserve/rest_predict_v2.yaml`, beside the repository),
//! and the answers are the ones `/invocations` gives for the same rows.

mod common;

use common::*;
use galley_core::stages::Serving;
use galley_local::serving::ServingOptions;
use serde_json::{Value as Json, json};

/// The protocol's schemas, from KServe's OpenAPI document.
struct Protocol {
    components: Json,
}

impl Protocol {
    fn load() -> Protocol {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/api-specs/kserve/rest_predict_v2.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("KServe's V2 OpenAPI document is missing ({e}): expected {} beside the repository", path.display()));
        // Galley's own YAML reader (the blueprint's), as JSON.
        let doc = galley_blueprint::parse::parse(&text).unwrap_or_else(|d| panic!("{}: {}", path.display(), d.message)).to_json();
        Protocol { components: doc["components"].clone() }
    }

    /// The schema violations of `value` against `#/components/schemas/{name}`.
    fn violations(&self, name: &str, value: &Json) -> Vec<String> {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}"), "components": self.components });
        let validator = jsonschema::validator_for(&schema).unwrap();
        validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect()
    }

    fn check(&self, name: &str, value: &Json) {
        let v = self.violations(name, value);
        assert!(v.is_empty(), "not a valid {name}: {v:?}\n{value}");
    }
}


async fn call(method: &str, url: &str, body: Option<&Json>) -> (u16, Json) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = match body {
        Some(b) => c.request(method.parse().unwrap(), url).json(b),
        None => c.request(method.parse().unwrap(), url),
    };
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_route_speaks_the_open_inference_protocol() {
    let oip = Protocol::load();
    let tmp = tempfile::tempdir().unwrap();
    let _stop = StopServersOnDrop(tmp.path().to_owned());
    let m1 = write_model(tmp.path(), "v1", 0.5, [1.0, -2.0, 0.25]);
    let m2 = write_model(tmp.path(), "v2", -1.0, [0.5, 0.5, 1.0]);
    let serving = serving(tmp.path());
    serving.deploy(&spec("oip", vec![variant("v1", &m1, 90), variant("v2", &m2, 10)])).await.unwrap();
    let url = serving.endpoint_url("oip").unwrap();

    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/oip/ready", "/v2/models/oip/versions/2/ready"] {
        assert_eq!(call("GET", &format!("{url}{path}"), None).await.0, 200, "{path}");
    }
    let (status, server) = call("GET", &format!("{url}/v2"), None).await;
    assert_eq!(status, 200);
    oip.check("metadata_server_response", &server);
    let (_, meta) = call("GET", &format!("{url}/v2/models/oip"), None).await;
    oip.check("metadata_model_response", &meta);
    let inputs: Vec<&str> = meta["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["x1", "x2", "n"], "{meta}");
    assert_eq!(meta["versions"], json!(["1", "2"]), "{meta}");

    // The same two rows in both layouts the route takes, to each version directly.
    let matrix = json!({ "id": "r-1", "inputs": [{ "name": "rows", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 4], [-3, 0.5, 0]] }] });
    let per_feature = json!({ "inputs": [
        { "name": "n", "shape": [2], "datatype": "INT64", "data": [4, 0] },
        { "name": "x1", "shape": [2, 1], "datatype": "FP64", "data": [1, -3] },
        { "name": "x2", "shape": [2], "datatype": "FP32", "data": [2, 0.5] },
    ], "outputs": [{ "name": "predict" }] });
    let rows = r#"{"dataframe_split": {"columns": ["x1","x2","n"], "data": [[1, 2, 4], [-3, 0.5, 0]]}}"#;
    for (version, model) in [("1", (0.5, [1.0, -2.0, 0.25])), ("2", (-1.0, [0.5, 0.5, 1.0]))] {
        let want: Vec<f64> = [[1.0, 2.0, 4.0], [-3.0, 0.5, 0.0]].iter().map(|r| model.0 + r.iter().zip(model.1).map(|(x, c)| x * c).sum::<f64>()).collect();
        for request in [&matrix, &per_feature] {
            oip.check("inference_request", request);
            let (status, answer) = call("POST", &format!("{url}/v2/models/oip/versions/{version}/infer"), Some(request)).await;
            assert_eq!(status, 200, "{answer}");
            oip.check("inference_response", &answer);
            assert_eq!(answer["model_version"], version);
            assert_eq!(answer["outputs"][0]["name"], "predict");
            assert_eq!(answer["outputs"][0]["shape"], json!([2, 1]));
            assert_eq!(answer["outputs"][0]["data"], json!(want), "version {version}: {answer}");
        }
        assert_eq!(call("POST", &format!("{url}/v2/models/oip/versions/{version}/infer"), Some(&matrix)).await.1["id"], "r-1");
    }
    // Unversioned: the traffic split, as /invocations (90/10 over ten requests: 9 and 1).
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..10 {
        let (_, a) = call("POST", &format!("{url}/v2/models/oip/infer"), Some(&matrix)).await;
        *served.entry(a["model_version"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(served, [("1".to_owned(), 9), ("2".to_owned(), 1)].into(), "{served:?}");
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let invoked: Json = c.post(format!("{url}/invocations")).header("content-type", "application/json").body(rows).send().await.unwrap().json().await.unwrap();
    assert_eq!(invoked["predictions"].as_array().unwrap().len(), 2);

    // Refusals in the protocol's error shape, naming what is wrong.
    let bad = [
        ("/v2/models/other/infer", matrix.clone(), 404, "this server serves `oip`"),
        ("/v2/models/oip/versions/7/infer", matrix.clone(), 404, "no version `7`"),
        ("/v2/models/oip/infer", json!({ "inputs": [{ "name": "x9", "shape": [1], "datatype": "FP64", "data": [1] }] }), 400, "not a feature"),
        ("/v2/models/oip/infer", json!({ "inputs": [{ "name": "rows", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3] }] }), 400, "6 elements"),
        ("/v2/models/oip/infer", json!({ "inputs": [{ "name": "rows", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"] }] }), 400, "datatype BYTES"),
        ("/v2/models/oip/infer", json!({ "inputs": matrix["inputs"], "outputs": [{ "name": "probability" }] }), 400, "no output `probability`"),
    ];
    for (path, body, want_status, says) in bad {
        let (status, answer) = call("POST", &format!("{url}{path}"), Some(&body)).await;
        assert_eq!(status, want_status, "{path}: {answer}");
        oip.check("inference_error_response", &answer);
        assert!(answer["error"].as_str().unwrap().contains(says), "{path}: {answer}");
    }
    // Bodies are bounded by the endpoint's limit (10 MB by default), as on /invocations, not
    // by axum's 2 MB default: a 3 MB request is answered.
    let n = 250_000;
    let big = json!({ "inputs": [{ "name": "rows", "shape": [n, 3], "datatype": "FP64", "data": vec![[1.125, 2.25, 4.0625]; n] }] });
    assert!(big.to_string().len() > 3 << 20, "the request is not over 3 MB");
    let (status, answer) = call("POST", &format!("{url}/v2/models/oip/versions/1/infer"), Some(&big)).await;
    assert_eq!(status, 200, "{}", answer.to_string().chars().take(300).collect::<String>());
    assert_eq!(answer["outputs"][0]["shape"], json!([n, 1]));
    // Over the limit: on an endpoint with a 4 KB limit, so the refused body still fits the
    // socket's buffers (an 11 MB one races the server's early answer into a broken pipe).
    let small = common::serving(tmp.path()).with_options(ServingOptions { max_body_bytes: 4096, ..ServingOptions::default() });
    small.deploy(&spec("oip-small", vec![variant("v1", &m1, 100)])).await.unwrap();
    let small_url = small.endpoint_url("oip-small").unwrap();
    let over = json!({ "inputs": [{ "name": "rows", "shape": [1000, 3], "datatype": "FP64", "data": vec![[1, 2, 3]; 1000] }] });
    assert!(over.to_string().len() > 4096);
    let (status, answer) = call("POST", &format!("{small_url}/v2/models/oip-small/infer"), Some(&over)).await;
    assert_eq!(status, 413, "{answer}");
    oip.check("inference_error_response", &answer);
    assert!(answer["error"].as_str().unwrap().contains("larger than the limit of 4096 bytes"), "{answer}");
    small.undeploy("oip-small").await.unwrap();
    // The schema check has teeth: an answer without its outputs is not a valid response.
    assert!(!oip.violations("inference_response", &json!({ "model_name": "oip" })).is_empty());
    serving.undeploy("oip").await.unwrap();
}
