//! `AddTags`, `ListTags`, `DeleteTags` on training and tuning jobs.

use kiln_api::arn::{self, ResourceType};
use kiln_api::responses::{AddTagsResponse, Empty, ListTagsResponse};
use kiln_api::shapes::{AddTagsRequest, DeleteTagsRequest, ListTagsRequest, Tag};
use kiln_api::{ApiResult, AwsError};
use kiln_store::TagRow;

use crate::{Caller, Engine, store_err, token};

/// The most tags one resource may carry.
const MAX_TAGS: usize = 50;

impl Engine {
    /// The canonical ARN of a resource of the caller's account, or the service's error.
    async fn tagged_resource(&self, caller: &Caller, resource_arn: &str) -> ApiResult<String> {
        let missing = || AwsError::validation(format!("Resource {resource_arn} does not exist."));
        let parsed = arn::parse(resource_arn).ok_or_else(missing)?;
        if parsed.account != caller.account {
            return Err(missing());
        }
        match parsed.kind {
            ResourceType::TrainingJob => match self.load_job(&caller.account, &parsed.name).await? {
                Some(job) => Ok(job.arn),
                None => Err(missing()),
            },
            ResourceType::TuningJob => self
                .tuning_arn(&caller.account, &parsed.name)
                .await?
                .ok_or_else(missing),
        }
    }

    /// `AddTags`: adds new keys and overwrites existing ones.
    pub async fn add_tags(&self, caller: &Caller, req: AddTagsRequest) -> ApiResult<AddTagsResponse> {
        let resource = self.tagged_resource(caller, &req.resource_arn).await?;
        let existing = self
            .store
            .list_tags(&caller.account, &resource, None, 1000)
            .await
            .map_err(store_err)?;
        let mut keys: Vec<&str> = existing.iter().map(|t| t.key.as_str()).collect();
        keys.extend(req.tags.iter().map(|t| t.key.as_str()));
        keys.sort_unstable();
        keys.dedup();
        if keys.len() > MAX_TAGS {
            return Err(AwsError::validation(format!(
                "A resource can have at most {MAX_TAGS} tags; {} would have {}.",
                req.resource_arn,
                keys.len()
            )));
        }
        let rows: Vec<TagRow> = req
            .tags
            .iter()
            .map(|t| TagRow {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect();
        self.store
            .put_tags(&caller.account, &resource, &rows)
            .await
            .map_err(store_err)?;
        Ok(AddTagsResponse { tags: req.tags })
    }

    /// `ListTags`, in key order with pagination.
    pub async fn list_tags(&self, caller: &Caller, req: ListTagsRequest) -> ApiResult<ListTagsResponse> {
        const OP: &str = "ListTags";
        let resource = self.tagged_resource(caller, &req.resource_arn).await?;
        let limit = req.max_results.unwrap_or(50).clamp(1, 100) as u32;
        let after: Option<String> = match &req.next_token {
            Some(t) => Some(token::decode(OP, t)?),
            None => None,
        };
        let mut rows = self
            .store
            .list_tags(&caller.account, &resource, after.as_deref(), limit + 1)
            .await
            .map_err(store_err)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let tags: Vec<Tag> = rows
            .iter()
            .map(|t| Tag {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect();
        let next_token = if more {
            rows.last().map(|last| token::encode(OP, &last.key))
        } else {
            None
        };
        Ok(ListTagsResponse { tags, next_token })
    }

    /// `DeleteTags`.
    pub async fn delete_tags(&self, caller: &Caller, req: DeleteTagsRequest) -> ApiResult<Empty> {
        let resource = self.tagged_resource(caller, &req.resource_arn).await?;
        self.store
            .delete_tags(&caller.account, &resource, &req.tag_keys)
            .await
            .map_err(store_err)?;
        Ok(Empty {})
    }
}
