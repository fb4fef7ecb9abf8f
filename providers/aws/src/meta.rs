//! Structured Galley metadata kept in AWS string maps (model package customer metadata,
//! resource tags). Their values allow only letters, digits, spaces and `_.:/=+-@`, at most 256
//! characters, so JSON is stored base64-encoded (an alphabet inside that set) and split over
//! numbered keys `PREFIX.0`, `PREFIX.1`, …

use std::collections::HashMap;

use galley_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const CHUNK: usize = 256;

/// `value` as (key, chunk) pairs under `prefix`.
pub fn encode<T: Serialize>(prefix: &str, value: &T, max_entries: usize) -> Result<Vec<(String, String)>> {
    let json = serde_json::to_vec(value)?;
    let b64 = aws_smithy_types::base64::encode(&json);
    let chunks: Vec<(String, String)> = b64
        .as_bytes()
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| (format!("{prefix}.{i}"), String::from_utf8_lossy(c).into_owned()))
        .collect();
    if chunks.len() > max_entries {
        return Err(Error::invalid(format!(
            "galley metadata `{prefix}` needs {} entries of {CHUNK} characters but AWS allows {max_entries}; shorten the description, params or signature",
            chunks.len()
        )));
    }
    Ok(chunks)
}

/// Reassembles what [`encode`] wrote; `None` when no entry has the prefix.
pub fn decode<T: DeserializeOwned>(prefix: &str, map: &HashMap<String, String>) -> Result<Option<T>> {
    let mut parts: Vec<(usize, &str)> = map
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix)?.strip_prefix('.')?.parse::<usize>().ok().map(|i| (i, v.as_str())))
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    parts.sort_by_key(|(i, _)| *i);
    let b64: String = parts.iter().map(|(_, v)| *v).collect();
    let json = aws_smithy_types::base64::decode(&b64)
        .map_err(|e| Error::corrupt(format!("galley metadata `{prefix}` is not valid base64: {e}")))?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| Error::corrupt(format!("galley metadata `{prefix}` is not the JSON galley wrote: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_across_chunks_within_the_allowed_alphabet() {
        let value = serde_json::json!({"desc": "x".repeat(700), "m": {"rmse": 0.25}, "u": "s3://b/k?x={y}"});
        let entries = encode("galley.meta", &value, 50).unwrap();
        assert!(entries.len() >= 4);
        for (k, v) in &entries {
            assert!(v.len() <= CHUNK && !v.is_empty());
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)), "{v}");
            assert!(k.len() <= 128);
        }
        let map: HashMap<_, _> = entries.into_iter().rev().collect();
        let back: serde_json::Value = decode("galley.meta", &map).unwrap().unwrap();
        assert_eq!(back, value);
        assert!(decode::<serde_json::Value>("other", &map).unwrap().is_none());
        assert!(encode("p", &"y".repeat(20_000), 50).is_err());
    }
}
