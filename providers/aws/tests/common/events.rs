//! The firing half of EventBridge Scheduler, CloudWatch alarms and EventBridge rules, which
//! moto stores but never runs: moto keeps schedules, alarms, rules and targets as Galley put
//! them, and this stand-in does with them what AWS does when time passes or a metric arrives.
//!
//! - [`AwsEvents::pass_time`]: every schedule whose target is the pipeline (ListSchedules,
//!   GetSchedule) is evaluated by its own expression, in AWS's cron dialect (six fields with a
//!   year, weekdays 1-7 from Sunday, `?` in exactly one day field), with croner configured that
//!   way, independently of Galley's translation; each due time starts the pipeline with the
//!   target's parameters (StartPipelineExecution), as the templated SageMaker target does.
//!   A schedule whose target is SageMaker's CreateProcessingJob (the drift check) sends its
//!   input, with Scheduler's context attributes filled in, to the runtime stand-in, which runs
//!   the job's container.
//! - [`AwsEvents::drift_verdict`]: the monitor's gauge goes to CloudWatch through Galley's own
//!   publisher; every alarm on that metric (DescribeAlarmsForMetric) is evaluated over the data
//!   since its last evaluation (GetMetricStatistics with the alarm's statistic, its threshold,
//!   operator and missing-data rule); a change of state is recorded (SetAlarmState) and sent
//!   as CloudWatch's documented "Alarm State Change" event to the default bus, where every rule
//!   whose pattern matches it starts its SageMaker targets. moto 5.1.22 does not implement
//!   TestEventPattern (it answers `false` to everything), so [`matches`] applies EventBridge's
//!   documented matching here: exact values, nested fields, arrays as any-of.
//!
//! What moto does not check, this does where AWS would refuse: a cron without exactly one `?`
//! day field, a SageMaker target without a role.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use galley_aws::AwsClients;
use galley_aws::triggers::CREATE_PROCESSING_JOB;
use galley_core::stages::{DRIFT_DETECTED, Gauge, Monitor, TimestampMs};

/// The region moto's ARNs name.
const REGION: &str = "us-east-1";

#[derive(Debug)]
pub struct AwsEvents {
    /// Straight to moto: what AWS's own services do is not Galley's traffic.
    c: AwsClients,
    monitor: galley_aws::AwsMonitor,
    /// When each alarm was last evaluated.
    evaluated: Mutex<HashMap<String, galley_aws::sdk::smithy_types::DateTime>>,
    /// Where a schedule's CreateProcessingJob goes to run (the runtime stand-in's URL).
    jobs_endpoint: Option<String>,
}

impl AwsEvents {
    pub fn new(c: AwsClients, monitor: galley_aws::AwsMonitor) -> AwsEvents {
        AwsEvents { c, monitor, evaluated: Mutex::default(), jobs_endpoint: None }
    }

    /// Processing jobs the schedules start run behind `url` (the SageMaker runtime stand-in).
    pub fn running_jobs_at(mut self, url: &str) -> AwsEvents {
        self.jobs_endpoint = Some(url.to_owned());
        self
    }

    async fn pipeline_arn(&self, pipeline: &str) -> anyhow::Result<String> {
        let d = self.c.sagemaker.describe_pipeline().pipeline_name(pipeline).send().await?;
        d.pipeline_arn().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("DescribePipeline {pipeline}: no ARN"))
    }

    /// Starts the pipeline a SageMaker target names, with the target's parameters.
    async fn start(&self, pipeline_arn: &str, params: Vec<(String, String)>) -> anyhow::Result<()> {
        let name = pipeline_arn
            .split_once(":pipeline/")
            .map(|(_, n)| n.to_owned())
            .ok_or_else(|| anyhow::anyhow!("target `{pipeline_arn}` is not a SageMaker pipeline ARN"))?;
        let params = params.into_iter().map(|(n, v)| galley_aws::sdk::sagemaker::types::Parameter::builder().name(n).value(v).build()).collect();
        self.c
            .sagemaker
            .start_pipeline_execution()
            .pipeline_name(name)
            .set_pipeline_parameters(Some(params))
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await?;
        Ok(())
    }
}

