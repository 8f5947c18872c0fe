//! The CloudWatch Logs operations, and the engine-side API that stores a job's log lines.

use std::collections::HashSet;
use std::sync::Mutex;

use kiln_api::logs::{
    CreateLogGroupRequest, CreateLogStreamRequest, DescribeLogGroupsRequest, DescribeLogStreamsRequest,
    FilterLogEventsRequest, FilterPattern, GetLogEventsRequest, PutLogEventsRequest, TRAINING_LOG_GROUP,
    escape_control_chars,
};
use kiln_api::responses::{
    DescribeLogGroupsResponse, DescribeLogStreamsResponse, Empty, FilterLogEventsResponse, FilteredLogEvent,
    GetLogEventsResponse, LogGroup, LogStream, OutputLogEvent, PutLogEventsResponse,
};
use kiln_api::{ApiResult, AwsError};
use kiln_store::StoreError;
use kiln_store::logs::{
    BatchStart, EventPos, EventRange, FilterQuery, LogStore, NewEvent, StreamQuery, StreamSelector,
};

use crate::{Caller, Engine, store_err};

/// Most events one `GetLogEvents`/`FilterLogEvents` page returns (the service's default).
const MAX_EVENTS: u32 = 10_000;
/// At most this many events are scanned by one filtered call before it returns a token.
const MAX_SCAN: usize = 200_000;

fn now_ms() -> i64 {
    (crate::now() * 1000.0) as i64
}

fn group_arn(caller: &Caller, group: &str) -> String {
    format!("arn:aws:logs:{}:{}:log-group:{group}", caller.region, caller.account)
}

fn group_of(name: &Option<String>, identifier: &Option<String>) -> ApiResult<String> {
    match (name, identifier) {
        (Some(n), None) => Ok(n.clone()),
        (None, Some(id)) => Ok(id
            .rsplit_once(":log-group:")
            .map(|(_, g)| g.trim_end_matches(":*").to_string())
            .unwrap_or_else(|| id.clone())),
        (Some(_), Some(_)) => Err(AwsError::logs_invalid_parameter(
            "LogGroup name and LogGroup identifier are mutually exclusive parameters.",
        )),
        (None, None) => Err(AwsError::logs_invalid_parameter(
            "Either LogGroup name or LogGroup identifier is required.",
        )),
    }
}

fn encode_pos(dir: char, p: EventPos) -> String {
    format!("{dir}/{}/{}", p.timestamp, p.seq)
}

fn decode_pos(token: &str) -> ApiResult<(char, EventPos)> {
    let bad = || AwsError::logs_invalid_parameter(format!("The specified nextToken is invalid: {token}"));
    let mut parts = token.split('/');
    let dir = match parts.next() {
        Some("f") => 'f',
        Some("b") => 'b',
        _ => return Err(bad()),
    };
    let timestamp = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let seq = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((dir, EventPos { timestamp, seq }))
}

/// Accounts whose training-job log group is known to exist.
#[derive(Default)]
pub(crate) struct KnownGroups(Mutex<HashSet<String>>);

impl Engine {
    pub(crate) fn logs(&self) -> &dyn LogStore {
        self.logs.as_ref()
    }

    /// Makes sure `/aws/sagemaker/TrainingJobs` exists for the account.
    pub async fn ensure_training_log_group(&self, account: &str) -> ApiResult<()> {
        if self.known_groups.0.lock().map(|s| s.contains(account)).unwrap_or(false) {
            return Ok(());
        }
        match self.logs().create_group(account, TRAINING_LOG_GROUP, now_ms()).await {
            Ok(()) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(store_err(e)),
        }
        if let Ok(mut s) = self.known_groups.0.lock() {
            s.insert(account.to_string());
        }
        Ok(())
    }

