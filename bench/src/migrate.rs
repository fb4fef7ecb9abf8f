//! Migration's artifact copy, the Galley side of the rclone comparison: every file of a
//! directory put into a local artifact store (untimed set-up), then copied by
//! `galley_migrate::copy_objects` (streamed, SHA-256 checked, journalled, 8 at once) into an S3
//! bucket on moto, and back from S3 into a fresh local store. rclone copies the same files
//! between the same directory and another bucket on the same moto (`bench/run`).

use std::path::Path;
use std::time::Instant;

use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt};
use galley_core::{Error, Result};
use serde_json::{Value, json};

pub async fn run(files: &Path, work: &Path, moto: &str, bucket: &str) -> Result<Value> {
    let source = galley_local::artifacts::LocalArtifacts::open(work.join("galley-source"))?;
    let mut stack = vec![files.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let key = path.strip_prefix(files).map_err(|e| Error::internal(e.to_string()))?.to_string_lossy().into_owned();
            source.put_bytes(&ArtifactKey::new(key)?, std::fs::read(&path)?.into()).await?;
        }
    }
    let clients = galley_aws::AwsClients::connect(&galley_aws::AwsConfig::emulator(moto, "us-east-1", "testing", "testing")).await?;
    clients.s3.create_bucket().bucket(bucket).send().await.map_err(|e| Error::new(galley_core::ErrorKind::Unavailable, format!("creating bucket {bucket} on {moto}: {e}")))?;
    let s3 = galley_aws::S3Artifacts::new(clients.s3.clone(), bucket);

    let bytes: u64 = source.list("").await?.iter().map(|o| o.size).sum();
    let up = timed_copy(&source, &s3, &work.join("up.jsonl")).await?;
    let back = galley_local::artifacts::LocalArtifacts::open(work.join("galley-back"))?;
    let down = timed_copy(&s3, &back, &work.join("down.jsonl")).await?;
    let rate = |s: f64| json!({ "seconds": s, "mb_per_s": bytes as f64 / 1e6 / s });
    Ok(json!({ "objects": up.1, "bytes": bytes, "local_to_s3": rate(up.0), "s3_to_local": rate(down.0) }))
}

/// Seconds to list `from` and copy all of it into `to` (rclone's timing includes its listing
/// too), and how many objects.
async fn timed_copy(from: &dyn ArtifactStore, to: &dyn ArtifactStore, journal: &Path) -> Result<(f64, usize)> {
    let mut journal = galley_migrate::Journal::open(journal)?;
    let t = Instant::now();
    let objects = from.list("").await?;
    let (_, done) = galley_migrate::copy_objects(from, to, &objects, &mut journal, 8).await?;
    let seconds = t.elapsed().as_secs_f64();
    if done.copied as usize != objects.len() {
        return Err(Error::internal(format!("copied {} of {} objects", done.copied, objects.len())));
    }
    Ok((seconds, objects.len()))
}
