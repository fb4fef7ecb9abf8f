//! Writing JSON documents as YAML files other tools read (Kubernetes manifests, Prometheus
//! configuration and rules).

use serde_json::Value as Json;

/// JSON as YAML, through yaml-rust2's emitter (every JSON document is a YAML document; this
/// reads as Kubernetes manifests usually do).
pub fn to_yaml(value: &Json) -> String {
    fn convert(v: &Json) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match v {
            Json::Null => Yaml::Null,
            Json::Bool(b) => Yaml::Boolean(*b),
            Json::Number(n) if n.is_i64() => Yaml::Integer(n.as_i64().unwrap_or_default()),
            Json::Number(n) => Yaml::Real(n.to_string()),
            Json::String(s) => Yaml::String(s.clone()),
            Json::Array(a) => Yaml::Array(a.iter().map(convert).collect()),
            Json::Object(o) => Yaml::Hash(o.iter().map(|(k, v)| (Yaml::String(k.clone()), convert(v))).collect()),
        }
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out).dump(&convert(value)).expect("emitting to a String cannot fail");
    out.push('\n');
    out
}
