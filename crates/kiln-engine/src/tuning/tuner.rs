//! The tuner's passes: for each active tuning job, gather what `plan` needs (children, their
//! metrics, the warm-start parents, the tags), plan, and carry the actions out. Changes of the
//! tuning job go through its state machine (committed first, effects after); a child is created
//! before its launch is counted, and child names are fixed by index, so a pass interrupted anywhere
//! (a crash, a change of leader) neither loses nor duplicates children.

use std::collections::BTreeMap;

use kiln_api::shapes::{Tag, TrainingJobNameRequest};
use kiln_api::status::{TrainingJobStatus, TuningJobStatus};
use kiln_api::{ApiResult, AwsError, validate};
use kiln_store::{Cursor, CursorValue, JobQuery, JobSort, StoreError, TuningJobRow};
use kiln_tune::{WarmStart, WarmStartType};

use super::machine::{self, Effect, Event};
use super::plan::{self, TunerAction, View};
use super::{Child, child_index, definitions, objective_of, ranges_of, trial_of};
use crate::training::api::{new_job, tag_rows};
use crate::{Caller, Engine, NOT_FOUND, now, store_err};

const MAX_ATTEMPTS: usize = 50;

impl Engine {
    pub(crate) async fn load_tuning(&self, account: &str, name: &str) -> ApiResult<Option<TuningJobRow>> {
        self.store.get_tuning_job(account, name).await.map_err(store_err)
    }

    /// Applies `event` to a tuning job: commit, then perform the effects of the committed change.
    pub async fn apply_tuning(&self, account: &str, name: &str, event: Event) -> ApiResult<TuningJobRow> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(job) = self.load_tuning(account, name).await? else {
                return Err(AwsError::resource_not_found(NOT_FOUND));
            };
            let (mut next, effects) = machine::step(&job, &event, now()).map_err(|r| AwsError::validation(r.0))?;
            if next == job {
                return Ok(job);
            }
            match self.store.update_tuning_job(&next).await {
                Ok(v) => {
                    next.version = v;
                    for effect in effects {
                        match effect {
                            Effect::StopChildren => self.stop_children(&next).await?,
                            Effect::Wake => self.wake(),
                        }
                    }
                    return Ok(next);
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(AwsError::resource_not_found(NOT_FOUND)),
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::new(
            400,
            "ThrottlingException",
            "The tuning job is being updated concurrently; retry.",
        ))
    }

    /// The children of a tuning job, in launch order.
    pub(crate) async fn children(&self, job: &TuningJobRow) -> ApiResult<Vec<Child>> {
        let mut q = JobQuery::all(&job.account, 100);
        q.tuning_job_arn = Some(job.arn.clone());
        q.sort = JobSort::Name;
        q.descending = false;
        let mut rows = Vec::new();
        loop {
            let page = self.store.list_training_jobs(&q).await.map_err(store_err)?;
            let full = page.len() == 100;
            let Some(last) = page.last() else { break };
            q.after = Some(Cursor {
                value: CursorValue::Text(last.name.to_lowercase()),
                name_key: last.name.to_lowercase(),
            });
            rows.extend(page);
            if !full {
                break;
            }
        }
        let defs = definitions(job);
        let mut out = Vec::new();
        for row in rows {
            let Some(index) = child_index(&job.name, &row.name) else {
                continue;
            };
            let def = defs.get(index % defs.len().max(1)).copied();
            let tuned_names: Vec<String> = def
                .map(|d| ranges_of(job, d).names().iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let tuned = row
                .spec
                .hyper_parameters
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| tuned_names.contains(k))
                .collect();
            let metric = def.and_then(|d| objective_of(job, d)).map(|o| o.metric_name);
            let objective = metric.and_then(|m| row.final_metrics.iter().find(|x| x.metric_name == m).map(|x| x.value));
            out.push(Child {
                index,
                job: row,
                tuned,
                objective,
            });
        }
        out.sort_by_key(|c| c.index);
        Ok(out)
    }

    /// Stops the children of a tuning job that still run.
    async fn stop_children(&self, job: &TuningJobRow) -> ApiResult<()> {
        for c in self.children(job).await? {
            if c.job.status == TrainingJobStatus::InProgress {
                self.stop_child(&job.account, &c.job.name).await;
            }
        }
        Ok(())
    }

