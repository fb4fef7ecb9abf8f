//! SageMaker data capture: what an endpoint really served, as SageMaker records it.
//!
//! With a `DataCaptureConfig`, SageMaker writes each captured request and answer as one JSON
//! line to `<destination>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<file>.jsonl` (the format
//! "Capture data from real-time endpoint" documents):
//!
//! ```json
//! {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
//!   "data": "…", "encoding": "JSON"}, "endpointOutput": {…, "mode": "OUTPUT", …}},
//!  "eventMetadata": {"eventId": "…", "inferenceTime": "2026-12-03T17:25:49Z"}, "eventVersion": "0"}
//! ```
//!
//! `data` is the body as text for content types listed in `JsonContentTypes` or
//! `CsvContentTypes` (encoding `JSON` / `CSV`), otherwise base64 (`BASE64`). Galley's own
//! requests are MLflow `dataframe_split` JSON; `dataframe_records` and headerless CSV (features
//! in the baseline's column order, SageMaker's convention) are read too.

use galley_core::stages::TimestampMs;
use galley_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value as Json;

/// Under the artifact bucket: SageMaker adds `<endpoint>/<variant>/…` below it.
pub const CAPTURE_ROOT: &str = "galley/capture";

/// The DataCaptureConfig destination for endpoints whose data lives in `bucket`.
pub fn destination(bucket: &str) -> String {
    format!("s3://{bucket}/{CAPTURE_ROOT}")
}

/// The prefix holding one endpoint's captured traffic.
pub fn endpoint_prefix(endpoint: &str) -> String {
    format!("{CAPTURE_ROOT}/{endpoint}/")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    capture_data: CaptureData,
    event_metadata: EventMetadata,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptureData {
    endpoint_input: Option<Payload>,
    endpoint_output: Option<Payload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    data: String,
    #[serde(default)]
    encoding: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventMetadata {
    inference_time: String,
}

/// One captured request: its rows by column name, and the predictions answered (empty when
/// the answer was not captured or not read).
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    pub at_ms: TimestampMs,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
    pub predictions: Vec<f64>,
}

/// Whether a capture file's hour (from its key) can hold records at or after `since_ms`:
/// files of earlier hours are skipped without being read.
pub fn may_hold_records_since(key: &str, since_ms: TimestampMs) -> bool {
    let parts: Vec<&str> = key.rsplit('/').skip(1).take(4).collect();
    let [hh, dd, mm, yyyy] = parts.as_slice() else { return true };
    let stamp = format!("{yyyy}-{mm}-{dd}T{hh}:59:59.999Z");
    match chrono::DateTime::parse_from_rfc3339(&stamp) {
        Ok(end_of_hour) => end_of_hour.timestamp_millis() >= since_ms,
        Err(_) => true,
    }
}

/// Decodes one line of a capture file. `baseline_columns` names headerless CSV input.
pub fn decode_line(line: &str, baseline_columns: &[String]) -> Result<Captured> {
    let l: Line = serde_json::from_str(line).map_err(|e| Error::corrupt(format!("not a SageMaker data-capture record ({e})")))?;
    let at_ms = chrono::DateTime::parse_from_rfc3339(&l.event_metadata.inference_time)
        .map_err(|e| Error::corrupt(format!("inferenceTime `{}`: {e}", l.event_metadata.inference_time)))?
        .timestamp_millis();
    let input = l.capture_data.endpoint_input.ok_or_else(|| Error::corrupt("the record has no endpointInput (capture the input: CaptureOptions Input)"))?;
    let (columns, rows) = parse_input(&text_of(&input)?, baseline_columns)?;
    let predictions = match l.capture_data.endpoint_output {
        Some(out) => crate::serving::parse_predictions(text_of(&out)?.as_bytes()).unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Captured { at_ms, columns, rows, predictions })
}

fn text_of(p: &Payload) -> Result<String> {
    if p.encoding.eq_ignore_ascii_case("BASE64") {
        let bytes = aws_smithy_types::base64::decode(&p.data).map_err(|e| Error::corrupt(format!("captured data is not base64 ({e})")))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        Ok(p.data.clone())
    }
}

fn number(v: &Json) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).unwrap_or(f64::NAN)
}

