//! Reading an algorithm's `training.params` from the blueprint: known names only, typed, with
//! defaults, and errors that list what the algorithm does accept.

use std::collections::BTreeMap;

use galley_core::ml::{Algorithm, VarValue};
use galley_core::{Error, Result};
use indexmap::IndexMap;

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer at least this large.
    Int(u64),
    /// A finite float at least this large.
    Float(f64),
    Bool,
}

struct Spec {
    name: &'static str,
    kind: Kind,
}

const LOGISTIC: &[Spec] = &[
    Spec {
        name: "alpha",
        kind: Kind::Float(0.0),
    },
    Spec {
        name: "gradient_tolerance",
        kind: Kind::Float(f64::MIN_POSITIVE),
    },
    Spec {
        name: "max_iterations",
        kind: Kind::Int(1),
    },
];
const TREE: &[Spec] = &[
    Spec {
        name: "max_depth",
        kind: Kind::Int(1),
    },
    Spec {
        name: "min_samples_leaf",
        kind: Kind::Int(1),
    },
    Spec {
        name: "min_samples_split",
        kind: Kind::Int(2),
    },
];
const LINEAR: &[Spec] = &[Spec {
    name: "fit_intercept",
    kind: Kind::Bool,
}];

pub(crate) fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::LogisticRegression => "logistic_regression",
        Algorithm::DecisionTree => "decision_tree",
        Algorithm::LinearRegression => "linear_regression",
    }
}

fn specs(a: Algorithm) -> &'static [Spec] {
    match a {
        Algorithm::LogisticRegression => LOGISTIC,
        Algorithm::DecisionTree => TREE,
        Algorithm::LinearRegression => LINEAR,
    }
}

/// The parameter names an algorithm accepts, sorted.
pub fn accepted_params(a: Algorithm) -> Vec<&'static str> {
    specs(a).iter().map(|s| s.name).collect()
}

/// Typed, checked parameters. Values are stored as f64 (bools as 0/1); getters apply defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    values: BTreeMap<&'static str, f64>,
}

impl Params {
    pub(crate) fn parse(a: Algorithm, raw: &IndexMap<String, VarValue>) -> Result<Params> {
        let specs = specs(a);
        let mut values = BTreeMap::new();
        for (name, value) in raw {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                let accepted = accepted_params(a);
                let suggestion = accepted
                    .iter()
                    .map(|c| (strsim::jaro_winkler(c, name), c))
                    .filter(|(s, _)| *s > 0.8)
                    .max_by(|x, y| x.0.total_cmp(&y.0))
                    .map(|(_, c)| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(Error::invalid(format!(
                    "unknown parameter `{name}` for {}{suggestion}; it accepts: {}",
                    algorithm_name(a),
                    accepted.join(", ")
                )));
            };
            values.insert(spec.name, check(spec, value, a)?);
        }
        Ok(Params { values })
    }

    pub(crate) fn int(&self, name: &str) -> Option<u64> {
        self.values.get(name).map(|v| *v as u64)
    }
    pub(crate) fn float(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.values.get(name).map(|v| *v != 0.0)
    }
}

fn check(spec: &Spec, value: &VarValue, a: Algorithm) -> Result<f64> {
    let bad = |what: &str| {
        Error::invalid(format!(
            "parameter `{}` of {} must be {what}, got `{value}`",
            spec.name,
            algorithm_name(a)
        ))
    };
    // Values substituted from `${var.X}` may arrive as strings: accept their text form.
    let number = match value {
        VarValue::Number(n) => Some(*n),
        VarValue::String(s) => s.trim().parse::<f64>().ok(),
        VarValue::Bool(_) => None,
    };
    match spec.kind {
        Kind::Int(min) => match number {
            Some(n) if n.fract() == 0.0 && n >= min as f64 && n < 1e15 => Ok(n),
            _ => Err(bad(&format!("a whole number of at least {min}"))),
        },
        Kind::Float(min) => match number {
            Some(n) if n.is_finite() && n >= min => Ok(n),
            _ if min > 0.0 => Err(bad("a positive number")),
            _ => Err(bad(&format!("a number of at least {min}"))),
        },
        Kind::Bool => match value {
            VarValue::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            VarValue::String(s) if s == "true" || s == "false" => {
                Ok(if s == "true" { 1.0 } else { 0.0 })
            }
            _ => Err(bad("true or false")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_param_names_the_accepted_ones() {
        let raw = IndexMap::from([("max_iter".to_owned(), VarValue::Number(10.0))]);
        let e = Params::parse(Algorithm::LogisticRegression, &raw).unwrap_err();
        let m = e.message();
        assert!(
            m.contains("unknown parameter `max_iter` for logistic_regression"),
            "{m}"
        );
        assert!(m.contains("did you mean `max_iterations`"), "{m}");
        assert!(
            m.contains("alpha, gradient_tolerance, max_iterations"),
            "{m}"
        );
    }

    #[test]
    fn values_are_type_checked() {
        let p = |k: &str, v: VarValue| {
            Params::parse(
                Algorithm::DecisionTree,
                &IndexMap::from([(k.to_owned(), v)]),
            )
        };
        assert_eq!(
            p("max_depth", VarValue::Number(4.0))
                .unwrap()
                .int("max_depth"),
            Some(4)
        );
        assert_eq!(
            p("max_depth", VarValue::String("6".into()))
                .unwrap()
                .int("max_depth"),
            Some(6)
        );
        assert!(
            p("max_depth", VarValue::Number(2.5))
                .unwrap_err()
                .message()
                .contains("whole number")
        );
        assert!(p("min_samples_split", VarValue::Number(1.0)).is_err());
        let e = Params::parse(
            Algorithm::LogisticRegression,
            &IndexMap::from([("alpha".to_owned(), VarValue::Number(-1.0))]),
        )
        .unwrap_err();
        assert!(e.message().contains("`alpha`"), "{e}");
    }
}
