//! The dashboard `galley export grafana` writes, checked against Grafana's own JSON Schemas
//! (`tests/specs/grafana/`, vendored from grafana-foundation-sdk): the dashboard model, each
//! panel's `options` and `fieldConfig.defaults.custom` against its panel plugin's schema, and
//! every query against the Prometheus data source's. Each check is shown to refuse a broken
//! dashboard. That the queries run on a real Prometheus and find the endpoint's series is
//! checked by the onprem lifecycle test (crates/cli/tests/onprem.rs).

use galley_server::grafana::{DriftLine, dashboard};
use galley_server::prometheus::Thresholds;
use serde_json::{Value as Json, json};

fn schema(name: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/specs/grafana")
        .join(format!("{name}.jsonschema.json"));
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// `definition` of the schema file `name` as a schema of its own (its `definitions` kept, so
/// its internal `$ref`s resolve).
fn definition(name: &str, definition: &str) -> Json {
    let mut s = schema(name);
    s["$ref"] = json!(format!("#/definitions/{definition}"));
    s
}

fn violations(schema: &Json, doc: &Json) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Every violation of the dashboard: the model, then each panel's plugin parts and queries.
fn check(d: &Json) -> Vec<String> {
    let mut out = violations(&schema("dashboard"), d);
    for panel in d["panels"].as_array().unwrap() {
        let kind = panel["type"].as_str().unwrap();
        if kind == "row" {
            continue;
        }
        let plugin = match kind {
            "timeseries" | "stat" => kind,
            other => {
                out.push(format!("panel type `{other}` has no vendored schema"));
                continue;
            }
        };
        let at = |what: &str| format!("panel {} `{}` {what}", panel["id"], panel["title"]);
        out.extend(
            violations(&definition(plugin, "Options"), &panel["options"])
                .into_iter()
                .map(|v| format!("{}: {v}", at("options"))),
        );
        if let Some(custom) = panel["fieldConfig"]["defaults"].get("custom") {
            out.extend(
                violations(&definition(plugin, "FieldConfig"), custom)
                    .into_iter()
                    .map(|v| format!("{}: {v}", at("custom"))),
            );
        }
        for target in panel["targets"].as_array().unwrap() {
            out.extend(
                violations(&definition("prometheus", "Dataquery"), target)
                    .into_iter()
                    .map(|v| format!("{}: {v}", at("query"))),
            );
        }
    }
    out
}

fn example() -> Json {
    dashboard(
        "wine-quality",
        "wine-quality",
        Thresholds::default(),
        DriftLine {
            threshold: 0.2,
            psi: true,
        },
    )
}

#[test]
fn the_dashboard_is_valid_against_grafanas_schemas() {
    let d = example();
    let v = check(&d);
    assert!(
        v.is_empty(),
        "Grafana's schemas refuse the dashboard: {v:#?}"
    );
    assert_eq!(d["uid"], "galley-wine-quality");
    // Panels do not overlap on Grafana's 24-column grid.
    let cells: Vec<(u64, u64, u64, u64)> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            )
        })
        .collect();
    for (i, a) in cells.iter().enumerate() {
        assert!(a.0 + a.2 <= 24, "panel {i} runs past the grid: {a:?}");
        for b in &cells[i + 1..] {
            let apart =
                a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
            assert!(apart, "panels overlap: {a:?} {b:?}");
        }
    }
    // Unique panel ids and every query scoped to this endpoint or its monitor.
    let mut ids: Vec<u64> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), d["panels"].as_array().unwrap().len());
    for expr in exprs(&d) {
        assert!(
            expr.contains("endpoint=\"wine-quality\"") || expr.contains("monitor=\"wine-quality\""),
            "an unscoped query: {expr}"
        );
    }
    // The alert thresholds are the lines on the panels.
    let error_panel = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Error ratio (5xx)")
        .unwrap();
    assert_eq!(
        error_panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"],
        json!(Thresholds::default().error_ratio)
    );
}

fn exprs(d: &Json) -> Vec<String> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn names_are_quoted_and_uids_stay_within_grafanas_limit() {
    let long = "an-endpoint-name-much-longer-than-grafana-allows-for-a-uid";
    let d = dashboard(
        long,
        "m\"x",
        Thresholds::default(),
        DriftLine {
            threshold: 0.1,
            psi: false,
        },
    );
    let uid = d["uid"].as_str().unwrap();
    assert!(
        uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{uid}"
    );
    let other = dashboard(
        &format!("{long}-2"),
        "m",
        Thresholds::default(),
        DriftLine {
            threshold: 0.1,
            psi: false,
        },
    );
    assert_ne!(other["uid"], d["uid"], "two long names share a uid");
    assert!(
        exprs(&d).iter().any(|e| e.contains(r#"monitor="m\"x""#)),
        "{:?}",
        exprs(&d)
    );
    // The KS method puts the drift line on the KS panel, not the PSI ones.
    let ks = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Feature drift (KS statistic)")
        .unwrap();
    assert_eq!(
        ks["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"],
        json!(0.1)
    );
    assert!(check(&d).is_empty(), "{:?}", check(&d));
}

/// The checks above can fail: each kind of mistake is refused by the schema that owns it.
#[test]
fn the_schema_checks_have_teeth() {
    type Break = fn(&mut Json);
    let broken: [(&str, Break); 6] = [
        ("a dashboard field Grafana does not define", |d| {
            d["refreshInterval"] = json!("30s")
        }),
        ("a missing schemaVersion", |d| {
            d.as_object_mut().unwrap().remove("schemaVersion");
        }),
        ("a panel width that is a string", |d| {
            d["panels"][1]["gridPos"]["w"] = json!("8")
        }),
        ("a timeseries legend without its required fields", |d| {
            d["panels"][1]["options"]["legend"] = json!({ "displayMode": "list" })
        }),
        ("a draw style the timeseries panel does not know", |d| {
            d["panels"][1]["fieldConfig"]["defaults"]["custom"]["drawStyle"] = json!("spline")
        }),
        ("a query without its expression", |d| {
            d["panels"][1]["targets"][0]
                .as_object_mut()
                .unwrap()
                .remove("expr");
        }),
    ];
    assert!(check(&example()).is_empty());
    for (what, breaks) in broken {
        let mut d = example();
        breaks(&mut d);
        assert!(!check(&d).is_empty(), "{what} passed Grafana's schemas");
    }
}
