//! Galley's image here: built from a galley binary by `providers/aws/scripts/image` (buildah,
//! FROM scratch) and run by podman with the settings that work on this machine (runc; no
//! default ulimits; cgroupfs). Shared by the CLI's container and moto tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// podman, configured.
#[derive(Clone)]
pub struct Podman {
    conf: Arc<tempfile::NamedTempFile>,
}

/// An image built for one test, removed when dropped.
pub struct Image {
    pub tag: String,
    podman: Podman,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = self.podman.command().args(["rmi", "-f", &self.tag]).output();
    }
}

impl Podman {
    /// podman and the tools around it, or a loud failure saying how to get them; `None` only
    /// when the image tests are skipped on purpose (`GALLEY_TEST_SKIP=image`, or `aws`).
    pub fn find() -> Option<Podman> {
        let skip = std::env::var("GALLEY_TEST_SKIP").unwrap_or_default();
        if skip.split(',').any(|p| matches!(p.trim(), "aws" | "image")) {
            println!("SKIPPED (GALLEY_TEST_SKIP={skip}): {}", std::thread::current().name().unwrap_or("an image test"));
            return None;
        }
        for tool in ["buildah", "podman", "runc", "skopeo", "docker-registry"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
            assert!(
                found,
                "this test needs `{tool}`: apt-get install -y buildah podman runc skopeo docker-registry \
                 (`scripts/stack up aws` installs them), or skip the image tests on purpose with GALLEY_TEST_SKIP=image"
            );
        }
        let conf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(conf.path(), "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\n").unwrap();
        Some(Podman { conf: Arc::new(conf) })
    }

    /// `podman` with the storage and runtime the image was built for.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path()).args(["--storage-driver", "vfs", "--runtime", "runc"]);
        c
    }

    /// The same, as a Tokio command (a step the pipeline stand-in runs and may stop).
    pub fn tokio_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path()).args(["--storage-driver", "vfs", "--runtime", "runc"]);
        c
    }

    /// Runs podman with `args`: its stdout, or a failure with its stderr.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Galley's image built from `binary` under a tag no other test uses.
    pub fn build(&self, binary: &Path) -> Image {
        let tag = format!("localhost/galley-test:{}", uuid::Uuid::new_v4().simple());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../providers/aws/scripts/image");
        let built = Command::new(&script).arg(binary).arg(&tag).output().unwrap();
        assert!(built.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&built.stderr));
        Image { tag, podman: self.clone() }
    }
}
