//! The SageMaker, CloudWatch Logs and CloudWatch metrics APIs as data: request and response shapes
//! named as in the AWS model, validation that answers with the real service's messages, ARNs, the AWS error envelope,
//! and SigV4 signing/verification. Pure: no I/O, no clocks (callers pass the time in).
//! HTTP routing lives in `kiln-server`; what an operation *does* lives in `kiln-engine`.

pub mod agent;
pub mod arn;
pub mod cloudwatch;
pub mod error;
pub mod logs;
pub mod model;
pub mod responses;
pub mod search;
pub mod shapes;
pub mod sigv4;
pub mod status;
pub mod tuning;
pub mod validate;

pub use error::{ApiResult, AwsError};
