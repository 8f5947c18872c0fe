//! The enumerations of the SageMaker API that kiln keeps state in: statuses, stop reasons,
//! strategies. Each serialises with the AWS spelling (serde, `as_str`, `FromStr`), so the same value
//! goes to the wire, into a database column and into a log line. Which transitions are allowed is
//! the engine's business (`kiln-engine`'s state machines), not this module's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An enum whose variants are spelled on the wire as their Rust names.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $v:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* $v),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v)),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $(stringify!($v) => Ok(Self::$v),)*
                    other => Err(UnknownValue { kind: stringify!($name), value: other.to_string() }),
                }
            }
        }
    };
}

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a {kind}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

wire_enum!(
    /// `TrainingJobStatus`.
    TrainingJobStatus {
        InProgress,
        Completed,
        Failed,
        Stopping,
        Stopped,
        Deleting,
    }
);

wire_enum!(
    /// `SecondaryStatus`: the phase a training job is in.
    SecondaryStatus {
        Starting,
        Pending,
        Downloading,
        Training,
        Uploading,
        Stopping,
        Stopped,
        MaxRuntimeExceeded,
        MaxWaitTimeExceeded,
        Completed,
        Failed,
        Interrupted,
        Restarting,
        Updating,
    }
);

wire_enum!(
    /// Why a training job is being stopped; decides the status it ends in.
    StopReason {
        /// `StopTrainingJob`, or the tuner stopping a child: ends `Stopped`.
        Requested,
        /// `MaxRuntimeInSeconds` passed: ends `Stopped` / `MaxRuntimeExceeded`.
        MaxRuntimeExceeded,
        /// `MaxWaitTimeInSeconds` passed (managed spot): ends `Stopped` / `MaxWaitTimeExceeded`.
        MaxWaitTimeExceeded,
    }
);

wire_enum!(
    /// `HyperParameterTuningJobStatus`.
    TuningJobStatus {
        InProgress,
        Completed,
        Failed,
        Stopping,
        Stopped,
        Deleting,
        DeleteFailed,
    }
);

wire_enum!(
    /// `HyperParameterTuningJobStrategyType`.
    TuningStrategy {
        Bayesian,
        Random,
        Hyperband,
        Grid,
    }
);

wire_enum!(
    /// `TrainingJobEarlyStoppingType`.
    EarlyStoppingType {
        Off,
        Auto,
    }
);

wire_enum!(
    /// `WarmPoolResourceStatus`.
    WarmPoolResourceStatus {
        Available,
        Terminated,
        Reused,
        InUse,
    }
);

wire_enum!(
    /// `RuleEvaluationStatus` of a Debugger or Profiler rule.
    RuleEvaluationStatus {
        InProgress,
        NoIssuesFound,
        IssuesFound,
        Error,
        Stopping,
        Stopped,
    }
);

impl Default for TuningStrategy {
    /// SageMaker's default strategy.
    fn default() -> Self {
        Self::Bayesian
    }
}

impl TrainingJobStatus {
    /// Completed, Failed and Stopped never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }

    /// InProgress and Stopping: hosts may still run.
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::Stopping)
    }
}

impl TuningJobStatus {
    /// Completed, Failed and Stopped never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }

    /// InProgress and Stopping: the tuner still works on the job.
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::Stopping)
    }
}

impl SecondaryStatus {
    /// The primary status a job has while in this secondary status.
    pub fn primary(self) -> TrainingJobStatus {
        match self {
            Self::Completed => TrainingJobStatus::Completed,
            Self::Failed => TrainingJobStatus::Failed,
            Self::Stopping => TrainingJobStatus::Stopping,
            Self::Stopped | Self::MaxRuntimeExceeded | Self::MaxWaitTimeExceeded => TrainingJobStatus::Stopped,
            _ => TrainingJobStatus::InProgress,
        }
    }

    /// The message SageMaker shows when a job enters this status (reference §5).
    pub fn default_message(self) -> &'static str {
        match self {
            Self::Starting => "Starting the training job",
            Self::Pending => "Waiting for capacity",
            Self::Downloading => "Downloading input data",
            Self::Training => "Training image download completed. Training in progress.",
            Self::Uploading => "Uploading generated training model",
            Self::Stopping => "Stopping the training job",
            Self::Stopped => "Training job stopped",
            Self::MaxRuntimeExceeded => "Training job stopped: it ran longer than MaxRuntimeInSeconds",
            Self::MaxWaitTimeExceeded => "Training job stopped: it waited longer than MaxWaitTimeInSeconds",
            Self::Completed => "Training job completed",
            Self::Failed => "Training job failed",
            Self::Interrupted => "The training job was interrupted",
            Self::Restarting => "Restarting the training job",
            Self::Updating => "Updating the training job",
        }
    }
}

impl StopReason {
    /// The secondary status a stop for this reason ends in.
    pub fn end_status(self) -> SecondaryStatus {
        match self {
            Self::Requested => SecondaryStatus::Stopped,
            Self::MaxRuntimeExceeded => SecondaryStatus::MaxRuntimeExceeded,
            Self::MaxWaitTimeExceeded => SecondaryStatus::MaxWaitTimeExceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_through_serde_and_text() {
        for s in SecondaryStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<SecondaryStatus>(&json).unwrap(), *s);
            assert_eq!(s.as_str().parse::<SecondaryStatus>().unwrap(), *s);
        }
        for s in TuningJobStatus::ALL {
            assert_eq!(s.as_str().parse::<TuningJobStatus>().unwrap(), *s);
        }
        assert_eq!(
            "Sideways".parse::<TrainingJobStatus>().unwrap_err().to_string(),
            "'Sideways' is not a TrainingJobStatus"
        );
        assert_eq!(
            SecondaryStatus::MaxRuntimeExceeded.primary(),
            TrainingJobStatus::Stopped
        );
        assert_eq!(
            StopReason::MaxRuntimeExceeded.end_status(),
            SecondaryStatus::MaxRuntimeExceeded
        );
    }
}