    /// Appends lines of a job's host stream (creating the stream), escaping control characters as
    /// SageMaker does. `lines` are `(epoch milliseconds, text)`; with `start` (an agent's batch),
    /// lines the stream already holds from the same agent are skipped. Returns how many leading
    /// lines were skipped.
    pub async fn append_job_log(
        &self,
        account: &str,
        stream: &str,
        lines: &[(i64, String)],
        start: Option<BatchStart<'_>>,
    ) -> ApiResult<usize> {
        self.ensure_training_log_group(account).await?;
        let now = now_ms();
        let events: Vec<NewEvent> = lines
            .iter()
            .map(|(t, l)| NewEvent {
                timestamp: *t,
                message: escape_control_chars(l).into_owned(),
            })
            .collect();
        let put = || async {
            match start {
                Some(start) => {
                    self.logs()
                        .put_batch(account, TRAINING_LOG_GROUP, stream, start, &events, now)
                        .await
                }
                None => self
                    .logs()
                    .put_events(account, TRAINING_LOG_GROUP, stream, &events, now)
                    .await
                    .map(|()| 0),
            }
        };
        match put().await {
            Err(StoreError::NotFound) => {
                match self
                    .logs()
                    .create_stream(account, TRAINING_LOG_GROUP, stream, now)
                    .await
                {
                    Ok(()) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(store_err(e)),
                }
                put().await.map_err(store_err)
            }
            r => r.map_err(store_err),
        }
    }

