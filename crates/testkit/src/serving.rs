//! The [`Serving`] contract: an endpoint comes into service with the variants asked, answers
//! with the predictions its model makes, splits traffic by weights that add up to 100, and is
//! removed idempotently.
//!
//! Serving needs a real model, which only the platform can put where its server reads it, so
//! the platform supplies a [`ServingFixture`]: an endpoint spec whose artifacts are uploaded,
//! sample rows, and the predictions computed independently (e.g. by `galley_ml` on the same
//! model file). The suite checks the endpoint returns those.

use std::sync::Arc;
use std::time::Duration;

use galley_core::capability::Feature;
use galley_core::stages::{EndpointInfo, EndpointSpec, EndpointState, Scaling, Serving, Variant};
use galley_core::{ErrorKind, Table};

use crate::runner::{Case, Report, Skip, TestResult, run_cases};
use crate::support::{expect_kind, expect_kind_in, unique, wait_for};
use crate::{case, ensure_eq};

/// Managed endpoints take minutes to come into service.
const DEPLOY_LIMIT: Duration = Duration::from_secs(840);

/// Turns bearer authentication on for an endpoint name before it is deployed (platforms
/// configure it outside `EndpointSpec`) and returns the token its clients must send.
#[derive(Clone)]
pub struct RequireToken(pub Arc<TokenFor>);

/// Endpoint name → the bearer token now required for it.
pub type TokenFor = dyn Fn(&str) -> anyhow::Result<String> + Send + Sync;

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireToken(..)")
    }
}

/// What the platform supplies so the suite can deploy and check a real model.
#[derive(Debug, Clone)]
pub struct ServingFixture {
    /// An endpoint spec whose variants' `artifact_uri`s are already uploaded. Its name is used
    /// as a prefix: each case deploys under a fresh unique name.
    pub spec: EndpointSpec,
    /// Sample inputs, with the columns of the spec's signature.
    pub rows: Table,
    /// The model's predictions for `rows`, computed without the platform's server.
    pub expected: Vec<f64>,
    /// Largest absolute difference accepted per prediction (floats cross text formats).
    pub tolerance: f64,
    /// For platforms with bearer authentication (the `BearerAuth` case).
    pub require_token: Option<RequireToken>,
    /// For platforms that serve ONNX (the `OnnxModels` case): [`StandardModel::onnx_bytes`]
    /// stored where the platform's server reads it.
    pub onnx: Option<OnnxFixture>,
}

/// An ONNX model of the same rows' signature, and what it must answer for them.
#[derive(Debug, Clone)]
pub struct OnnxFixture {
    pub artifact_uri: String,
    pub expected: Vec<f64>,
    /// The model computes in float32.
    pub tolerance: f64,
}

/// The model every platform's serving suite deploys: a linear regression galley-ml fits to 200
/// rows of `0.6·alcohol − 1.5·ph + 3` (plus a little noise), four sample rows, and the model's
/// own predictions for them, computed here without any server.
#[derive(Debug, Clone)]
pub struct StandardModel {
    /// The model file, to be stored where the platform's server reads it.
    pub bytes: Vec<u8>,
    pub signature: galley_core::stages::Signature,
    pub rows: Table,
    pub expected: Vec<f64>,
    /// The same relation as an ONNX model (`0.6·alcohol − 1.5·ph + 3`, MatMul + Add, written
    /// byte by byte), carrying Galley's signature: what the `OnnxModels` case serves.
    pub onnx_bytes: Vec<u8>,
    /// Its answers for `rows`, by arithmetic.
    pub onnx_expected: Vec<f64>,
}

