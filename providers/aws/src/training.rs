//! `training.compute: managed` as SageMaker Training Jobs: the job's rows written as the `train`
//! channel of the container contract ([`crate::container`]) in the artifact bucket,
//! CreateTrainingJob with the blueprint's image and the output in the same bucket;
//! DescribeTrainingJob polled with botocore's `TrainingJobCompletedOrStopped` waiter (its
//! secondary status reported as the job moves); the model read back from the `model.tar.gz`
//! SageMaker packs from the container's `/opt/ml/model`.

use std::io::Read;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sagemaker::types::{
    AlgorithmSpecification, Channel, DataSource, OutputDataConfig, ResourceConfig, S3DataDistribution, S3DataSource, S3DataType,
    StoppingCondition, TrainingInputMode, TrainingInstanceType,
};
use galley_core::stages::{StepLogger, TrainingJob, TrainingJobResult};
use galley_core::{Error, ErrorKind, Result, Stage};
use serde_json::{Value as Json, json};

use crate::config::AwsClients;
use crate::error::{fault, sdk};
use crate::serving::tag;
use crate::waiter::{self, Observation, WaiterDef};

/// Tag naming the blueprint address that started a job (jobs cannot be deleted, only found).
const JOB_TAG: &str = "galley:training-job";
/// Tries of `<name>`, `<name>-r2`, … when earlier jobs of the same inputs failed or were stopped.
const MAX_RESUBMITS: u32 = 9;

pub struct ManagedTraining<'a> {
    pub clients: &'a AwsClients,
    pub bucket: &'a str,
    pub default_instance_type: &'a str,
    /// Overrides the waiter's delay (tests poll in milliseconds).
    pub poll_delay: Option<Duration>,
    /// Jobs being waited for, so a cancelled run can stop them ([`stop_jobs`]).
    pub in_flight: &'a Mutex<BTreeSet<String>>,
}

