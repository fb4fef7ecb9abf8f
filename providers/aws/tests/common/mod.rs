//! Shared by the moto tests: the emulator's address from `GALLEY_TEST_MOTO_URL` (CI's `.ci/run`
//! starts moto and sets it), explicit region and static test credentials (so the SDK never
//! probes the instance-metadata address), and fresh bucket names.
#![allow(dead_code)]

use galley_aws::{AwsClients, AwsConfig};

pub const REGION: &str = "us-east-1";
/// A planted secret: tests grep everything Galley wrote for it.
pub const SECRET_KEY: &str = "galleyTESTsecretKEY0nlyF0rM0t0doN0tLeak1234";
pub const ACCESS_KEY: &str = "AKIAGALLEYTESTKEY001";

/// The moto URL, or `None` (with the reason printed) when the tests should skip.
pub fn moto_url() -> Option<String> {
    match std::env::var("GALLEY_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            println!("SKIPPED: GALLEY_TEST_MOTO_URL is not set (CI's .ci/run starts moto and sets it; locally: `moto_server -H 127.0.0.1 -p 5055` and GALLEY_TEST_MOTO_URL=http://127.0.0.1:5055)");
            None
        }
    }
}

/// moto never throttles: two attempts keep its 500s for unimplemented operations quick.
pub fn config(url: &str) -> AwsConfig {
    AwsConfig::emulator(url, REGION, ACCESS_KEY, SECRET_KEY).with_retry(galley_core::RetryPolicy {
        max_attempts: 2,
        base_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(100),
    })
}

pub async fn clients(url: &str) -> AwsClients {
    AwsClients::connect(&config(url)).await.expect("connect to moto")
}

/// A bucket name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub async fn fresh_bucket(c: &AwsClients) -> String {
    let name = unique("galley-test");
    c.s3.create_bucket().bucket(&name).send().await.expect("create bucket on moto");
    name
}
pub mod scripted;
pub mod botocore;
pub mod job_runtime;