impl StandardModel {
    pub fn new() -> StandardModel {
        use galley_core::table::{Column, Value};
        use galley_core::{DType, ml};
        let inputs = vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)];
        let signature = galley_core::stages::Signature { inputs: inputs.clone(), output: Some(Column::new("quality", DType::Float)) };
        let mut rng = fastrand::Rng::with_seed(9);
        let x: Vec<Vec<f64>> = (0..200).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
        let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0 + 0.05 * (rng.f64() - 0.5)).collect();
        let frame = galley_ml::Frame { features: vec!["alcohol".into(), "ph".into()], x, y };
        let model = galley_ml::train(ml::Algorithm::LinearRegression, &Default::default(), ml::Task::Regression, &frame, &signature)
            .expect("the standard model trains");
        let mut rows = Table::new(inputs);
        for (a, p) in [(9.5, 3.1), (12.25, 3.4), (13.0, 2.9), (10.0, 3.55)] {
            rows.push(vec![Value::Float(a), Value::Float(p)]).expect("rows fit the columns");
        }
        let expected = model.predict(&rows).expect("the model scores its own rows");
        let (w, b) = ([0.6f32, -1.5], 3.0f32);
        let onnx = crate::onnx_models::linear_regression(&w, b);
        let onnx_bytes = galley_ml::onnx::with_signature(&onnx, &signature, ml::Task::Regression).expect("a signature serialises");
        let onnx_expected = rows
            .rows
            .iter()
            .map(|r| {
                let (a, p) = (r[0].as_f64().expect("float"), r[1].as_f64().expect("float"));
                w[0] as f64 * a + w[1] as f64 * p + b as f64
            })
            .collect();
        StandardModel { bytes: model.to_bytes(), signature, rows, expected, onnx_bytes, onnx_expected }
    }

    /// [`fixture`](Self::fixture) plus the ONNX model stored at `onnx_uri`.
    /// Both model files written under `dir`, as a fixture of their `file://` URIs: for a
    /// platform whose model server reads this machine's files (local, onprem).
    pub fn files_fixture(&self, dir: &std::path::Path) -> ServingFixture {
        let (json, onnx) = (dir.join("model.json"), dir.join("model.onnx"));
        std::fs::write(&json, &self.bytes).expect("the fixture directory is writable");
        std::fs::write(&onnx, &self.onnx_bytes).expect("the fixture directory is writable");
        self.fixture_with_onnx(format!("file://{}", json.display()), format!("file://{}", onnx.display()))
    }

    pub fn fixture_with_onnx(&self, artifact_uri: String, onnx_uri: String) -> ServingFixture {
        ServingFixture {
            onnx: Some(OnnxFixture { artifact_uri: onnx_uri, expected: self.onnx_expected.clone(), tolerance: 1e-4 }),
            ..self.fixture(artifact_uri)
        }
    }

    /// The fixture for this model stored at `artifact_uri` (where the platform put `bytes`).
    /// Predictions cross a text format as the shortest round-trip decimal, so they must match
    /// exactly.
    pub fn fixture(&self, artifact_uri: String) -> ServingFixture {
        let variant = Variant { name: "v1".into(), model: "wine".into(), version: 1, artifact_uri, weight: 100 };
        ServingFixture {
            spec: EndpointSpec { name: "gtk-wine".into(), variants: vec![variant], signature: self.signature.clone(), scaling: None },
            rows: self.rows.clone(),
            expected: self.expected.clone(),
            tolerance: 1e-9,
            require_token: None,
            onnx: None,
        }
    }
}

impl Default for StandardModel {
    fn default() -> Self {
        StandardModel::new()
    }
}

/// The context every serving case gets.
#[derive(Clone)]
pub struct ServingCtx {
    pub serving: Arc<dyn Serving>,
    pub fixture: Arc<ServingFixture>,
}

