//! Blueprint language: YAML parsing with source spans, validation with located diagnostics, JSON Schema.
