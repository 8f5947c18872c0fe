//! What can go wrong in a pull, worded for a training job's `FailureReason` (`ClientError: <message>`).

use std::path::PathBuf;

use crate::reference::ReferenceError;

/// Why an image could not be pulled. Every message names the image, the registry (with the mirror
/// that served it, if any) and what the registry answered.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image name does not parse.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),

    /// The registry has no such repository, tag or digest (HTTP 404).
    #[error("image '{image}' not found: registry {registry} answered {answer}")]
    NotFound {
        image: String,
        registry: String,
        answer: String,
    },

    /// The registry or its token service refused access (HTTP 401/403).
    #[error("access to image '{image}' denied: registry {registry} answered {answer}; {hint}")]
    Denied {
        image: String,
        registry: String,
        answer: String,
        hint: String,
    },

    /// No connection, TLS failure, timeout or an interrupted transfer.
    #[error("registry {registry} is unreachable for image '{image}': {cause}")]
    Unreachable {
        image: String,
        registry: String,
        cause: String,
    },

    /// Any other answer than success, 401, 403 or 404.
    #[error("registry {registry} failed to serve image '{image}': it answered {answer}")]
    Registry {
        image: String,
        registry: String,
        answer: String,
    },

    /// A manifest or blob did not have the content its digest promises.
    #[error(
        "image '{image}' from registry {registry}: {what} should be {expected} but the registry sent {actual}; \
         the registry serves corrupt or altered data"
    )]
    DigestMismatch {
        image: String,
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest, config or layer kind that kiln cannot run (schema 1, artifacts, unknown compressions).
    #[error("image '{image}' from registry {registry} is not supported: kiln cannot use {what}")]
    Unsupported {
        image: String,
        registry: String,
        what: String,
    },

    /// An index without a manifest for the platform kiln runs on.
    #[error("image '{image}' from registry {registry} has no {platform} variant (it has: {available})")]
    NoPlatform {
        image: String,
        registry: String,
        platform: String,
        available: String,
    },

    /// A manifest or config blob that is not what the spec says it should be.
    #[error("image '{image}' from registry {registry} has an invalid {what}: {reason}")]
    Invalid {
        image: String,
        registry: String,
        what: String,
        reason: String,
    },

    /// A layer that writes outside its rootfs, or is not a readable archive.
    #[error("image '{image}' from registry {registry}: layer {layer} cannot be unpacked: {reason}")]
    BadLayer {
        image: String,
        registry: String,
        layer: String,
        reason: String,
    },

    /// kiln's own disk: the cache directory cannot be written or read.
    #[error("image cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP client could not be set up (kiln's side, not the registry's).
    #[error("cannot set up the registry client: {0}")]
    Client(String),
}

impl PullError {
    /// Whether the job's image is at fault (SageMaker's `ClientError`), rather than kiln's host
    /// (a full disk, an unwritable cache: `InternalServerError`).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, PullError::Cache { .. } | PullError::Client(_))
    }

    pub(crate) fn cache(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PullError {
        let path = path.into();
        move |source| PullError::Cache { path, source }
    }
}

/// The image and registry every error of one pull names.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub image: String,
    pub registry: String,
}

impl Context {
    pub fn not_found(&self, answer: String) -> PullError {
        PullError::NotFound {
            image: self.image.clone(),
            registry: self.registry.clone(),
            answer,
        }
    }

    pub fn denied(&self, answer: String, hint: String) -> PullError {
        PullError::Denied {
            image: self.image.clone(),
            registry: self.registry.clone(),
            answer,
            hint,
        }
    }

    pub fn unreachable(&self, cause: String) -> PullError {
        PullError::Unreachable {
            image: self.image.clone(),
            registry: self.registry.clone(),
            cause,
        }
    }

    pub fn registry(&self, answer: String) -> PullError {
        PullError::Registry {
            image: self.image.clone(),
            registry: self.registry.clone(),
            answer,
        }
    }

    pub fn mismatch(&self, what: String, expected: String, actual: String) -> PullError {
        PullError::DigestMismatch {
            image: self.image.clone(),
            registry: self.registry.clone(),
            what,
            expected,
            actual,
        }
    }

    pub fn unsupported(&self, what: String) -> PullError {
        PullError::Unsupported {
            image: self.image.clone(),
            registry: self.registry.clone(),
            what,
        }
    }

    pub fn invalid(&self, what: &str, reason: String) -> PullError {
        PullError::Invalid {
            image: self.image.clone(),
            registry: self.registry.clone(),
            what: what.into(),
            reason,
        }
    }

    pub fn bad_layer(&self, layer: String, reason: String) -> PullError {
        PullError::BadLayer {
            image: self.image.clone(),
            registry: self.registry.clone(),
            layer,
            reason,
        }
    }

    pub fn no_platform(&self, platform: String, available: String) -> PullError {
        PullError::NoPlatform {
            image: self.image.clone(),
            registry: self.registry.clone(),
            platform,
            available,
        }
    }
}

/// An error and its causes on one line: reqwest's own message ("error sending request") says
/// little; the causes say "connection refused" or "invalid peer certificate".
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