pub fn cases() -> Vec<Case<ServingCtx>> {
    vec![
        case!(fixture_is_well_formed),
        case!(deploy_comes_into_service_with_the_variants_asked),
        case!(invoke_returns_the_models_predictions),
        case!(invoke_with_missing_columns_is_invalid),
        case!(invoke_of_unknown_endpoint_is_not_found),
        case!(shift_traffic_routes_by_weight, needs = [Feature::TrafficSplit]),
        case!(bearer_auth_refuses_requests_without_the_token, needs = [Feature::BearerAuth]),
        case!(shift_traffic_refuses_weights_not_summing_to_100, needs = [Feature::TrafficSplit]),
        case!(autoscaling_follows_every_deploy, needs = [Feature::Autoscaling]),
        case!(autoscaling_is_refused_where_not_declared),
        case!(serves_an_onnx_model, needs = [Feature::OnnxModels]),
        case!(undeploy_is_idempotent),
    ]
}

pub async fn run_serving(serving: Arc<dyn Serving>, fixture: ServingFixture) -> Report {
    let caps = serving.capabilities();
    run_cases("serving", ServingCtx { serving, fixture: Arc::new(fixture) }, &caps, cases()).await
}

/// The fixture's spec under a fresh name.
fn fresh_spec(fx: &ServingFixture) -> EndpointSpec {
    EndpointSpec { name: unique(&format!("{}-", fx.spec.name)), ..fx.spec.clone() }
}

/// The fixture's spec with two variants (the second a copy of the first under another name
/// when the fixture has one): enough to observe routing.
fn two_variant_spec(fx: &ServingFixture) -> EndpointSpec {
    let mut spec = fresh_spec(fx);
    if spec.variants.len() < 2 {
        let first = spec.variants[0].clone();
        spec.variants = vec![
            Variant { name: "blue".into(), weight: 50, ..first.clone() },
            Variant { name: "green".into(), weight: 50, ..first },
        ];
    }
    spec
}

/// Deploys `spec`, waits for InService, runs `body`, then undeploys whatever the outcome.
async fn with_endpoint<F: Future<Output = TestResult>>(
    ctx: ServingCtx,
    spec: EndpointSpec,
    body: impl FnOnce(ServingCtx, EndpointInfo) -> F,
) -> TestResult {
    let out = async {
        ctx.serving.deploy(&spec).await?;
        let info = in_service(&ctx, &spec.name).await?;
        body(ctx.clone(), info).await
    }
    .await;
    let _ = ctx.serving.undeploy(&spec.name).await;
    out
}

async fn in_service(ctx: &ServingCtx, name: &str) -> anyhow::Result<EndpointInfo> {
    wait_for(&format!("endpoint `{name}` coming into service"), DEPLOY_LIMIT, || async {
        match ctx.serving.describe(name).await? {
            None => anyhow::bail!("describe({name}) is None right after deploy"),
            Some(info) if info.state == EndpointState::Failed => anyhow::bail!("endpoint `{name}` went to Failed"),
            Some(info) => Ok((info.state == EndpointState::InService).then_some(info)),
        }
    })
    .await
}

fn check_predictions(got: &[f64], fx: &ServingFixture, what: &str) -> TestResult {
    ensure_eq!(got.len(), fx.expected.len(), "{what}: number of predictions");
    for (i, (g, w)) in got.iter().zip(&fx.expected).enumerate() {
        anyhow::ensure!(
            (g - w).abs() <= fx.tolerance,
            "{what}: prediction for row {i} is {g}, the model says {w} (tolerance {})",
            fx.tolerance
        );
    }
    Ok(())
}

/// Variants compared on what the caller asked for, in name order.
fn variants_key(vs: &[Variant]) -> Vec<(String, String, u64, String, u32)> {
    let mut out: Vec<_> =
        vs.iter().map(|v| (v.name.clone(), v.model.clone(), v.version, v.artifact_uri.clone(), v.weight)).collect();
    out.sort();
    out
}

fn weights_of(info: &EndpointInfo) -> Vec<(String, u32)> {
    let mut w: Vec<_> = info.variants.iter().map(|v| (v.name.clone(), v.weight)).collect();
    w.sort();
    w
}

