//! Training-job statuses and the transitions the state machine allows.

use std::fmt;
use std::str::FromStr;

/// `TrainingJobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
    Stopping,
    Stopped,
    Deleting,
}

/// `SecondaryStatus` values kiln emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secondary {
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

macro_rules! string_enum {
    ($t:ty { $($v:ident),* }) => {
        impl $t {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v)),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $(stringify!($v) => Ok(Self::$v),)* other => Err(format!("unknown status '{other}'")) }
            }
        }
    };
}

string_enum!(JobStatus {
    InProgress,
    Completed,
    Failed,
    Stopping,
    Stopped,
    Deleting
});
string_enum!(Secondary {
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
    Updating
});

impl JobStatus {
    /// Completed, Failed and Stopped never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Stopped)
    }
}

impl Secondary {
    /// The primary status a job has while in this secondary status.
    pub fn primary(self) -> JobStatus {
        match self {
            Self::Completed => JobStatus::Completed,
            Self::Failed => JobStatus::Failed,
            Self::Stopping => JobStatus::Stopping,
            Self::Stopped | Self::MaxRuntimeExceeded | Self::MaxWaitTimeExceeded => JobStatus::Stopped,
            _ => JobStatus::InProgress,
        }
    }

    /// Whether the state machine allows `self → to` (reference §5 flows).
    pub fn can_go_to(self, to: Secondary) -> bool {
        use Secondary::*;
        if self.primary().is_terminal() {
            return false;
        }
        match (self, to) {
            (Stopping, Stopped | MaxRuntimeExceeded | MaxWaitTimeExceeded | Failed | Uploading) => true,
            (Stopping, _) => false,
            // Any running phase can be stopped, fail, or be interrupted (spot) / restarted (retry).
            (_, Stopping | Failed | Interrupted | Restarting) => true,
            (Starting | Pending | Restarting | Interrupted, Starting | Pending | Downloading) => true,
            (Downloading, Training) => true,
            (Training, Uploading) => true,
            (Uploading, Completed) => true,
            (Updating, Training | Completed) => true,
            (Training, Updating) => true,
            _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_flow_is_allowed_and_terminal_is_final() {
        use Secondary::*;
        let flow = [Starting, Downloading, Training, Uploading, Completed];
        for w in flow.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(!Completed.can_go_to(Stopping));
        assert!(!Starting.can_go_to(Completed));
        assert!(Training.can_go_to(Stopping) && Stopping.can_go_to(Stopped));
        assert!(!Stopping.can_go_to(Training));
        assert_eq!(MaxRuntimeExceeded.primary(), JobStatus::Stopped);
        assert_eq!("InProgress".parse::<JobStatus>(), Ok(JobStatus::InProgress));
    }
}