fn parse_input(text: &str, baseline_columns: &[String]) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    if let Ok(doc) = serde_json::from_str::<Json>(text) {
        if let Some(split) = doc.get("dataframe_split") {
            let columns: Vec<String> = split["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect();
            let rows = split["data"].as_array().into_iter().flatten().map(|r| r.as_array().into_iter().flatten().map(number).collect()).collect();
            return Ok((columns, rows));
        }
        if let Some(records) = doc.get("dataframe_records").and_then(Json::as_array) {
            let columns: Vec<String> = records.first().and_then(Json::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let rows = records.iter().map(|r| columns.iter().map(|c| r.get(c).map_or(f64::NAN, number)).collect()).collect();
            return Ok((columns, rows));
        }
        return Err(Error::corrupt("captured JSON input is neither `dataframe_split` nor `dataframe_records`"));
    }
    // Headerless CSV: one row per line, the features in the order the model was trained on.
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|x| x.trim().parse().unwrap_or(f64::NAN)).collect())
        .collect();
    if rows.iter().any(|r| r.len() != baseline_columns.len()) {
        return Err(Error::corrupt(format!("captured CSV rows do not have the baseline's {} columns", baseline_columns.len())));
    }
    Ok((baseline_columns.to_vec(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &str, encoding: &str, output: &str) -> String {
        serde_json::json!({
            "captureData": {
                "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "data": input, "encoding": encoding},
                "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "data": output, "encoding": "JSON"},
            },
            "eventMetadata": {"eventId": "b2b7d0a6-4b6c-4a4e-9d53-0c3c7f0a9e11", "inferenceTime": "2026-12-03T17:25:49Z"},
            "eventVersion": "0",
        })
        .to_string()
    }

    #[test]
    fn a_json_capture_decodes_to_rows_and_predictions() {
        let input = r#"{"dataframe_split": {"columns": ["alcohol", "ash"], "data": [[12.5, 2.4], [13.1, 2.1]]}}"#;
        let c = decode_line(&line(input, "JSON", r#"{"predictions": [5.0, 6.0]}"#), &[]).unwrap();
        assert_eq!(c.columns, vec!["alcohol", "ash"]);
        assert_eq!(c.rows, vec![vec![12.5, 2.4], vec![13.1, 2.1]]);
        assert_eq!(c.predictions, vec![5.0, 6.0]);
        assert_eq!(c.at_ms, 1_796_318_749_000);
    }

    #[test]
    fn base64_and_csv_captures_decode_too() {
        let b64 = aws_smithy_types::base64::encode(r#"{"dataframe_records": [{"alcohol": 12.5, "ash": 2.4}]}"#);
        let c = decode_line(&line(&b64, "BASE64", "[7.0]"), &[]).unwrap();
        assert_eq!((c.rows, c.predictions), (vec![vec![12.5, 2.4]], vec![7.0]));
        let cols = vec!["alcohol".to_owned(), "ash".to_owned()];
        let c = decode_line(&line("12.5,2.4\n13.1,2.1", "CSV", "5\n6"), &cols).unwrap();
        assert_eq!((c.columns, c.rows.len(), c.predictions), (cols.clone(), 2, vec![5.0, 6.0]));
        assert!(decode_line(&line("12.5", "CSV", "5"), &cols).is_err(), "a CSV row without every baseline column");
        assert!(decode_line("{\"not\": \"a capture\"}", &cols).is_err());
    }

    #[test]
    fn files_of_hours_before_the_baseline_are_skipped() {
        let key = "galley/capture/wine/v1/2026/12/03/17/25-49-123-abc.jsonl";
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        assert!(may_hold_records_since(key, at("2026-12-03T17:59:00Z")));
        assert!(!may_hold_records_since(key, at("2026-12-03T18:00:00Z")));
        assert!(may_hold_records_since("odd/key.jsonl", at("2030-01-01T00:00:00Z")), "an unknown layout is read");
    }
}