/// A broken fixture would make every other failure here misleading.
pub async fn fixture_is_well_formed(ctx: ServingCtx) -> TestResult {
    let fx = &ctx.fixture;
    anyhow::ensure!(!fx.spec.variants.is_empty(), "the fixture's spec has no variants");
    ensure_eq!(fx.spec.variants.iter().map(|v| v.weight).sum::<u32>(), 100, "the fixture's variant weights summed");
    anyhow::ensure!(!fx.rows.is_empty(), "the fixture has no sample rows");
    ensure_eq!(fx.expected.len(), fx.rows.len(), "expected predictions per sample row");
    anyhow::ensure!(fx.tolerance >= 0.0 && fx.tolerance.is_finite(), "tolerance is {}", fx.tolerance);
    for c in &fx.spec.signature.inputs {
        anyhow::ensure!(fx.rows.column_index(&c.name).is_some(), "sample rows lack signature input `{}`", c.name);
    }
    Ok(())
}

pub async fn deploy_comes_into_service_with_the_variants_asked(ctx: ServingCtx) -> TestResult {
    let spec = fresh_spec(&ctx.fixture);
    with_endpoint(ctx, spec.clone(), |ctx, info| async move {
        ensure_eq!(info.name, spec.name, "endpoint name");
        ensure_eq!(variants_key(&info.variants), variants_key(&spec.variants), "variants (name, model, version, uri, weight)");
        ensure_eq!(info.signature, spec.signature, "signature");
        anyhow::ensure!(!info.url.is_empty(), "an in-service endpoint has no url");
        // Deploying the same spec again is a no-op that leaves it serving.
        ctx.serving.deploy(&spec).await.map_err(|e| anyhow::anyhow!("re-deploying the same spec: {e}"))?;
        let again = in_service(&ctx, &spec.name).await?;
        ensure_eq!(variants_key(&again.variants), variants_key(&spec.variants), "variants after a repeated deploy");
        Ok(())
    })
    .await
}

pub async fn invoke_returns_the_models_predictions(ctx: ServingCtx) -> TestResult {
    let spec = fresh_spec(&ctx.fixture);
    with_endpoint(ctx, spec.clone(), |ctx, _| async move {
        let p = ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await?;
        check_predictions(&p.predictions, &ctx.fixture, "invoke")?;
        anyhow::ensure!(
            spec.variants.iter().any(|v| v.name == p.variant),
            "answered by variant `{}`, which the endpoint does not have",
            p.variant
        );
        // One row at a time gives the same answers as the batch.
        let first = Table { columns: ctx.fixture.rows.columns.clone(), rows: vec![ctx.fixture.rows.rows[0].clone()] };
        let one = ctx.serving.invoke(&spec.name, &first).await?;
        ensure_eq!(one.predictions.len(), 1, "predictions for one row");
        anyhow::ensure!(
            (one.predictions[0] - ctx.fixture.expected[0]).abs() <= ctx.fixture.tolerance,
            "single-row prediction {} vs the model's {}",
            one.predictions[0],
            ctx.fixture.expected[0]
        );
        Ok(())
    })
    .await
}

/// An endpoint serves an ONNX model (what the user's training code writes) like Galley's own:
/// its answers are the arithmetic the model encodes.
pub async fn serves_an_onnx_model(ctx: ServingCtx) -> TestResult {
    let Some(onnx) = ctx.fixture.onnx.clone() else {
        anyhow::bail!("the platform declares OnnxModels, but its serving fixture has no ONNX model (ServingFixture::onnx)");
    };
    let mut spec = fresh_spec(&ctx.fixture);
    let first = spec.variants[0].clone();
    spec.variants = vec![Variant { artifact_uri: onnx.artifact_uri.clone(), weight: 100, ..first }];
    with_endpoint(ctx, spec.clone(), |ctx, _| async move {
        let p = ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await?;
        ensure_eq!(p.predictions.len(), onnx.expected.len(), "predictions of the ONNX model");
        for (i, (g, w)) in p.predictions.iter().zip(&onnx.expected).enumerate() {
            anyhow::ensure!((g - w).abs() <= onnx.tolerance, "ONNX model, row {i}: served {g}, the model encodes {w}");
        }
        Ok(())
    })
    .await
}

