//! Where the onprem tests find their servers, started by `scripts/stack up onprem` (which
//! `scripts/test` and `.ci/run` call): MLflow at `MLFLOW_TRACKING_URI`; Feast's repository,
//! Python and feature server at `GALLEY_FEAST_REPO`, `GALLEY_FEAST_PYTHON` and
//! `FEAST_FEATURE_SERVER_URL`; Airflow at `AIRFLOW_API_URL` with its DAGs folder in
//! `AIRFLOW__CORE__DAGS_FOLDER` and its user in `AIRFLOW_USERNAME` / `AIRFLOW_PASSWORD`.
//!
//! A test that needs MLflow and finds no URI fails, saying how to start it. Opting out is
//! explicit — `GALLEY_TEST_SKIP=onprem` — and each test skipped so is appended to
//! `GALLEY_TEST_SKIP_LOG`, which `scripts/test` prints at the end of the run.
#![allow(dead_code)]

/// The MLflow tracking URI, or `None` when the run opted out of the onprem servers.
pub fn mlflow_uri() -> Option<String> {
    if let Ok(url) = std::env::var("MLFLOW_TRACKING_URI")
        && url.starts_with("http")
    {
        return Some(url.trim().trim_end_matches('/').to_owned());
    }
    missing("MLFLOW_TRACKING_URI is not an http URL")
}

/// The stack's MLflow running the basic-auth app: its URI and its admin's password (from the
/// file the stack wrote, never from the environment).
pub fn mlflow_auth() -> Option<(String, String)> {
    let uri = std::env::var("GALLEY_TEST_MLFLOW_AUTH_URI").ok().filter(|u| u.starts_with("http"));
    let file = std::env::var("GALLEY_TEST_MLFLOW_AUTH_PASSWORD_FILE").ok();
    match (uri, file.and_then(|f| std::fs::read_to_string(f).ok())) {
        (Some(uri), Some(password)) => Some((uri, password.trim().to_owned())),
        _ => missing("GALLEY_TEST_MLFLOW_AUTH_URI or GALLEY_TEST_MLFLOW_AUTH_PASSWORD_FILE is unset"),
    }
}

/// The stack's Feast, or `None` when the run opted out of the onprem servers.
pub fn feast() -> Option<galley_onprem::feast::FeastConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("GALLEY_FEAST_REPO"), var("GALLEY_FEAST_PYTHON"), var("FEAST_FEATURE_SERVER_URL")) {
        (Some(repo), Some(python), Some(url)) => {
            Some(galley_onprem::feast::FeastConfig { repo: repo.into(), python: python.into(), server_url: Some(url) })
        }
        _ => missing("GALLEY_FEAST_REPO, GALLEY_FEAST_PYTHON or FEAST_FEATURE_SERVER_URL is unset"),
    }
}

/// The stack's Airflow: its api-server and DAGs folder (the credentials are read from
/// `AIRFLOW_USERNAME` / `AIRFLOW_PASSWORD` by whoever signs in).
pub fn airflow() -> Option<galley_onprem::airflow::AirflowConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("AIRFLOW_API_URL"), var("AIRFLOW__CORE__DAGS_FOLDER"), var("AIRFLOW_PASSWORD")) {
        (Some(api_url), Some(dags), Some(_)) => Some(galley_onprem::airflow::AirflowConfig {
            api_url,
            dags_folder: dags.into(),
            galley: "galley".into(),
            parse_timeout: std::time::Duration::from_secs(120),
            prometheus_url: None,
        }),
        _ => missing("AIRFLOW_API_URL, AIRFLOW__CORE__DAGS_FOLDER or AIRFLOW_PASSWORD is unset"),
    }
}

fn missing<T>(what: &str) -> Option<T> {
    let test = std::thread::current().name().unwrap_or("an onprem test").to_owned();
    let opted_out = std::env::var("GALLEY_TEST_SKIP").is_ok_and(|s| s.split(',').any(|p| p.trim() == "onprem"));
    if !opted_out {
        panic!(
            "{test} needs the onprem servers (real MLflow, Feast and Airflow servers) and {what}.\n\
             Start them with `eval \"$(scripts/stack up onprem)\"` (stop them with `scripts/stack down onprem`), or run \
             everything with `scripts/test`. To skip the onprem tests on purpose, set GALLEY_TEST_SKIP=onprem."
        );
    }
    println!("SKIPPED (GALLEY_TEST_SKIP=onprem): {test}");
    if let Ok(log) = std::env::var("GALLEY_TEST_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "onprem: {test}");
        }
    }
    None
}
