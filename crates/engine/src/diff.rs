//! Attribute-level differences between JSON documents.

use serde_json::Value as Json;

use crate::plan::AttrDiff;

/// Differences of `desired` against `actual`, looking only at what `desired` specifies (an
/// attribute the platform computes, present only in `actual`, is not a change).
pub fn desired_vs_actual(desired: &Json, actual: &Json) -> Vec<AttrDiff> {
    let mut out = Vec::new();
    walk(desired, Some(actual), String::new(), false, &mut out);
    out
}

/// Every difference between two documents, both ways (for drift: recorded vs observed).
pub fn full(recorded: &Json, observed: &Json) -> Vec<AttrDiff> {
    let mut out = Vec::new();
    walk(recorded, Some(observed), String::new(), true, &mut out);
    out
}

/// Each top-level attribute of `doc` as appearing (`adding`) or disappearing.
pub fn top_level(doc: &Json, adding: bool) -> Vec<AttrDiff> {
    match doc {
        Json::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = Some(v.clone());
                if adding {
                    AttrDiff { path: k.clone(), old: None, new: v }
                } else {
                    AttrDiff { path: k.clone(), old: v, new: None }
                }
            })
            .collect(),
        Json::Null => Vec::new(),
        other => vec![AttrDiff {
            path: String::new(),
            old: (!adding).then(|| other.clone()),
            new: adding.then(|| other.clone()),
        }],
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn walk(want: &Json, have: Option<&Json>, path: String, both_ways: bool, out: &mut Vec<AttrDiff>) {
    match (want, have) {
        (Json::Object(w), Some(Json::Object(h))) => {
            for (k, v) in w {
                walk(v, h.get(k), join(&path, k), both_ways, out);
            }
            if both_ways {
                for (k, v) in h {
                    if !w.contains_key(k) {
                        out.push(AttrDiff { path: join(&path, k), old: None, new: Some(v.clone()) });
                    }
                }
            }
        }
        (w, Some(h)) if w == h => {}
        (w, h) => {
            // `old` is what exists, `new` what will (or, for drift, what was recorded → seen).
            if both_ways {
                out.push(AttrDiff { path, old: Some(w.clone()), new: h.cloned() });
            } else {
                out.push(AttrDiff { path, old: h.cloned(), new: Some(w.clone()) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_ignores_computed_attributes() {
        let d = desired_vs_actual(&json!({"a": 1, "n": {"x": 2}}), &json!({"a": 1, "n": {"x": 3}, "arn": "z"}));
        assert_eq!(d, vec![AttrDiff { path: "n.x".into(), old: Some(json!(3)), new: Some(json!(2)) }]);
        let f = full(&json!({"a": 1}), &json!({"a": 1, "b": 2}));
        assert_eq!(f, vec![AttrDiff { path: "b".into(), old: None, new: Some(json!(2)) }]);
    }
}
