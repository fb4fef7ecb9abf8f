//! The rule that keeps secrets out of state and plan files.
//!
//! A key *looks secret* when, split into lower-case words (at `_`, `-`, `.`, spaces and
//! camelCase boundaries), it contains one of the words `password`, `passwd`, `secret`, `token`,
//! `credential`, `credentials`, `passphrase`, or one of the pairs `private key`, `access key`,
//! `api key`, `secret key`, `signing key`, `key material`, `client secret` (also written as one
//! word: `apikey`, `privatekey`, …) — **unless** its last word says it only *points at* a
//! secret: `ref`, `arn`, `name`, `id`, `path`, `env`, `uri`, `url`, `file`, `version`.
//! So `db_password` and `apiKey` are secret, `password_secret_arn` and `token_env` are not, and
//! `max_tokens` is not (the word is `tokens`).
//!
//! Desired attributes that look secret are refused when the graph is built (a provider must
//! pass a reference to a secret store instead); observed attributes and outputs that look
//! secret are stripped before anything is written to state.

use serde_json::Value as Json;

const SECRET_WORDS: &[&str] =
    &["password", "passwd", "secret", "token", "credential", "credentials", "passphrase"];
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("private", "key"),
    ("access", "key"),
    ("api", "key"),
    ("secret", "key"),
    ("signing", "key"),
    ("key", "material"),
    ("client", "secret"),
];
const SECRET_JOINED: &[&str] = &["apikey", "privatekey", "accesskey", "secretkey", "signingkey"];
const POINTER_SUFFIXES: &[&str] =
    &["ref", "arn", "name", "id", "path", "env", "uri", "url", "file", "version"];

fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// True when an attribute named `key` may hold a secret value (see the module docs).
pub fn looks_secret(key: &str) -> bool {
    let w = words(key);
    if w.last().is_some_and(|last| POINTER_SUFFIXES.contains(&last.as_str())) {
        return false;
    }
    w.iter().any(|x| SECRET_WORDS.contains(&x.as_str()) || SECRET_JOINED.contains(&x.as_str()))
        || w.windows(2).any(|p| SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())))
}

/// JSON paths (`a.b[2].c`) of every key in `value` that looks secret.
pub fn secret_paths(value: &Json) -> Vec<String> {
    let mut found = Vec::new();
    walk(value, String::new(), &mut found);
    found
}

fn walk(value: &Json, path: String, found: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if looks_secret(k) {
                    found.push(p);
                } else {
                    walk(v, p, found);
                }
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Removes every secret-looking key from `value`; returns the paths removed (for a warning
/// that names keys, never values).
pub fn strip_secrets(value: &mut Json) -> Vec<String> {
    let paths = secret_paths(value);
    strip(value);
    paths
}

fn strip(value: &mut Json) {
    match value {
        Json::Object(map) => {
            map.retain(|k, _| !looks_secret(k));
            map.values_mut().for_each(strip);
        }
        Json::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_keys() {
        for k in ["password", "db_password", "apiKey", "api_key", "AUTH_TOKEN", "private-key", "client_secret", "secret"] {
            assert!(looks_secret(k), "{k} should look secret");
        }
        for k in ["max_tokens", "password_secret_arn", "token_env", "name", "key", "primary_key_column", "secret_name", "url"] {
            assert!(!looks_secret(k), "{k} should not look secret");
        }
    }

    #[test]
    fn strips_nested() {
        let mut v = serde_json::json!({"a": {"password": "x", "user": "u"}, "l": [{"api_key": 1, "n": 2}]});
        let removed = strip_secrets(&mut v);
        assert_eq!(removed, vec!["a.password".to_string(), "l[0].api_key".to_string()]);
        assert_eq!(v, serde_json::json!({"a": {"user": "u"}, "l": [{"n": 2}]}));
    }
}
