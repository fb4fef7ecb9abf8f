//! Autoscaling of SageMaker endpoint variants through Application Auto Scaling. Each variant is
//! a scalable target (`endpoint/NAME/variant/VARIANT`, dimension
//! `sagemaker:variant:DesiredInstanceCount`) with one target-tracking policy on SageMaker's
//! predefined `SageMakerVariantInvocationsPerInstance` metric (invocations per instance per
//! minute), which is what [`Scaling::requests_per_minute`] means.
//!
//! SageMaker refuses an UpdateEndpoint that removes a scaled variant or changes its instance
//! type, and scaling is held while an endpoint updates anyway, so serving follows SageMaker's
//! documented procedure: [`remove`] before moving the endpoint to another config, [`apply`]
//! once it is back in service.
//!
//! Reads ask for the variants' own resource ids and keep only exact matches (moto matches a
//! policy's resource id by substring: `…/variant/v1` would also find `…/variant/v10`).

use aws_sdk_applicationautoscaling::Client;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace, TargetTrackingScalingPolicyConfiguration,
};
use galley_core::stages::Scaling;
use galley_core::{Error, Result, Stage};

use crate::error::sdk;

/// The one policy Galley puts on each variant; a policy of another name is not Galley's.
pub const POLICY_NAME: &str = "galley-invocations-per-instance";

fn dimension() -> ScalableDimension {
    ScalableDimension::SageMakerVariantDesiredInstanceCount
}

/// Application Auto Scaling's id of one variant of an endpoint.
pub fn resource_id(endpoint: &str, variant: &str) -> String {
    format!("endpoint/{endpoint}/variant/{variant}")
}

fn capacity(n: u32, endpoint: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::invalid(format!("endpoint `{endpoint}`: {n} instances is more than Application Auto Scaling takes")))
}

/// Registers each variant as a scalable target between the bounds and puts its target-tracking
/// policy; both calls update what is already there, so a repeat is harmless. The bounds are the
/// caller's to check ([`Scaling::check`]) before anything changes.
pub async fn apply(client: &Client, endpoint: &str, variants: &[String], scaling: &Scaling) -> Result<()> {
    for variant in variants {
        let id = resource_id(endpoint, variant);
        client
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_id(&id)
            .scalable_dimension(dimension())
            .min_capacity(capacity(scaling.min_instances, endpoint)?)
            .max_capacity(capacity(scaling.max_instances, endpoint)?)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "RegisterScalableTarget", &id))?;
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::SageMakerVariantInvocationsPerInstance)
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        let config = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(scaling.requests_per_minute)
            .predefined_metric_specification(metric)
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        client
            .put_scaling_policy()
            .policy_name(POLICY_NAME)
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_id(&id)
            .scalable_dimension(dimension())
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "PutScalingPolicy", &id))?;
    }
    Ok(())
}

/// Deletes Galley's policy and deregisters the target of each variant that has them; a variant
/// without either is left as it is.
pub async fn remove(client: &Client, endpoint: &str, variants: &[String]) -> Result<()> {
    for (variant, found) in read_each(client, endpoint, variants).await? {
        let id = resource_id(endpoint, &variant);
        if found.policy.is_some() {
            client
                .delete_scaling_policy()
                .policy_name(POLICY_NAME)
                .service_namespace(ServiceNamespace::Sagemaker)
                .resource_id(&id)
                .scalable_dimension(dimension())
                .send()
                .await
                .map_err(sdk(Stage::Serving, "DeleteScalingPolicy", &id))?;
        }
        if found.target.is_some() {
            client
                .deregister_scalable_target()
                .service_namespace(ServiceNamespace::Sagemaker)
                .resource_id(&id)
                .scalable_dimension(dimension())
                .send()
                .await
                .map_err(sdk(Stage::Serving, "DeregisterScalableTarget", &id))?;
        }
    }
    Ok(())
}

/// The scaling every one of `variants` has, as Application Auto Scaling holds it; `None` when
/// any lacks its target or Galley's policy, or when they differ.
pub async fn read(client: &Client, endpoint: &str, variants: &[String]) -> Result<Option<Scaling>> {
    if variants.is_empty() {
        return Ok(None);
    }
    let mut common: Option<Scaling> = None;
    for (_, found) in read_each(client, endpoint, variants).await? {
        let (Some((min, max)), Some(target)) = (found.target, found.policy) else { return Ok(None) };
        let this = Scaling { min_instances: min, max_instances: max, requests_per_minute: target };
        match &common {
            Some(c) if *c != this => return Ok(None),
            _ => common = Some(this),
        }
    }
    Ok(common)
}

/// One variant's registration: its target's bounds and Galley's policy's target value.
#[derive(Default)]
struct Found {
    target: Option<(u32, u32)>,
    policy: Option<f64>,
}

async fn read_each(client: &Client, endpoint: &str, variants: &[String]) -> Result<Vec<(String, Found)>> {
    // No resource ids would ask for every target in the account.
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = variants.iter().map(|v| resource_id(endpoint, v)).collect();
    let mut targets = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Sagemaker)
            .set_resource_ids(Some(ids.clone()))
            .scalable_dimension(dimension())
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "DescribeScalableTargets", endpoint))?;
        targets.extend(page.scalable_targets().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    for (variant, id) in variants.iter().zip(&ids) {
        let mut found = Found::default();
        if let Some(t) = targets.iter().find(|t| t.resource_id() == id) {
            found.target = Some((t.min_capacity().max(0) as u32, t.max_capacity().max(0) as u32));
        }
        let policies = client
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_id(id)
            .scalable_dimension(dimension())
            .policy_names(POLICY_NAME)
            .send()
            .await
            .map_err(sdk(Stage::Serving, "DescribeScalingPolicies", id))?;
        found.policy = policies
            .scaling_policies()
            .iter()
            .find(|p| p.resource_id() == id && p.policy_name() == POLICY_NAME)
            .and_then(|p| p.target_tracking_scaling_policy_configuration())
            .map(|c| c.target_value());
        out.push((variant.clone(), found));
    }
    Ok(out)
}