/// The times in (`from`, `to`] an EventBridge Scheduler expression is due: `cron(...)` in AWS's
/// dialect, or `rate(N unit)` (counted here from the epoch; AWS counts from the schedule's
/// creation, which moves every due time by the same offset).
fn due_times(expression: &str, from: TimestampMs, to: TimestampMs) -> anyhow::Result<Vec<TimestampMs>> {
    if let Some(rate) = expression.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let (n, unit) = rate.split_once(' ').ok_or_else(|| anyhow::anyhow!("`{expression}`: rate(N unit)"))?;
        let n: i64 = n.parse()?;
        let unit_ms = match unit.trim_end_matches('s') {
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            _ => anyhow::bail!("EventBridge Scheduler would refuse `{expression}`: the unit is minutes, hours or days"),
        };
        anyhow::ensure!(n > 0 && (n == 1) != unit.ends_with('s'), "EventBridge Scheduler would refuse `{expression}`: `1 hour`, `2 hours`");
        let every = n * unit_ms;
        return Ok(((from / every + 1)..=(to / every)).map(|k| k * every).collect());
    }
    let cron = aws_cron(expression)?;
    let mut out = Vec::new();
    let mut at = utc(from);
    while let Ok(next) = cron.find_next_occurrence(&at, false) {
        if next > utc(to) {
            break;
        }
        out.push(next.timestamp_millis());
        at = next;
    }
    Ok(out)
}

/// An AWS `cron(...)` expression as croner reads AWS's dialect.
fn aws_cron(expression: &str) -> anyhow::Result<croner::Cron> {
    let inner = expression
        .strip_prefix("cron(")
        .and_then(|e| e.strip_suffix(')'))
        .ok_or_else(|| anyhow::anyhow!("`{expression}`: the stand-in evaluates cron(...) expressions only"))?;
    let fields: Vec<&str> = inner.split_whitespace().collect();
    anyhow::ensure!(fields.len() == 6, "EventBridge Scheduler would refuse `{expression}`: cron takes six fields, not {}", fields.len());
    anyhow::ensure!(
        (fields[2] == "?") != (fields[4] == "?"),
        "EventBridge Scheduler would refuse `{expression}`: exactly one of day-of-month and day-of-week must be `?`"
    );
    use croner::parser::{CronParser, Seconds, Year};
    let parser = CronParser::builder().seconds(Seconds::Required).year(Year::Required).alternative_weekdays(true).sloppy_ranges(true).build();
    parser.parse(&format!("0 {inner}")).map_err(|e| anyhow::anyhow!("EventBridge Scheduler would refuse `{expression}`: {e}"))
}

fn utc(ms: TimestampMs) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).expect("a time in range")
}

impl AwsEvents {
    /// EventBridge Scheduler's clock from `from` (exclusive) to `to`: each due time of every
    /// schedule that starts `pipeline` starts it.
    pub async fn pass_time(&self, pipeline: &str, from: TimestampMs, to: TimestampMs) -> anyhow::Result<()> {
        let arn = self.pipeline_arn(pipeline).await?;
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self.c.scheduler.list_schedules().set_next_token(token).send().await?;
            for s in page.schedules() {
                if s.target().is_some_and(|t| t.arn() == arn || t.arn() == CREATE_PROCESSING_JOB) {
                    names.push((s.name().unwrap_or_default().to_owned(), s.group_name().unwrap_or("default").to_owned()));
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for (name, group) in names {
            let s = self.c.scheduler.get_schedule().name(&name).group_name(&group).send().await?;
            if s.state().map(|x| x.as_str()) == Some("DISABLED") {
                continue;
            }
            anyhow::ensure!(s.schedule_expression_timezone().unwrap_or("UTC") == "UTC", "the stand-in evaluates UTC schedules only");
            let target = s.target().ok_or_else(|| anyhow::anyhow!("schedule {name} has no target"))?;
            anyhow::ensure!(target.role_arn().starts_with("arn:aws:iam::"), "schedule {name}: its target must name a role Scheduler assumes");
            let due = due_times(s.schedule_expression().unwrap_or_default(), from, to)?;
            if target.arn() == CREATE_PROCESSING_JOB {
                // Another pipeline's job is not this pipeline's to run: its input names its bundle.
                let input = target.input().unwrap_or_default();
                if !input.contains(&format!("/pipelines/{pipeline}/")) {
                    continue;
                }
                for _ in due {
                    self.create_processing_job(input).await?;
                }
                continue;
            }
            let params: Vec<(String, String)> = target
                .sage_maker_pipeline_parameters()
                .map(|p| p.pipeline_parameter_list().iter().map(|x| (x.name().to_owned(), x.value().to_owned())).collect())
                .unwrap_or_default();
            for _ in due {
                self.start(&arn, params.clone()).await?;
            }
        }
        Ok(())
    }

    /// A universal CreateProcessingJob target's invocation: its input with Scheduler's context
    /// attributes filled in, sent where SageMaker's jobs run (the runtime stand-in).
    async fn create_processing_job(&self, input: &str) -> anyhow::Result<()> {
        let url = self.jobs_endpoint.as_deref().ok_or_else(|| anyhow::anyhow!("a schedule starts a Processing job, and this stand-in was given nowhere to run one"))?;
        let body = input.replace("<aws.scheduler.execution-id>", &uuid::Uuid::new_v4().to_string());
        let request: serde_json::Value = serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("the schedule's input is not JSON ({e}): {input}"))?;
        let answer = reqwest::Client::new()
            .post(url)
            .header("x-amz-target", "SageMaker.CreateProcessingJob")
            .header("content-type", "application/x-amz-json-1.1")
            // moto reads the region from the credential scope.
            .header("authorization", format!("AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/sagemaker/aws4_request, SignedHeaders=host, Signature=0"))
            .body(request.to_string())
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "CreateProcessingJob: {} {}", answer.status(), answer.text().await.unwrap_or_default());
        Ok(())
    }