    /// `CreateLogGroup`.
    pub async fn create_log_group(&self, caller: &Caller, req: CreateLogGroupRequest) -> ApiResult<Empty> {
        self.ensure_training_log_group(&caller.account).await?;
        match self
            .logs()
            .create_group(&caller.account, &req.log_group_name, now_ms())
            .await
        {
            Ok(()) => Ok(Empty {}),
            Err(StoreError::AlreadyExists) => {
                Err(AwsError::logs_already_exists("The specified log group already exists"))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// `CreateLogStream`.
    pub async fn create_log_stream(&self, caller: &Caller, req: CreateLogStreamRequest) -> ApiResult<Empty> {
        self.ensure_training_log_group(&caller.account).await?;
        match self
            .logs()
            .create_stream(&caller.account, &req.log_group_name, &req.log_stream_name, now_ms())
            .await
        {
            Ok(()) => Ok(Empty {}),
            Err(StoreError::AlreadyExists) => {
                Err(AwsError::logs_already_exists("The specified log stream already exists"))
            }
            Err(StoreError::NotFound) => Err(AwsError::logs_not_found("The specified log group does not exist.")),
            Err(e) => Err(store_err(e)),
        }
    }

    /// `PutLogEvents`.
    pub async fn put_log_events(&self, caller: &Caller, req: PutLogEventsRequest) -> ApiResult<PutLogEventsResponse> {
        self.ensure_training_log_group(&caller.account).await?;
        if req.log_events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
            return Err(AwsError::logs_invalid_parameter(
                "Log events in a single PutLogEvents request must be in chronological order.",
            ));
        }
        let events: Vec<NewEvent> = req
            .log_events
            .into_iter()
            .map(|e| NewEvent {
                timestamp: e.timestamp,
                message: e.message,
            })
            .collect();
        match self
            .logs()
            .put_events(
                &caller.account,
                &req.log_group_name,
                &req.log_stream_name,
                &events,
                now_ms(),
            )
            .await
        {
            Ok(()) => Ok(PutLogEventsResponse {
                next_sequence_token: "0",
            }),
            Err(StoreError::NotFound) => Err(AwsError::logs_not_found("The specified log stream does not exist.")),
            Err(e) => Err(store_err(e)),
        }
    }

    /// `DescribeLogGroups`.
    pub async fn describe_log_groups(
        &self,
        caller: &Caller,
        req: DescribeLogGroupsRequest,
    ) -> ApiResult<DescribeLogGroupsResponse> {
        self.ensure_training_log_group(&caller.account).await?;
        let limit = req.limit.unwrap_or(50).clamp(1, 50) as u32;
        let prefix = req.log_group_name_prefix.unwrap_or_default();
        let mut rows = self
            .logs()
            .list_groups(&caller.account, &prefix, req.next_token.as_deref(), limit + 1)
            .await
            .map_err(store_err)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_token = if more {
            rows.last().map(|g| g.name.clone())
        } else {
            None
        };
        let log_groups = rows
            .into_iter()
            .map(|g| {
                let arn = group_arn(caller, &g.name);
                LogGroup {
                    log_group_name: g.name,
                    creation_time: g.creation_time,
                    metric_filter_count: 0,
                    arn: format!("{arn}:*"),
                    log_group_arn: arn,
                    stored_bytes: g.stored_bytes,
                    log_group_class: "STANDARD",
                }
            })
            .collect();
        Ok(DescribeLogGroupsResponse { log_groups, next_token })
    }

    async fn require_group(&self, caller: &Caller, group: &str) -> ApiResult<()> {
        self.ensure_training_log_group(&caller.account).await?;
        if self
            .logs()
            .group_exists(&caller.account, group)
            .await
            .map_err(store_err)?
        {
            Ok(())
        } else {
            Err(AwsError::logs_not_found("The specified log group does not exist."))
        }
    }

    /// `DescribeLogStreams`: `nextToken` only when more streams remain (the SageMaker SDK loops
    /// forever otherwise).
    pub async fn describe_log_streams(
        &self,
        caller: &Caller,
        req: DescribeLogStreamsRequest,
    ) -> ApiResult<DescribeLogStreamsResponse> {
        let group = group_of(&req.log_group_name, &req.log_group_identifier)?;
        self.require_group(caller, &group).await?;
        let by_last_event = match req.order_by.as_deref() {
            None | Some("LogStreamName") => false,
            Some("LastEventTime") => true,
            Some(other) => {
                return Err(AwsError::logs_invalid_parameter(format!("Invalid orderBy '{other}'.")));
            }
        };
        let prefix = req.log_stream_name_prefix.unwrap_or_default();
        if by_last_event && !prefix.is_empty() {
            return Err(AwsError::logs_invalid_parameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let limit = req.limit.unwrap_or(50).clamp(1, 50) as u32;
        let descending = req.descending.unwrap_or(false);
        let mut rows = self
            .logs()
            .list_streams(
                &caller.account,
                &group,
                &StreamQuery {
                    prefix,
                    by_last_event,
                    descending,
                    after: req.next_token.clone(),
                    limit: limit + 1,
                },
            )
            .await
            .map_err(store_err)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let arn = group_arn(caller, &group);
        let next_token = match rows.last() {
            Some(last) if more => Some(if by_last_event {
                format!("{}:{}", last.last_event_time.unwrap_or(0), last.name)
            } else {
                last.name.clone()
            }),
            _ => None,
        };
        let log_streams = rows
            .into_iter()
            .map(|s| LogStream {
                arn: format!("{arn}:log-stream:{}", s.name),
                log_stream_name: s.name,
                creation_time: s.creation_time,
                stored_bytes: s.stored_bytes,
                upload_sequence_token: "0",
                first_event_timestamp: s.first_event_time,
                last_event_timestamp: s.last_event_time,
                last_ingestion_time: s.last_ingestion_time,
            })
            .collect();
        Ok(DescribeLogStreamsResponse {
            log_streams,
            next_token,
        })
    }

    /// `GetLogEvents`: forward and backward tokens; at the end of a stream an empty page with the
    /// same forward token.
    pub async fn get_log_events(&self, caller: &Caller, req: GetLogEventsRequest) -> ApiResult<GetLogEventsResponse> {
        let group = group_of(&req.log_group_name, &req.log_group_identifier)?;
        self.require_group(caller, &group).await?;
        if self
            .logs()
            .get_stream(&caller.account, &group, &req.log_stream_name)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(AwsError::logs_not_found("The specified log stream does not exist."));
        }
        let limit = req
            .limit
            .unwrap_or(i64::from(MAX_EVENTS))
            .clamp(1, i64::from(MAX_EVENTS)) as u32;
        let (forward, from) = match &req.next_token {
            Some(t) => {
                let (dir, pos) = decode_pos(t)?;
                (dir == 'f', Some(pos))
            }
            None => (req.start_from_head.unwrap_or(false), None),
        };
        let range = EventRange {
            start: req.start_time,
            end: req.end_time,
            from,
            forward,
            limit,
        };
        let events = self
            .logs()
            .get_events(&caller.account, &group, &req.log_stream_name, &range)
            .await
            .map_err(store_err)?;
        let pos = |e: &kiln_store::logs::LogEventRow| EventPos {
            timestamp: e.timestamp,
            seq: e.seq,
        };
        let start_pos = EventPos {
            timestamp: req.start_time.unwrap_or(i64::MIN + 1) - 1,
            seq: i64::MAX,
        };
        let end_pos = EventPos {
            timestamp: req.end_time.unwrap_or(i64::MAX),
            seq: 0,
        };
        let (fwd, back) = match (events.first(), events.last()) {
            (Some(first), Some(last)) => (pos(last), pos(first)),
            _ => {
                let here = from.unwrap_or(if forward { start_pos } else { end_pos });
                (if forward { here } else { start_pos }, here)
            }
        };
        Ok(GetLogEventsResponse {
            events: events
                .into_iter()
                .map(|e| OutputLogEvent {
                    timestamp: e.timestamp,
                    message: e.message,
                    ingestion_time: e.ingestion_time,
                })
                .collect(),
            next_forward_token: encode_pos('f', fwd),
            next_backward_token: encode_pos('b', back),
        })
    }

    /// `FilterLogEvents`: events of many streams interleaved by time, with a text pattern.
    pub async fn filter_log_events(
        &self,
        caller: &Caller,
        req: FilterLogEventsRequest,
    ) -> ApiResult<FilterLogEventsResponse> {
        let group = group_of(&req.log_group_name, &req.log_group_identifier)?;
        self.require_group(caller, &group).await?;
        let selector = match (req.log_stream_names, req.log_stream_name_prefix) {
            (Some(_), Some(_)) => {
                return Err(AwsError::logs_invalid_parameter(
                    "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
                ));
            }
            (Some(names), None) => StreamSelector::Names(names),
            (None, Some(p)) => StreamSelector::Prefix(p),
            (None, None) => StreamSelector::All,
        };
        let pattern = FilterPattern::parse(req.filter_pattern.as_deref().unwrap_or(""))
            .map_err(AwsError::logs_invalid_parameter)?;
        let limit = req
            .limit
            .unwrap_or(i64::from(MAX_EVENTS))
            .clamp(1, i64::from(MAX_EVENTS)) as usize;
        let mut after = match &req.next_token {
            Some(t) => Some(decode_pos(t)?.1),
            None => None,
        };
        let mut matched = Vec::new();
        let mut scanned = 0usize;
        let mut exhausted = false;
        while matched.len() < limit && scanned < MAX_SCAN {
            let batch = (limit - matched.len()).max(1000) as u32;
            let page = self
                .logs()
                .filter_events(
                    &caller.account,
                    &group,
                    &FilterQuery {
                        streams: selector.clone(),
                        start: req.start_time,
                        end: req.end_time,
                        after,
                        limit: batch,
                    },
                )
                .await
                .map_err(store_err)?;
            let got = page.len();
            let mut used = 0;
            for e in page {
                scanned += 1;
                used += 1;
                after = Some(EventPos {
                    timestamp: e.timestamp,
                    seq: e.seq,
                });
                if pattern.matches(&e.message) {
                    matched.push(e);
                    if matched.len() == limit {
                        break;
                    }
                }
            }
            // The end of the data is reached when the store had no more and every row was looked at.
            if got < batch as usize {
                exhausted = used == got;
                break;
            }
        }
        let more = !exhausted;
        Ok(FilterLogEventsResponse {
            events: matched
                .into_iter()
                .map(|e| FilteredLogEvent {
                    event_id: format!("{:020}", e.seq),
                    log_stream_name: e.stream,
                    timestamp: e.timestamp,
                    message: e.message,
                    ingestion_time: e.ingestion_time,
                })
                .collect(),
            searched_log_streams: Vec::new(),
            next_token: if more { after.map(|p| encode_pos('f', p)) } else { None },
        })
    }
}
