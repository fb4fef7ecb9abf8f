//! The library tour runs to the end on the local platform: the endpoint serves exactly the
//! predictions the same model gives in-process (the example asserts it).

#[test]
fn library_tour_runs_on_local() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_library-tour")).arg("local").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("registered:  tour-clf v1"), "{stdout}");
    assert!(stdout.contains("endpoint:    http://127.0.0.1:"), "{stdout}");
}

#[test]
fn a_platform_not_built_in_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_library-tour")).arg("gcp").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("platform `gcp` is not built into this example"), "{stderr}");
}