    /// `monitor` publishes its verdict through Galley's own publisher, and CloudWatch evaluates
    /// the alarms on it.
    pub async fn drift_verdict(&self, monitor: &str, drifted: bool) -> anyhow::Result<()> {
        // Each verdict in a second of its own: moto reads metric times to the second.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let gauge = Gauge::new(DRIFT_DETECTED, "1 on drift", if drifted { 1.0 } else { 0.0 });
        self.monitor.publish(monitor, &[gauge]).await?;
        self.evaluate_drift_alarms(monitor).await
    }

    /// CloudWatch's evaluation of every alarm on `monitor`'s drift gauge over what arrived
    /// since the last one; a change of state goes to EventBridge.
    pub async fn evaluate_drift_alarms(&self, monitor: &str) -> anyhow::Result<()> {
        use galley_aws::sdk::cloudwatch::types::{ComparisonOperator as Op, Dimension, StateValue};
        let now = galley_aws::sdk::smithy_types::DateTime::from_secs(chrono::Utc::now().timestamp() + 1);
        let alarms = self
            .c
            .cloudwatch
            .describe_alarms_for_metric()
            .namespace(galley_aws::monitor::NAMESPACE)
            .metric_name(galley_aws::monitor::metric_name(DRIFT_DETECTED))
            .dimensions(Dimension::builder().name("Monitor").value(monitor).build())
            .send()
            .await?;
        for alarm in alarms.metric_alarms() {
            let name = alarm.alarm_name().unwrap_or_default().to_owned();
            anyhow::ensure!(alarm.evaluation_periods() == Some(1), "alarm {name}: the stand-in evaluates one-period alarms only");
            let since = self.evaluated.lock().unwrap().insert(name.clone(), now).unwrap_or(galley_aws::sdk::smithy_types::DateTime::from_secs(now.secs() - 3600));
            let statistic = alarm.statistic().cloned().ok_or_else(|| anyhow::anyhow!("alarm {name}: no statistic"))?;
            let points = self
                .c
                .cloudwatch
                .get_metric_statistics()
                .namespace(alarm.namespace().unwrap_or_default())
                .metric_name(alarm.metric_name().unwrap_or_default())
                .set_dimensions(Some(alarm.dimensions().to_vec()))
                .start_time(since)
                .end_time(now)
                .period(alarm.period().unwrap_or(300))
                .statistics(statistic.clone())
                .send()
                .await?;
            let value = points.datapoints().iter().filter_map(|p| match statistic.as_str() {
                "Maximum" => p.maximum(),
                "Minimum" => p.minimum(),
                "Average" => p.average(),
                "Sum" => p.sum(),
                _ => p.sample_count(),
            }).reduce(f64::max);
            let threshold = alarm.threshold().unwrap_or_default();
            let old = alarm.state_value().cloned().unwrap_or(StateValue::InsufficientData);
            let new = match value {
                Some(v) => {
                    let breaching = match alarm.comparison_operator() {
                        Some(Op::GreaterThanOrEqualToThreshold) => v >= threshold,
                        Some(Op::GreaterThanThreshold) => v > threshold,
                        Some(Op::LessThanThreshold) => v < threshold,
                        Some(Op::LessThanOrEqualToThreshold) => v <= threshold,
                        other => anyhow::bail!("alarm {name}: the stand-in does not evaluate {other:?}"),
                    };
                    if breaching { StateValue::Alarm } else { StateValue::Ok }
                }
                None => match alarm.treat_missing_data().unwrap_or("missing") {
                    "ignore" => old.clone(),
                    "breaching" => StateValue::Alarm,
                    "notBreaching" => StateValue::Ok,
                    _ => StateValue::InsufficientData,
                },
            };
            if new == old {
                continue;
            }
            let reason = format!("the stand-in evaluated {value:?} against {threshold}");
            self.c.cloudwatch.set_alarm_state().alarm_name(&name).state_value(new.clone()).state_reason(&reason).send().await?;
            self.alarm_changed(alarm, &old, &new, &reason).await?;
        }
        Ok(())
    }

