//! Property tests: whatever the input, the loader returns a blueprint or diagnostics located
//! inside the file; it never panics.

mod common;

use common::registry;
use galley_blueprint::{Diagnostics, LoadOptions, load_bytes, load_str};
use proptest::prelude::*;

const QUICKSTART: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints/quickstart.yaml"));
const AWS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints/aws.yaml"));

fn assert_located(source: &str, result: Result<galley_blueprint::Loaded, Diagnostics>) {
    let Err(ds) = result else { return };
    assert!(!ds.is_empty(), "an error without diagnostics");
    let lines = source.split('\n').count();
    for d in ds.items() {
        assert!(d.line >= 1 && d.column >= 1, "{d}");
        assert!(d.line <= lines, "line {} past the end ({lines} lines): {d}", d.line);
        assert!(d.span.offset + d.span.len <= source.len(), "{d}");
        assert!(!d.message.is_empty());
    }
    // Rendering must not panic either.
    let _ = ds.render(false);
}

/// Edits that keep most of the structure, so the checks past parsing get exercised too.
fn mutate(base: &str, at: usize, edit: u8, text: &str) -> String {
    let mut s = base.to_string();
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    match edit % 4 {
        0 => s.insert_str(at, text),
        1 => {
            let mut end = (at + text.len()).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(at..end, "");
        }
        2 => {
            let mut end = (at + text.len()).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(at..end, text);
        }
        _ => {
            // Swap two lines.
            let mut lines: Vec<&str> = base.lines().collect();
            let n = lines.len();
            lines.swap(at % n, text.len() % n);
            s = lines.join("\n");
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        assert_located(&s, load_str("fuzz.yaml", &s, &LoadOptions::default(), &registry()));
    }

    #[test]
    fn yamlish_text_never_panics(s in "[a-z:{}\\[\\]\\-,&*!|>'\" \n\t#$.0-9]{0,300}") {
        assert_located(&s, load_str("fuzz.yaml", &s, &LoadOptions::default(), &registry()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        match load_bytes("fuzz.yaml", &bytes, &LoadOptions::default(), &registry()) {
            Ok(_) => {}
            Err(ds) => {
                for d in ds.items() {
                    prop_assert!(d.line >= 1 && d.column >= 1);
                    prop_assert!(d.line <= shown.split('\n').count());
                }
            }
        }
    }

    #[test]
    fn mutated_blueprints_never_panic(
        which in 0usize..2,
        at in 0usize..5000,
        edit in any::<u8>(),
        text in "[a-z_:{}\\[\\] \n\\-$0-9.]{0,12}",
    ) {
        let base = if which == 0 { QUICKSTART } else { AWS };
        let s = mutate(base, at, edit, &text);
        assert_located(&s, load_str("mutated.yaml", &s, &LoadOptions::default(), &registry()));
    }
}
