//! Where the aws tests find their substrate: moto's server, started by `scripts/stack up aws`
//! (which `scripts/test` and `.ci/run` call), at `GALLEY_TEST_MOTO_URL`.
//!
//! A test that needs moto and finds no URL fails, saying how to start it: a green run without
//! the emulator would be a lie. Opting out is explicit — `GALLEY_TEST_SKIP=aws` — and every
//! test skipped that way is appended to `GALLEY_TEST_SKIP_LOG`, which `scripts/test` prints at
//! the end of the run, so the skips are visible, not buried in captured output.
#![allow(dead_code)]

/// The moto URL, or `None` when the run opted out of the aws substrate (the skip recorded).
pub fn moto_url() -> Option<String> {
    if let Ok(url) = std::env::var("GALLEY_TEST_MOTO_URL")
        && !url.trim().is_empty()
    {
        return Some(url.trim().trim_end_matches('/').to_owned());
    }
    let test = std::thread::current().name().unwrap_or("an aws test").to_owned();
    let opted_out = std::env::var("GALLEY_TEST_SKIP").is_ok_and(|s| s.split(',').any(|p| p.trim() == "aws"));
    if !opted_out {
        panic!(
            "{test} needs moto (the aws platform's test substrate) and GALLEY_TEST_MOTO_URL is not set.\n\
             Start it with `eval \"$(scripts/stack up aws)\"` (stop it with `scripts/stack down aws`), or run \
             everything with `scripts/test`. To skip the aws tests on purpose, set GALLEY_TEST_SKIP=aws."
        );
    }
    println!("SKIPPED (GALLEY_TEST_SKIP=aws): {test}");
    if let Ok(log) = std::env::var("GALLEY_TEST_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "aws: {test}");
        }
    }
    None
}
