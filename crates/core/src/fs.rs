//! The one durable file write every local store uses (state, endpoint configs, pipeline
//! records, monitor files).

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically and durably: a temp file in the same directory (unique,
/// so concurrent writers never share one), fsync, rename over `path`, fsync the directory so
/// the rename itself survives a power cut. Readers see the old file or the new one, never a
/// part; a failed write leaves no temp file behind. Creates the directory when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = |e: std::io::Error, at: &Path| Error::from(e).operation("write").resource(at.display().to_string());
    std::fs::create_dir_all(dir).map_err(|e| fail(e, dir))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{:016x}", fastrand::u64(..)));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Best effort where directories cannot be opened for syncing.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| fail(e, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("galley-fs-{}", fastrand::u64(..)));
        let path = dir.join("nested").join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let e = write_atomic(&path.join("under-a-file"), b"x").unwrap_err();
        assert!(e.to_string().contains("under-a-file") || e.to_string().contains("state.json"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
