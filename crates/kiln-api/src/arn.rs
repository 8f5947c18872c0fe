//! SageMaker ARNs: `arn:aws:sagemaker:<region>:<account>:<resource-type>/<name>`.

/// Resource types kiln issues ARNs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// `training-job`
    TrainingJob,
    /// `hyper-parameter-tuning-job`
    TuningJob,
}

impl ResourceType {
    /// The ARN segment naming the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrainingJob => "training-job",
            Self::TuningJob => "hyper-parameter-tuning-job",
        }
    }
}

/// Builds an ARN; names keep the case they were given.
pub fn build(region: &str, account: &str, kind: ResourceType, name: &str) -> String {
    format!("arn:aws:sagemaker:{region}:{account}:{}/{name}", kind.as_str())
}

/// A parsed SageMaker ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub kind: ResourceType,
    pub name: String,
}

/// Parses `arn:aws*:sagemaker:<region>:<account>:<type>/<name>`; `None` for anything else.
pub fn parse(arn: &str) -> Option<Arn> {
    let mut parts = arn.splitn(6, ':');
    let (scheme, partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    if scheme != "arn" || !partition.starts_with("aws") || service != "sagemaker" {
        return None;
    }
    let (kind, name) = resource.split_once('/')?;
    let kind = match kind {
        "training-job" => ResourceType::TrainingJob,
        "hyper-parameter-tuning-job" => ResourceType::TuningJob,
        _ => return None,
    };
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(Arn {
        region: region.to_string(),
        account: account.to_string(),
        kind,
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = build("us-west-2", "123456789012", ResourceType::TrainingJob, "My-Job");
        assert_eq!(a, "arn:aws:sagemaker:us-west-2:123456789012:training-job/My-Job");
        let p = parse(&a).unwrap();
        assert_eq!(
            (p.kind, p.name.as_str(), p.account.as_str()),
            (ResourceType::TrainingJob, "My-Job", "123456789012")
        );
        assert!(parse("arn:aws:s3:::bucket").is_none());
        assert!(parse("arn:aws:sagemaker:r:1:model/x").is_none());
    }
}