/// StopTrainingJob for every job in `in_flight` (a cancelled run): SageMaker bills a job until
/// it ends. The waiter then sees `Stopped` and the train step fails as stopped.
pub async fn stop_jobs(clients: &AwsClients, in_flight: &Mutex<BTreeSet<String>>) -> Result<()> {
    let names: Vec<String> = in_flight.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    for name in names {
        let stopped = clients.sagemaker.stop_training_job().training_job_name(&name).send().await;
        match stopped.map_err(sdk(Stage::Training, "StopTrainingJob", &name)) {
            Ok(_) => {}
            // Finished in the meantime: nothing left to stop.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes a job from the in-flight set however its wait ends.
struct InFlight<'a>(&'a Mutex<BTreeSet<String>>, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl ManagedTraining<'_> {
    pub async fn run(&self, job: &TrainingJob, log: &dyn StepLogger) -> Result<TrainingJobResult> {
        // Refused before anything is uploaded: without a role SageMaker cannot run the job.
        let role = self.clients.role_arn("a SageMaker training job")?;
        let input = crate::container::training_input(job)?;
        let prefix = format!("galley/training/{}", job.name);
        for (file, bytes) in &input.files {
            let key = format!("{prefix}/input/{file}");
            self.clients
                .s3
                .put_object()
                .bucket(self.bucket)
                .key(&key)
                .body(bytes.clone().into())
                .send()
                .await
                .map_err(sdk(Stage::Training, "PutObject", &format!("s3://{}/{key}", self.bucket)))?;
        }
        let (name, reused) = self.submit(job, &role, &prefix, &input.hyperparameters, log).await?;
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
        let _in_flight = InFlight(self.in_flight, name.clone());
        let def = waiter::sagemaker("TrainingJobCompletedOrStopped")?;
        // SageMaker stops the job at its max runtime; poll at least that long (plus time to
        // upload the model) rather than the waiter's default six hours.
        let def = WaiterDef {
            max_attempts: def.max_attempts.max((job.max_runtime_secs / def.delay.max(1)) as u32 + 30),
            ..def.clone()
        };
        let last = Mutex::new(String::new());
        let done = def.wait(&format!("training job `{name}`"), self.poll_delay, || self.observe(&name, &last, log)).await?;
        let Observation::Output { body, .. } = done else {
            return Err(Error::internal("the training job waiter succeeded without a description"));
        };
        if body["TrainingJobStatus"] == "Stopped" {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "training job `{name}` was stopped before it finished{}; start the run again to submit a new job",
                    reason(&body)
                ),
            ));
        }
        let uri = body["ModelArtifacts"]["S3ModelArtifacts"]
            .as_str()
            .ok_or_else(|| Error::internal(format!("training job `{name}` completed without ModelArtifacts.S3ModelArtifacts")))?
            .to_owned();
        let packed = self.download(&uri, &name).await?;
        let model = unpack(&packed, crate::container::MODEL_FILE)
            .map_err(|e| Error::new(e.kind(), format!("training job `{name}`: {} in {uri}", e.message())))?;
        Ok(TrainingJobResult {
            job_id: body["TrainingJobArn"].as_str().unwrap_or(&name).to_owned(),
            model,
            output_uri: uri,
            reused,
            billable_seconds: body["BillableTimeInSeconds"].as_u64(),
        })
    }

    /// Creates the job, or finds the one an earlier (crashed) run started with these inputs.
    /// Returns the job's name and whether it was found rather than created.
    async fn submit(
        &self,
        job: &TrainingJob,
        role: &str,
        prefix: &str,
        hyperparameters: &std::collections::BTreeMap<String, String>,
        log: &dyn StepLogger,
    ) -> Result<(String, bool)> {
        let instance = job.instance_type.as_deref().unwrap_or(self.default_instance_type);
        let s3 = |prefix: &str| format!("s3://{}/{prefix}", self.bucket);
        for attempt in 1..=MAX_RESUBMITS {
            let name = if attempt == 1 { job.name.clone() } else { format!("{}-r{attempt}", job.name) };
            let channel = Channel::builder()
                .channel_name(crate::container::CHANNEL)
                .content_type("text/csv")
                .data_source(
                    DataSource::builder()
                        .s3_data_source(
                            S3DataSource::builder()
                                .s3_data_type(S3DataType::S3Prefix)
                                .s3_uri(s3(&format!("{prefix}/input/")))
                                .s3_data_distribution_type(S3DataDistribution::FullyReplicated)
                                .build(),
                        )
                        .build(),
                )
                .build();
            let created = self
                .clients
                .sagemaker
                .create_training_job()
                .training_job_name(&name)
                .algorithm_specification(
                    AlgorithmSpecification::builder()
                        .training_image(&job.image)
                        .training_input_mode(TrainingInputMode::File)
                        .build(),
                )
                .role_arn(role)
                .input_data_config(channel)
                .output_data_config(OutputDataConfig::builder().s3_output_path(s3(&format!("{prefix}/output/"))).build())
                .resource_config(
                    ResourceConfig::builder()
                        .instance_type(TrainingInstanceType::from(instance))
                        .instance_count(1)
                        .volume_size_in_gb(30)
                        .build(),
                )
                .stopping_condition(StoppingCondition::builder().max_runtime_in_seconds(job.max_runtime_secs.min(i32::MAX as u64) as i32).build())
                .set_hyper_parameters(Some(hyperparameters.clone().into_iter().collect()))
                .tags(tag(JOB_TAG, &job.name))
                .send()
                .await
                .map_err(sdk(Stage::Training, "CreateTrainingJob", &name));
            match created {
                Ok(_) => {
                    let region = self.clients.region();
                    log.line(&format!(
                        "submitted SageMaker training job `{name}` ({instance}, image {}); console: https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}",
                        job.image
                    ));
                    return Ok((name, false));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let d = self.describe(&name).await?;
                    match d["TrainingJobStatus"].as_str() {
                        Some("InProgress" | "Completed") => {
                            log.line(&format!("found training job `{name}`, started earlier with the same inputs: waiting for it instead of paying twice"));
                            return Ok((name, true));
                        }
                        status => log.line(&format!("training job `{name}` with the same inputs ended {status:?}{}: submitting a new one", reason(&d))),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!("{MAX_RESUBMITS} training jobs named `{}…` with these inputs already ended unsuccessfully; read their failure reasons in SageMaker before trying again", job.name),
        ))
    }

    async fn describe(&self, name: &str) -> Result<Json> {
        let d = self
            .clients
            .sagemaker
            .describe_training_job()
            .training_job_name(name)
            .send()
            .await
            .map_err(sdk(Stage::Training, "DescribeTrainingJob", name))?;
        Ok(described(&d))
    }

    /// One poll: DescribeTrainingJob, logging the secondary status each time it moves
    /// (Starting → Downloading → Training → Uploading → Completed).
    async fn observe(&self, name: &str, last: &Mutex<String>, log: &dyn StepLogger) -> Observation {
        match self.clients.sagemaker.describe_training_job().training_job_name(name).send().await {
            Ok(d) => {
                let body = described(&d);
                let now = body["SecondaryStatus"].as_str().unwrap_or("?").to_owned();
                let mut seen = last.lock().unwrap_or_else(|p| p.into_inner());
                if *seen != now {
                    log.line(&format!("training job `{name}`: {now}"));
                    *seen = now;
                }
                Observation::Output { status: 200, body }
            }
            Err(e) => Observation::Error(fault(&e)),
        }
    }

    async fn download(&self, uri: &str, job: &str) -> Result<Vec<u8>> {
        let (bucket, key) = crate::artifacts::split_s3_uri(uri)
            .ok_or_else(|| Error::internal(format!("training job `{job}`: model artifacts `{uri}` are not an s3:// URI")))?;
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk(Stage::Training, "GetObject", uri))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::not_found(format!(
                    "training job `{job}` completed but left no model at {uri}; did its image write /opt/ml/model/?"
                )),
                _ => e,
            })?;
        let body = out.body.collect().await.map_err(|e| Error::new(ErrorKind::Unavailable, format!("reading {uri}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }
}

/// The file `want` from a SageMaker `model.tar.gz` (entries may carry a leading `./`).
pub fn unpack(packed: &[u8], want: &str) -> Result<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed));
    let mut names = Vec::new();
    let entries = archive.entries().map_err(|e| Error::corrupt(format!("the model archive is not a tar.gz ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::corrupt(format!("the model archive is damaged ({e})")))?;
        let path = entry.path().map_err(|e| Error::corrupt(format!("the model archive has a bad path ({e})")))?.into_owned();
        let name = path.strip_prefix(".").unwrap_or(&path).to_string_lossy().into_owned();
        if name == want {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| Error::corrupt(format!("the model archive is damaged ({e})")))?;
            return Ok(bytes);
        }
        names.push(name);
    }
    Err(Error::not_found(format!("no `{want}` in the model archive (it holds {names:?})")))
}

/// The members of DescribeTrainingJob's answer the waiter's acceptors and Galley read.
fn described(d: &aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput) -> Json {
    json!({
        "TrainingJobArn": d.training_job_arn(),
        "TrainingJobStatus": d.training_job_status().map(|s| s.as_str()),
        "SecondaryStatus": d.secondary_status().map(|s| s.as_str()),
        "FailureReason": d.failure_reason(),
        "ModelArtifacts": {"S3ModelArtifacts": d.model_artifacts().map(|m| m.s3_model_artifacts())},
        "BillableTimeInSeconds": d.billable_time_in_seconds(),
    })
}

fn reason(d: &Json) -> String {
    d["FailureReason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
}