pub async fn invoke_with_missing_columns_is_invalid(ctx: ServingCtx) -> TestResult {
    let spec = fresh_spec(&ctx.fixture);
    with_endpoint(ctx, spec.clone(), |ctx, _| async move {
        let Some(dropped) = spec.signature.inputs.first() else {
            anyhow::bail!("the fixture's signature has no inputs to leave out");
        };
        let keep: Vec<&str> =
            ctx.fixture.rows.columns.iter().map(|c| c.name.as_str()).filter(|n| *n != dropped.name).collect();
        let rows = ctx.fixture.rows.select(&keep)?;
        expect_kind(
            ctx.serving.invoke(&spec.name, &rows).await,
            ErrorKind::InvalidInput,
            &format!("invoke without signature input `{}`", dropped.name),
        )
    })
    .await
}

pub async fn invoke_of_unknown_endpoint_is_not_found(ctx: ServingCtx) -> TestResult {
    let name = unique("gtk-nothing-");
    expect_kind(ctx.serving.invoke(&name, &ctx.fixture.rows).await, ErrorKind::NotFound, "invoke of an endpoint never deployed")
}

/// An endpoint with authentication answers its platform's client (which sends the token) and
/// refuses anyone without the token, or with a wrong one.
pub async fn bearer_auth_refuses_requests_without_the_token(ctx: ServingCtx) -> TestResult {
    let Some(require) = ctx.fixture.require_token.clone() else {
        return Err(Skip("the fixture gives no RequireToken hook, which the BearerAuth case needs".into()).into());
    };
    let spec = fresh_spec(&ctx.fixture);
    let token = (require.0)(&spec.name)?;
    with_endpoint(ctx, spec.clone(), |ctx, info| async move {
        let p = ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await?;
        check_predictions(&p.predictions, &ctx.fixture, "invoke through the platform's client")?;
        let url = galley_core::stages::invocations_url(&info.url);
        let body = ctx.fixture.rows.to_dataframe_split(&spec.signature.inputs)?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let send = |auth: Option<String>| {
            let mut req = http.post(&url).json(&body);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        let none = send(None).await?.status();
        ensure_eq!(none.as_u16(), 401, "status of a request without a token");
        let wrong = send(Some(format!("Bearer {token}x"))).await?.status();
        anyhow::ensure!(matches!(wrong.as_u16(), 401 | 403), "a wrong token got status {wrong}");
        let right = send(Some(format!("Bearer {token}"))).await?;
        ensure_eq!(right.status().as_u16(), 200, "status with the token");
        Ok(())
    })
    .await
}

/// A shift sets the split asked (variants not named get none): `shift_traffic` answers with
/// it, a later describe (the platform's own record, e.g. SageMaker's current weights) shows it,
/// nothing but the weights changes, and requests follow it.
pub async fn shift_traffic_routes_by_weight(ctx: ServingCtx) -> TestResult {
    let spec = two_variant_spec(&ctx.fixture);
    with_endpoint(ctx, spec.clone(), |ctx, _| async move {
        let (a, b) = (spec.variants[0].name.clone(), spec.variants[1].name.clone());
        let shift = |asked: Vec<(String, u32)>, want: Vec<(String, u32)>| {
            let (ctx, spec) = (ctx.clone(), spec.clone());
            async move {
                let info = ctx.serving.shift_traffic(&spec.name, &asked).await?;
                let mut want = want;
                want.sort();
                ensure_eq!(weights_of(&info), want, "weights returned by shift_traffic({asked:?})");
                let info = in_service(&ctx, &spec.name).await?;
                ensure_eq!(weights_of(&info), want, "weights described after shift_traffic({asked:?})");
                ensure_eq!(
                    info.variants.iter().map(|v| (v.name.clone(), v.artifact_uri.clone())).collect::<Vec<_>>(),
                    spec.variants.iter().map(|v| (v.name.clone(), v.artifact_uri.clone())).collect::<Vec<_>>(),
                    "variants (a shift changes weights, nothing else)"
                );
                anyhow::Ok(())
            }
        };
        shift(vec![(a.clone(), 0), (b.clone(), 100)], vec![(a.clone(), 0), (b.clone(), 100)]).await?;
        // A variant with weight 0 gets no traffic, so every answer now comes from `b`.
        for _ in 0..5 {
            let p = ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await?;
            ensure_eq!(p.variant, b, "variant answering with all traffic on `{b}`");
            check_predictions(&p.predictions, &ctx.fixture, "invoke after the shift")?;
        }
        // Only `a` named: `b` is left with nothing.
        shift(vec![(a.clone(), 100)], vec![(a.clone(), 100), (b.clone(), 0)]).await?;
        for _ in 0..5 {
            ensure_eq!(ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await?.variant, a, "variant answering with all traffic on `{a}`");
        }
        shift(vec![(a.clone(), 70), (b.clone(), 30)], vec![(a, 70), (b, 30)]).await
    })
    .await
}

pub async fn shift_traffic_refuses_weights_not_summing_to_100(ctx: ServingCtx) -> TestResult {
    let spec = two_variant_spec(&ctx.fixture);
    with_endpoint(ctx, spec.clone(), |ctx, before| async move {
        let names: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        let mut bad: Vec<(String, u32)> = names.iter().map(|n| (n.clone(), 0)).collect();
        bad[0].1 = 50;
        bad[1].1 = 40;
        expect_kind(ctx.serving.shift_traffic(&spec.name, &bad).await, ErrorKind::InvalidInput, "weights summing to 90")?;
        bad[1].1 = 60;
        bad[0].1 = 60;
        expect_kind(ctx.serving.shift_traffic(&spec.name, &bad).await, ErrorKind::InvalidInput, "weights summing to 120")?;
        // Not the weight `names[0]` has now, so a shift applied in part before the refusal shows.
        let unknown = vec![(names[0].clone(), 30), ("no-such-variant".to_owned(), 70)];
        expect_kind_in(
            ctx.serving.shift_traffic(&spec.name, &unknown).await,
            &[ErrorKind::InvalidInput, ErrorKind::NotFound],
            "weights naming a variant the endpoint does not have",
        )?;
        let after = ctx.serving.describe(&spec.name).await?.ok_or_else(|| anyhow::anyhow!("the endpoint vanished"))?;
        ensure_eq!(weights_of(&after), weights_of(&before), "weights after refused shifts");
        Ok(())
    })
    .await
}

pub async fn undeploy_is_idempotent(ctx: ServingCtx) -> TestResult {
    let spec = fresh_spec(&ctx.fixture);
    let out = async {
        ctx.serving.deploy(&spec).await?;
        in_service(&ctx, &spec.name).await?;
        ctx.serving.undeploy(&spec.name).await?;
        ensure_eq!(ctx.serving.describe(&spec.name).await?, None, "describe after undeploy");
        ctx.serving.undeploy(&spec.name).await.map_err(|e| anyhow::anyhow!("second undeploy: {e}"))?;
        ctx.serving
            .undeploy(&unique("gtk-nothing-"))
            .await
            .map_err(|e| anyhow::anyhow!("undeploy of an endpoint never deployed: {e}"))?;
        expect_kind(ctx.serving.invoke(&spec.name, &ctx.fixture.rows).await, ErrorKind::NotFound, "invoke after undeploy")
    }
    .await;
    let _ = ctx.serving.undeploy(&spec.name).await;
    out
}

/// Autoscaling, read back from the platform's own record after each deploy: the variants get
/// the scaling asked, a new variant gets it too, new bounds replace the old, a deploy without
/// scaling removes it, and bounds no platform can hold are refused with nothing changed.
pub async fn autoscaling_follows_every_deploy(ctx: ServingCtx) -> TestResult {
    let asked = Scaling { min_instances: 1, max_instances: 3, requests_per_minute: 50.0 };
    let spec = EndpointSpec { scaling: Some(asked.clone()), ..fresh_spec(&ctx.fixture) };
    with_endpoint(ctx, spec.clone(), |ctx, info| async move {
        ensure_eq!(info.scaling.as_ref(), Some(&asked), "scaling described after the first deploy");
        // Another variant in place of the first (as a new model version is): it scales too.
        let first = spec.variants[0].clone();
        let moved = EndpointSpec { variants: vec![Variant { name: format!("{}-next", first.name), ..first }], ..spec.clone() };
        ctx.serving.deploy(&moved).await?;
        let info = in_service(&ctx, &spec.name).await?;
        ensure_eq!(variants_key(&info.variants), variants_key(&moved.variants), "variants after the move");
        ensure_eq!(info.scaling.as_ref(), Some(&asked), "scaling of the variant that replaced the first");
        let wider = Scaling { min_instances: 2, max_instances: 5, requests_per_minute: 80.0 };
        ctx.serving.deploy(&EndpointSpec { scaling: Some(wider.clone()), ..moved.clone() }).await?;
        let info = in_service(&ctx, &spec.name).await?;
        ensure_eq!(info.scaling.as_ref(), Some(&wider), "scaling after new bounds");
        let impossible = Scaling { min_instances: 4, max_instances: 2, requests_per_minute: 80.0 };
        expect_kind(ctx.serving.deploy(&EndpointSpec { scaling: Some(impossible), ..moved.clone() }).await, ErrorKind::InvalidInput, "min 4 > max 2")?;
        let info = in_service(&ctx, &spec.name).await?;
        ensure_eq!(info.scaling.as_ref(), Some(&wider), "scaling after a refused deploy");
        ctx.serving.deploy(&EndpointSpec { scaling: None, ..moved }).await?;
        let info = in_service(&ctx, &spec.name).await?;
        ensure_eq!(info.scaling, None, "scaling after a deploy without it");
        Ok(())
    })
    .await
}

/// A platform that does not declare autoscaling refuses a spec that asks for it, rather than
/// serving on one instance what was sized for several, and deploys nothing.
pub async fn autoscaling_is_refused_where_not_declared(ctx: ServingCtx) -> TestResult {
    if ctx.serving.capabilities().supports(Feature::Autoscaling) {
        return Err(Skip("the platform declares autoscaling (autoscaling_follows_every_deploy checks it)".into()).into());
    }
    let scaling = Scaling { min_instances: 1, max_instances: 2, requests_per_minute: 50.0 };
    let spec = EndpointSpec { scaling: Some(scaling), ..fresh_spec(&ctx.fixture) };
    let refused = ctx.serving.deploy(&spec).await;
    let described = ctx.serving.describe(&spec.name).await;
    let _ = ctx.serving.undeploy(&spec.name).await;
    expect_kind(refused, ErrorKind::Unsupported, "deploy with autoscaling")?;
    ensure_eq!(described?, None, "describe after the refused deploy");
    Ok(())
}

/// The command a serving stage that spawns its model server (`--config FILE` appended) runs
/// when the test binary itself is the server: it re-runs this binary with only the ignored
/// `test` selected and the config path in `config_env`. A shell moves `--config FILE` into the
/// environment (the test harness would refuse it as a flag); the path also stays on the
/// command line, as a filter matching no test, because the serving stage recognises its server
/// by it.
pub fn this_binary_as_server(config_env: &str, test: &str) -> Vec<std::ffi::OsString> {
    let script = format!(r#"{config_env}="$2" exec "$0" --ignored --exact --nocapture {test} "$2""#);
    let exe = std::env::current_exe().expect("a test binary knows its path");
    vec!["/bin/sh".into(), "-c".into(), script.into(), exe.into_os_string()]
}