    /// CloudWatch's "CloudWatch Alarm State Change" event on the default bus: every rule whose
    /// pattern matches starts its SageMaker pipeline targets.
    async fn alarm_changed(
        &self,
        alarm: &galley_aws::sdk::cloudwatch::types::MetricAlarm,
        old: &galley_aws::sdk::cloudwatch::types::StateValue,
        new: &galley_aws::sdk::cloudwatch::types::StateValue,
        reason: &str,
    ) -> anyhow::Result<()> {
        let name = alarm.alarm_name().unwrap_or_default();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let event = serde_json::json!({
            "version": "0",
            "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch",
            "account": "123456789012",
            "time": time,
            "region": REGION,
            "resources": [alarm.alarm_arn().unwrap_or_default()],
            "detail": {
                "alarmName": name,
                "state": {"value": new.as_str(), "reason": reason, "timestamp": time},
                "previousState": {"value": old.as_str()},
                "configuration": {"description": alarm.alarm_description().unwrap_or_default()},
            },
        });
        let mut token = None;
        loop {
            let page = self.c.events.list_rules().set_next_token(token).send().await?;
            for rule in page.rules() {
                let Some(pattern) = rule.event_pattern() else { continue };
                if rule.state().map(|s| s.as_str()) != Some("ENABLED") {
                    continue;
                }
                let pattern: serde_json::Value = serde_json::from_str(pattern)?;
                if !matches(&pattern, &event)? {
                    continue;
                }
                let rule_name = rule.name().unwrap_or_default();
                let targets = self.c.events.list_targets_by_rule().rule(rule_name).send().await?;
                for t in targets.targets() {
                    if !t.arn().contains(":sagemaker:") {
                        continue;
                    }
                    anyhow::ensure!(t.role_arn().is_some_and(|r| r.starts_with("arn:aws:iam::")), "rule {rule_name}: a SageMaker pipeline target needs a role EventBridge assumes");
                    let params = t
                        .sage_maker_pipeline_parameters()
                        .map(|p| p.pipeline_parameter_list().iter().map(|x| (x.name().to_owned(), x.value().to_owned())).collect())
                        .unwrap_or_default();
                    self.start(t.arn(), params).await?;
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// EventBridge's documented matching for exact-value patterns: every field of the pattern is in
/// the event; a nested object matches the event's object there; an array lists the values the
/// event's value (or any element of its array) may take. Content filters (`prefix`, `anything-but`,
/// …) are refused rather than guessed.
pub fn matches(pattern: &serde_json::Value, event: &serde_json::Value) -> anyhow::Result<bool> {
    use serde_json::Value as J;
    let (J::Object(fields), J::Object(have)) = (pattern, event) else { return Ok(false) };
    for (key, want) in fields {
        let Some(got) = have.get(key) else { return Ok(false) };
        let ok = match want {
            J::Object(_) => matches(want, got)?,
            J::Array(allowed) => {
                anyhow::ensure!(allowed.iter().all(|a| !a.is_object()), "the stand-in does not evaluate content filters like {want}");
                match got {
                    J::Array(values) => values.iter().any(|v| allowed.contains(v)),
                    v => allowed.contains(v),
                }
            }
            _ => anyhow::bail!("`{key}`: an EventBridge pattern lists values in arrays, not {want}"),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
