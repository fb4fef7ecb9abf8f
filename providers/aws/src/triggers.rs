//! A pipeline's retraining triggers on AWS's side, so they fire with the laptop closed:
//!
//! - **schedule** → an EventBridge Scheduler schedule `galley-<pipeline>` (the blueprint's cron
//!   in AWS's syntax, [`crate::cron`], UTC, no flexible window) whose templated target starts
//!   the SageMaker pipeline with `trigger=schedule`;
//! - **drift** → a CloudWatch alarm `galley-<pipeline>-drift` on the monitor's
//!   `galley_drift_detected` gauge (`Galley` namespace, `Monitor` dimension, as
//!   [`crate::monitor`] publishes it) and an EventBridge rule of the same name on that alarm's
//!   change to `ALARM`, whose target starts the pipeline with `trigger=drift` and
//!   `force_from=train` (a drift retrain never reuses the cached model). Missing data is
//!   `ignore`d: between two drift checks the alarm keeps its state, so one drift episode starts
//!   one run, and the first check after the retrain (no drift against the new baseline)
//!   clears it. The gauge is published by the drift check, a schedule `galley-<pipeline>-drift-check`
//!   that runs `galley container check-drift` hourly as a Processing job of Galley's image over
//!   what the endpoint captured (and by every `galley status`).
//!
//! Each is created or updated with the pipeline (`upsert_pipeline`), read back into the spec
//! `describe_pipeline` returns (so `plan` shows a schedule changed or deleted outside Galley),
//! and removed before the pipeline is. The targets assume `platforms.aws.role_arn`, which must
//! trust `scheduler.amazonaws.com` and `events.amazonaws.com` besides SageMaker and allow
//! `sagemaker:StartPipelineExecution`, `sagemaker:CreateProcessingJob` and `iam:PassRole` on itself.

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_eventbridge::types::{SageMakerPipelineParameter as RuleParam, SageMakerPipelineParameters as RuleParams, Target as RuleTarget};
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, SageMakerPipelineParameter as ScheduleParam,
    SageMakerPipelineParameters as ScheduleParams, ScheduleState, Target as ScheduleTarget,
};
use galley_core::stages::{DRIFT_DETECTED, PARAM_FORCE_FROM, PARAM_TRIGGER, PipelineSpec, Trigger};
use galley_core::{Error, ErrorKind, Result, Stage};
use sha2::Digest;

use crate::config::AwsClients;
use crate::error::sdk;

/// The id of the drift rule's one target.
const TARGET_ID: &str = "galley-pipeline";

/// `galley-<pipeline><suffix>` within `max` characters: a long pipeline name is cut and a hash
/// of the whole keeps it unique.
fn resource_name(pipeline: &str, suffix: &str, max: usize) -> String {
    let full = format!("galley-{pipeline}{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = hex::encode(&sha2::Sha256::digest(pipeline.as_bytes())[..4]);
    let keep = max - "galley-".len() - suffix.len() - hash.len() - 1;
    format!("galley-{}-{hash}{suffix}", &pipeline[..keep])
}

/// The EventBridge Scheduler schedule of `pipeline` (names: 1-64 of `[0-9a-zA-Z-_.]`).
pub fn schedule_name(pipeline: &str) -> String {
    resource_name(pipeline, "", 64)
}

/// The CloudWatch alarm and the EventBridge rule (64 at most) of `pipeline`'s drift trigger.
pub fn drift_name(pipeline: &str) -> String {
    resource_name(pipeline, "-drift", 64)
}

/// The schedule of `pipeline`'s drift check.
pub fn drift_check_name(pipeline: &str) -> String {
    resource_name(pipeline, "-drift-check", 64)
}

/// How often the drift check runs.
pub const DRIFT_CHECK_RATE: &str = "rate(1 hour)";

/// EventBridge Scheduler's universal target for SageMaker's CreateProcessingJob.
pub const CREATE_PROCESSING_JOB: &str = "arn:aws:scheduler:::aws-sdk:sagemaker:createProcessingJob";

/// What the drift check's Processing job runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftCheck {
    pub image: String,
    pub instance_type: String,
    /// The pipeline's current run bundle, which `galley run` keeps up to date.
    pub bundle_uri: String,
    pub region: String,
}