    async fn stop_child(&self, account: &str, name: &str) {
        let caller = Caller {
            account: account.to_string(),
            region: String::new(),
        };
        let req = TrainingJobNameRequest {
            training_job_name: name.to_string(),
        };
        if let Err(e) = self.stop_training_job(&caller, req).await
            && e.code != "ValidationException"
        {
            tracing::warn!(target: "kiln::tuner", "could not stop {name}: {}", e.message);
        }
    }

    /// One pass of the tuner over every active tuning job; one job's error does not stop the pass.
    pub async fn tune_tick(&self) -> ApiResult<()> {
        let jobs = self
            .store
            .tuning_jobs_with_status(&[TuningJobStatus::InProgress, TuningJobStatus::Stopping])
            .await
            .map_err(store_err)?;
        for job in jobs {
            if let Err(e) = self.tune_one(&job).await {
                tracing::warn!(target: "kiln::tuner", "tuning job {}: {}", job.name, e.message);
            }
        }
        Ok(())
    }

    async fn tune_one(&self, job: &TuningJobRow) -> ApiResult<()> {
        let children = self.children(job).await?;
        let mut intermediate = BTreeMap::new();
        if plan::needs_intermediate(job) && !machine::winding_down(job) {
            let defs = definitions(job);
            // Every child's curve: running ones are judged against the finished ones'.
            for c in &children {
                let def = defs.get(c.index % defs.len().max(1)).copied();
                let Some(metric) = def.and_then(|d| objective_of(job, d)).map(|o| o.metric_name) else {
                    continue;
                };
                let values = self
                    .store
                    .metric_points(&job.account, &c.job.name, Some(&metric))
                    .await
                    .map_err(store_err)?
                    .into_iter()
                    .map(|p| p.value)
                    .collect();
                intermediate.insert(c.job.name.clone(), values);
            }
        }
        let warm = self.warm_start(job).await?;
        let tags: Vec<Tag> = self
            .store
            .list_tags(&job.account, &job.arn, None, 1000)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|t| Tag {
                key: t.key,
                value: t.value,
            })
            .collect();
        let view = View {
            job,
            children: &children,
            intermediate: &intermediate,
            warm: warm.as_ref(),
            tags: &tags,
            now: now(),
        };
        let actions = plan::plan(&view).map_err(AwsError::validation)?;
        for action in actions {
            match action {
                TunerAction::Record(event) => {
                    self.apply_tuning(&job.account, &job.name, event).await?;
                }
                TunerAction::StopChild { name } => self.stop_child(&job.account, &name).await,
                TunerAction::Launch { index, request } => {
                    self.create_child(job, *request).await?;
                    let count = index as i64 + 1;
                    self.apply_tuning(&job.account, &job.name, Event::Launched { count })
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The trials of the warm-start parents.
    pub(crate) async fn warm_start(&self, job: &TuningJobRow) -> ApiResult<Option<WarmStart>> {
        let Some(ws) = &job.spec.warm_start_config else {
            return Ok(None);
        };
        let mut trials = Vec::new();
        for p in &ws.parent_hyper_parameter_tuning_jobs {
            if let Some(parent) = self
                .load_tuning(&job.account, &p.hyper_parameter_tuning_job_name)
                .await?
            {
                for c in self.children(&parent).await? {
                    trials.push(trial_of(&c, Vec::new()));
                }
            }
        }
        let kind = if ws.warm_start_type == "TransferLearning" {
            WarmStartType::TransferLearning
        } else {
            WarmStartType::IdenticalDataAndAlgorithm
        };
        Ok(Some(WarmStart {
            kind,
            parent_trials: trials,
        }))
    }

    /// Creates a child training job (an existing one of that name is the same child, launched by an
    /// earlier pass).
    async fn create_child(
        &self,
        tuning: &TuningJobRow,
        mut req: kiln_api::shapes::CreateTrainingJobRequest,
    ) -> ApiResult<()> {
        validate::fill_defaults(&mut req);
        let tags = tag_rows(&req.tags);
        let region = tuning.arn.split(':').nth(3).unwrap_or("us-east-1").to_string();
        let mut child = new_job(&tuning.account, &region, req, now());
        child.tuning_job_arn = Some(tuning.arn.clone());
        match self.store.insert_training_job(&child, &tags).await {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(StoreError::AlreadyExists) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }
}
