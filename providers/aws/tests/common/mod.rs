//! Shared by the moto tests: the emulator's address ([`substrate`]: `scripts/stack up aws`
//! starts moto and prints it), explicit region and static test credentials (so the SDK never
//! probes the instance-metadata address), and fresh bucket names.
#![allow(dead_code)]

use galley_aws::{AwsClients, AwsConfig};

pub const REGION: &str = "us-east-1";
/// A planted secret: tests grep everything Galley wrote for it.
pub const SECRET_KEY: &str = "galleyTESTsecretKEY0nlyF0rM0t0doN0tLeak1234";
pub const ACCESS_KEY: &str = "AKIAGALLEYTESTKEY001";

#[allow(unused_imports)] // not every test binary reaches moto through this path
pub use substrate::moto_url;

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
pub mod events;
pub mod image;
pub mod pipelines;
pub mod sagemaker_runtime;
pub mod substrate;

/// The models behind an endpoint config's variants, by this config's own name (moto ignores
/// `NameContains`, so a listing would see other tests' resources).
#[allow(dead_code)] // not every test binary checks for leaked models
pub async fn config_models(c: &AwsClients, config: &str) -> Vec<String> {
    c.sagemaker
        .describe_endpoint_config()
        .endpoint_config_name(config)
        .send()
        .await
        .unwrap()
        .production_variants()
        .iter()
        .filter_map(|v| v.model_name().map(str::to_owned))
        .collect()
}