/// The EventBridge pattern of `alarm` entering `ALARM` (CloudWatch's documented event).
pub fn drift_pattern(alarm: &str) -> String {
    serde_json::json!({
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "detail": {"alarmName": [alarm], "state": {"value": ["ALARM"]}},
    })
    .to_string()
}

/// The AWS resources `spec`'s triggers consist of, as `plan` shows them: an apply creates
/// each, a console deletion makes it disappear from the list `describe_pipeline` reads back.
pub fn owned(spec: &PipelineSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cron) = &spec.schedule {
        let expression = crate::cron::aws_cron(cron).unwrap_or_else(|_| cron.clone());
        out.push(format!("EventBridge Scheduler schedule {} ({expression})", schedule_name(&spec.name)));
    }
    if spec.triggers.contains(&Trigger::Drift) && spec.monitor.is_some() {
        let name = drift_name(&spec.name);
        out.push(format!("CloudWatch alarm {name}"));
        out.push(format!("EventBridge rule {name}"));
        out.push(format!("EventBridge Scheduler schedule {} ({DRIFT_CHECK_RATE})", drift_check_name(&spec.name)));
    }
    out
}

/// What AWS holds for a pipeline's triggers, read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registered {
    /// The schedule's expression, when a schedule starts this pipeline.
    pub schedule: Option<String>,
    /// The monitor whose alarm starts this pipeline, when the alarm and its rule are whole.
    pub drift_monitor: Option<String>,
}

pub struct PipelineTriggers<'a> {
    pub clients: &'a AwsClients,
}

impl PipelineTriggers<'_> {
    /// Makes AWS hold exactly `spec`'s triggers for the pipeline at `pipeline_arn`.
    pub async fn apply(&self, spec: &PipelineSpec, pipeline_arn: &str, role: &str, check: Option<&DriftCheck>) -> Result<()> {
        match &spec.schedule {
            Some(cron) => self.put_schedule(&spec.name, cron, pipeline_arn, role).await?,
            None => self.delete_schedule(&schedule_name(&spec.name)).await?,
        }
        match (spec.triggers.contains(&Trigger::Drift), &spec.monitor) {
            (true, Some(monitor)) => {
                let check = check.ok_or_else(|| {
                    Error::invalid(format!(
                        "pipeline `{}`: `retrain_on: drift` on aws checks drift in a scheduled job of Galley's image, and the blueprint names none; set `stages.training.image`",
                        spec.name
                    ))
                })?;
                self.put_drift(&spec.name, monitor, pipeline_arn, role).await?;
                self.put_drift_check(&spec.name, check, role).await
            }
            (true, None) => Err(Error::invalid(format!(
                "pipeline `{}`: `retrain_on: drift` needs the monitor whose drift starts it (a monitoring stage)",
                spec.name
            ))),
            (false, _) => self.delete_drift(&spec.name).await,
        }
    }

    pub async fn read(&self, pipeline: &str, pipeline_arn: &str) -> Result<Registered> {
        Ok(Registered { schedule: self.read_schedule(pipeline, pipeline_arn).await?, drift_monitor: self.read_drift(pipeline, pipeline_arn).await? })
    }

    pub async fn remove(&self, pipeline: &str) -> Result<()> {
        self.delete_schedule(&schedule_name(pipeline)).await?;
        self.delete_drift(pipeline).await
    }

    async fn put_schedule(&self, pipeline: &str, cron: &str, pipeline_arn: &str, role: &str) -> Result<()> {
        let expression = crate::cron::aws_cron(cron).map_err(|why| Error::invalid(format!("pipeline `{pipeline}`: schedule {why}")))?;
        let params = ScheduleParams::builder()
            .pipeline_parameter_list(ScheduleParam::builder().name(PARAM_TRIGGER).value(Trigger::Schedule.as_str()).build().map_err(build)?)
            .build();
        let target = ScheduleTarget::builder().arn(pipeline_arn).role_arn(role).sage_maker_pipeline_parameters(params);
        let description = format!("galley: runs pipeline `{pipeline}` on `{cron}` (UTC)");
        self.put(&schedule_name(pipeline), &expression, target, description).await
    }

    /// The drift check: every [`DRIFT_CHECK_RATE`] a Processing job of Galley's image runs
    /// `galley container check-drift` on the pipeline's current bundle, publishing the gauge
    /// the alarm watches (EventBridge Scheduler's universal target for CreateProcessingJob; the
    /// job is named after the invocation, so a retried invocation does not start a second).
    async fn put_drift_check(&self, pipeline: &str, check: &DriftCheck, role: &str) -> Result<()> {
        let input = serde_json::json!({
            "ProcessingJobName": "galley-drift-<aws.scheduler.execution-id>",
            "RoleArn": role,
            "AppSpecification": {"ImageUri": check.image, "ContainerArguments": ["check-drift", "--bundle", check.bundle_uri]},
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": check.instance_type, "VolumeSizeInGB": 30}},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "Environment": {"AWS_REGION": check.region},
        });
        let target = ScheduleTarget::builder().arn(CREATE_PROCESSING_JOB).role_arn(role).input(input.to_string());
        let description = format!("galley: checks the drift that retrains pipeline `{pipeline}`");
        self.put(&drift_check_name(pipeline), DRIFT_CHECK_RATE, target, description).await
    }

    /// Creates or updates one schedule (UTC, no flexible window, enabled).
    async fn put(&self, name: &str, expression: &str, target: aws_sdk_scheduler::types::builders::TargetBuilder, description: String) -> Result<()> {
        // A start that could not happen (throttling) is retried for an hour, not a day.
        let target = target.retry_policy(RetryPolicy::builder().maximum_event_age_in_seconds(3600).maximum_retry_attempts(3).build()).build().map_err(build)?;
        let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().map_err(build)?;
        let c = &self.clients.scheduler;
        if self.get_schedule(name).await?.is_some() {
            c.update_schedule()
                .name(name)
                .schedule_expression(expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window)
                .target(target)
                .state(ScheduleState::Enabled)
                .description(description)
                .action_after_completion(ActionAfterCompletion::None)
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "UpdateSchedule", name))?;
        } else {
            c.create_schedule()
                .name(name)
                .schedule_expression(expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window)
                .target(target)
                .state(ScheduleState::Enabled)
                .description(description)
                .action_after_completion(ActionAfterCompletion::None)
                .client_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "CreateSchedule", name))?;
        }
        Ok(())
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput>> {
        match self.clients.scheduler.get_schedule().name(name).send().await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                let e = sdk(Stage::Pipeline, "GetSchedule", name)(e);
                if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn read_schedule(&self, pipeline: &str, pipeline_arn: &str) -> Result<Option<String>> {
        let name = schedule_name(pipeline);
        let Some(s) = self.get_schedule(&name).await? else { return Ok(None) };
        // A schedule of that name starting something else is not this pipeline's.
        let ours = s.target().is_some_and(|t| t.arn() == pipeline_arn) && s.state() != Some(&ScheduleState::Disabled);
        Ok(ours.then(|| s.schedule_expression().unwrap_or_default().to_owned()))
    }

    async fn delete_schedule(&self, name: &str) -> Result<()> {
        match self.clients.scheduler.delete_schedule().name(name).client_token(uuid::Uuid::new_v4().to_string()).send().await {
            Ok(_) => Ok(()),
            Err(e) => gone_is_fine(sdk(Stage::Pipeline, "DeleteSchedule", name)(e)),
        }
    }

    async fn put_drift(&self, pipeline: &str, monitor: &str, pipeline_arn: &str, role: &str) -> Result<()> {
        let name = drift_name(pipeline);
        self.clients
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&name)
            .alarm_description(format!("galley: monitor `{monitor}` reports drift; its rule starts pipeline `{pipeline}`"))
            .namespace(crate::monitor::NAMESPACE)
            .metric_name(crate::monitor::metric_name(DRIFT_DETECTED))
            .dimensions(Dimension::builder().name("Monitor").value(monitor).build())
            .statistic(Statistic::Maximum)
            .period(300)
            .evaluation_periods(1)
            .threshold(0.5)
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .treat_missing_data("ignore")
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "PutMetricAlarm", &name))?;
        self.clients
            .events
            .put_rule()
            .name(&name)
            .event_pattern(drift_pattern(&name))
            .state(aws_sdk_eventbridge::types::RuleState::Enabled)
            .description(format!("galley: retrains pipeline `{pipeline}` when alarm `{name}` fires"))
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "PutRule", &name))?;
        let param = |n: &str, v: &str| RuleParam::builder().name(n).value(v).build().map_err(build);
        let params = RuleParams::builder()
            .pipeline_parameter_list(param(PARAM_TRIGGER, Trigger::Drift.as_str())?)
            .pipeline_parameter_list(param(PARAM_FORCE_FROM, "train")?)
            .build();
        let target = RuleTarget::builder().id(TARGET_ID).arn(pipeline_arn).role_arn(role).sage_maker_pipeline_parameters(params).build().map_err(build)?;
        let out = self
            .clients
            .events
            .put_targets()
            .rule(&name)
            .targets(target)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "PutTargets", &name))?;
        if out.failed_entry_count() > 0 {
            let why: Vec<String> = out.failed_entries().iter().map(|f| format!("{}: {}", f.error_code().unwrap_or("?"), f.error_message().unwrap_or(""))).collect();
            return Err(Error::conflict(format!("EventBridge refused the target of rule `{name}`: {}", why.join("; "))));
        }
        Ok(())
    }

    async fn read_drift(&self, pipeline: &str, pipeline_arn: &str) -> Result<Option<String>> {
        let name = drift_name(pipeline);
        let alarms = self
            .clients
            .cloudwatch
            .describe_alarms()
            .alarm_names(&name)
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "DescribeAlarms", &name))?;
        let Some(alarm) = alarms.metric_alarms().first() else { return Ok(None) };
        let monitor = alarm.dimensions().iter().find(|d| d.name() == Some("Monitor")).and_then(|d| d.value()).map(str::to_owned);
        match self.clients.events.describe_rule().name(&name).send().await {
            Ok(r) if r.state() == Some(&aws_sdk_eventbridge::types::RuleState::Enabled) => {}
            Ok(_) => return Ok(None),
            Err(e) => {
                let e = sdk(Stage::Pipeline, "DescribeRule", &name)(e);
                return if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) };
            }
        }
        let targets = self
            .clients
            .events
            .list_targets_by_rule()
            .rule(&name)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "ListTargetsByRule", &name))?;
        let starts_us = targets.targets().iter().any(|t| t.arn() == pipeline_arn);
        // Without its scheduled check nothing publishes the gauge: the trigger is not whole.
        let checked = self.get_schedule(&drift_check_name(pipeline)).await?.is_some_and(|s| s.state() != Some(&ScheduleState::Disabled));
        Ok(monitor.filter(|_| starts_us && checked))
    }

    async fn delete_drift(&self, pipeline: &str) -> Result<()> {
        self.delete_schedule(&drift_check_name(pipeline)).await?;
        let name = drift_name(pipeline);
        let events = &self.clients.events;
        if let Err(e) = events.remove_targets().rule(&name).ids(TARGET_ID).send().await {
            gone_is_fine(sdk(Stage::Pipeline, "RemoveTargets", &name)(e))?;
        }
        if let Err(e) = events.delete_rule().name(&name).send().await {
            gone_is_fine(sdk(Stage::Pipeline, "DeleteRule", &name)(e))?;
        }
        self.clients
            .cloudwatch
            .delete_alarms()
            .alarm_names(&name)
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "DeleteAlarms", &name))?;
        Ok(())
    }
}

fn gone_is_fine(e: Error) -> Result<()> {
    if e.kind() == ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

fn build(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("building an EventBridge request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_eventbridge_and_stay_unique() {
        assert_eq!(schedule_name("wine-retrain"), "galley-wine-retrain");
        assert_eq!(drift_name("wine-retrain"), "galley-wine-retrain-drift");
        let long = "p".repeat(100);
        let (a, b) = (drift_name(&long), drift_name(&format!("{long}x")));
        assert!(a.len() <= 64 && b.len() <= 64 && a != b, "{a} {b}");
        assert!(a.ends_with("-drift") && schedule_name(&long).len() == 64);
    }
}
