//! The table of built-in algorithms: one [`Algorithm`] per SageMaker built-in kiln implements.
//! The engine (image → runtime, injected metric definitions), the `kiln algo NAME ...` command
//! and `kiln train --image NAME` look algorithms up here, so a new built-in is one entry in
//! [`ALGORITHMS`] rather than a name spelled in four crates.

use std::collections::BTreeMap;
use std::io::Write;

use crate::container::{
    ChannelConfig, JobError, JobPaths, read_channels, read_hyperparameters, read_resource_config, thread_count,
};

/// One channel a built-in accepts.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSpec {
    /// `train`, `validation`, `test`.
    pub name: &'static str,
    /// Whether a job without it fails.
    pub required: bool,
}

impl ChannelSpec {
    /// `train`, which every built-in requires.
    pub const TRAIN: ChannelSpec = ChannelSpec {
        name: "train",
        required: true,
    };

    /// `validation`, optional.
    pub const VALIDATION: ChannelSpec = ChannelSpec::optional("validation");
    /// `test`, optional.
    pub const TEST: ChannelSpec = ChannelSpec::optional("test");
    /// `model` (incremental training: an earlier job's model), optional.
    pub const MODEL: ChannelSpec = ChannelSpec::optional(crate::container::MODEL_CHANNEL);

    const fn optional(name: &'static str) -> ChannelSpec {
        ChannelSpec { name, required: false }
    }
}

/// A SageMaker built-in algorithm, as kiln runs it inside the container contract.
pub trait Algorithm: Sync {
    /// The name used by `kiln algo NAME` and the runtime (`xgboost`, `kmeans`).
    fn name(&self) -> &'static str;

    /// Image repository names that run this algorithm (`sagemaker-xgboost`, `kmeans`,
    /// `kiln/kmeans`): the part of an image URI between the registry host and the tag.
    fn images(&self) -> &'static [&'static str];

    /// The channels the algorithm reads.
    fn channels(&self) -> &'static [ChannelSpec];

    /// Content types a channel may name (SageMaker's spellings); the first is the default
    /// when the channel names none.
    fn content_types(&self) -> &'static [&'static str];

    /// Parses and checks hyperparameters as SageMaker does (names, defaults, ranges); the error
    /// is the job's failure reason.
    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError>;

    /// The (Name, Regex) metric definitions SageMaker injects for this algorithm's image,
    /// matching the log lines the trainer prints.
    fn metric_definitions(&self) -> Vec<(String, String)>;

    /// Whether a metric (`validation:auc`, `test:msd`) is maximized when tuned on; `None` if the
    /// algorithm does not print it.
    fn objective_is_maximize(&self, metric: &str) -> Option<bool>;

    /// Usage text of `kiln algo NAME`.
    fn usage(&self) -> &'static str;

    /// `kiln algo NAME train`: runs the container contract under `paths`; `out` gets the metric
    /// lines, `err` the diagnostics.
    fn train(
        &self,
        paths: &JobPaths,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> Result<(), JobError>;

    /// `kiln algo NAME predict ARGS`: writes predictions for the data named in `args`.
    fn predict(&self, args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError>;
}

/// Every built-in kiln implements.
pub static ALGORITHMS: &[&dyn Algorithm] = &[
    &crate::xgboost::XGBOOST,
    &crate::kmeans::KMEANS,
    &crate::linear::LINEAR_LEARNER,
    &crate::pca::PCA,
    &crate::knn::KNN,
    &crate::rcf::RCF,
    &crate::fm::FACTORIZATION_MACHINES,
];

/// The algorithm named `name` (case-insensitive).
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    ALGORITHMS.iter().copied().find(|a| a.name().eq_ignore_ascii_case(name))
}

/// The algorithm an image repository (`sagemaker-xgboost`, `kiln/kmeans`) runs.
pub fn by_image(repository: &str) -> Option<&'static dyn Algorithm> {
    ALGORITHMS.iter().copied().find(|a| a.images().contains(&repository))
}

/// The names of every built-in, for messages (`xgboost, kmeans`).
pub fn names() -> String {
    ALGORITHMS.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
}

/// Checks a job's channels against `algo`'s: no unknown channel, every required one present.
/// `code` is tolerated (the SDK may add it).
pub fn check_channels<'a>(
    algo: &dyn Algorithm,
    present: impl IntoIterator<Item = &'a String> + Clone,
) -> Result<(), JobError> {
    let known = algo.channels();
    let list = known
        .iter()
        .map(|c| {
            if c.required {
                format!("'{}' (required)", c.name)
            } else {
                format!("'{}'", c.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    for name in present.clone() {
        if name != "code" && !known.iter().any(|c| c.name == name) {
            return Err(JobError::User(format!(
                "Extraneous channel found: {name}. The {} algorithm accepts the channels {list}; remove '{name}'",
                algo.name()
            )));
        }
    }
    for c in known.iter().filter(|c| c.required) {
        if !present.clone().into_iter().any(|p| p == c.name) {
            return Err(JobError::User(format!(
                "channel '{}' is required: add a '{}' channel with the {} data",
                c.name,
                c.name,
                if c.name == "train" { "training" } else { c.name }
            )));
        }
    }
    Ok(())
}

/// The part of `train` every single-instance built-in shares: reads the hyperparameters (parsed
/// by `parse`) and the channels (checked against `algo`'s), refuses more than one instance (the
/// error names the algorithm as `label`), and runs `train_job(channels, params, host, threads)`
/// on a pool of the job's threads.
pub(crate) fn train_on_one_host<P: Sync>(
    algo: &dyn Algorithm,
    label: &str,
    paths: &JobPaths,
    env: &dyn Fn(&str) -> Option<String>,
    parse: impl FnOnce(&BTreeMap<String, String>) -> Result<P, JobError>,
    train_job: impl FnOnce(&BTreeMap<String, ChannelConfig>, &P, &str, usize) -> Result<(), JobError> + Send,
) -> Result<(), JobError> {
    let hp = read_hyperparameters(&paths.config_dir)?;
    let channels = read_channels(paths)?;
    check_channels(algo, channels.keys())?;
    let params = parse(&hp)?;
    let rc = read_resource_config(&paths.config_dir)?;
    if let Some(rc) = rc.as_ref().filter(|rc| rc.hosts.len() > 1) {
        return Err(JobError::User(format!(
            "kiln's {label} trains on one instance; this job has {} (InstanceCount): set it to 1",
            rc.hosts.len()
        )));
    }
    let host = rc.map_or_else(|| "algo-1".to_string(), |r| r.current_host);
    let threads = thread_count(None, env);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| JobError::Internal(format!("could not start {threads} threads: {e}")))?;
    pool.install(|| train_job(&channels, &params, &host, threads))
}

/// The text of `file_name` in a `model` channel (incremental training): the file itself, or the
/// `model.tar.gz` of an earlier job holding it. Returns the text and how to name it in errors;
/// `algo` (e.g. "Linear Learner") says whose model the channel should hold.
pub(crate) fn read_prior_model(
    dir: &std::path::Path,
    file_name: &str,
    algo: &str,
) -> Result<(String, String), JobError> {
    let user = |m: String| JobError::User(format!("channel 'model': {m}"));
    let files = crate::reader::list_files(dir).map_err(|e| user(e.to_string()))?;
    for f in &files {
        let shown = f.strip_prefix(dir).unwrap_or(f).display().to_string();
        let bytes = std::fs::read(f).map_err(|e| user(format!("could not read {shown}: {e}")))?;
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let bad = |e: std::io::Error| user(format!("{shown} is not a readable tar.gz archive ({e})"));
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
            for entry in archive.entries().map_err(bad)? {
                let mut entry = entry.map_err(bad)?;
                let is_model = entry.path().map_err(bad)?.file_name().is_some_and(|n| n == file_name);
                if is_model && entry.header().entry_type().is_file() {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut entry, &mut text).map_err(bad)?;
                    return Ok((text, format!("channel 'model': {shown}: {file_name}")));
                }
            }
        } else if f.file_name().is_some_and(|n| n == file_name) {
            return Ok((
                String::from_utf8_lossy(&bytes).into_owned(),
                format!("channel 'model': {shown}"),
            ));
        }
    }
    Err(user(format!(
        "no {file_name} (or model.tar.gz holding it) found; give the model.tar.gz of a kiln {algo} training job"
    )))
}

/// What `kiln algo NAME predict` is given: every built-in takes the same flags (`--model`, `--data`,
/// `--content-type`, `--output`, `--nthread`), and `--has-label` where its data may carry a label.
#[derive(Debug, Default)]
pub(crate) struct PredictArgs {
    pub model: std::path::PathBuf,
    pub data: std::path::PathBuf,
    pub content_type: Option<String>,
    pub output: Option<std::path::PathBuf>,
    pub nthread: Option<usize>,
    pub has_label: bool,
}

impl PredictArgs {
    /// Parses `--flag value` and `--flag=value`; errors end with the command's `usage`.
    pub(crate) fn parse(args: &[&str], usage: &str, takes_label: bool) -> Result<PredictArgs, JobError> {
        let usage_error = |m: &str| JobError::User(format!("{m}\n{usage}"));
        let (mut model, mut data) = (None, None);
        let mut parsed = PredictArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (key, inline) = match a.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v)),
                _ => (*a, None),
            };
            let mut value = || {
                inline
                    .or_else(|| it.next().copied())
                    .ok_or_else(|| usage_error(&format!("{key} needs a value")))
            };
            match key {
                "--model" => model = Some(std::path::PathBuf::from(value()?)),
                "--data" => data = Some(std::path::PathBuf::from(value()?)),
                "--content-type" => parsed.content_type = Some(value()?.to_string()),
                "--output" => parsed.output = Some(std::path::PathBuf::from(value()?)),
                "--nthread" => {
                    let v = value()?;
                    parsed.nthread = Some(
                        v.parse::<usize>()
                            .map_err(|_| usage_error(&format!("--nthread '{v}' is not a number")))?,
                    );
                }
                "--has-label" if takes_label => parsed.has_label = true,
                other => return Err(usage_error(&format!("unexpected argument '{other}'"))),
            }
        }
        parsed.model = model.ok_or_else(|| usage_error("--model is required"))?;
        parsed.data = data.ok_or_else(|| usage_error("--data is required"))?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(by_name("XGBoost").map(|a| a.name()), Some("xgboost"));
        assert_eq!(by_name("kmeans").map(|a| a.name()), Some("kmeans"));
        assert_eq!(by_name("pca").map(|a| a.name()), Some("pca"));
        assert_eq!(by_image("pca").map(|a| a.name()), Some("pca"));
        assert_eq!(by_image("kiln/pca").map(|a| a.name()), Some("pca"));
        assert_eq!(by_name("knn").map(|a| a.name()), Some("knn"));
        assert_eq!(by_image("knn").map(|a| a.name()), Some("knn"));
        assert_eq!(by_image("kiln/knn").map(|a| a.name()), Some("knn"));
        assert_eq!(by_name("randomcutforest").map(|a| a.name()), Some("randomcutforest"));
        assert_eq!(by_image("randomcutforest").map(|a| a.name()), Some("randomcutforest"));
        assert_eq!(
            by_image("kiln/randomcutforest").map(|a| a.name()),
            Some("randomcutforest")
        );
        assert_eq!(by_image("sagemaker-xgboost").map(|a| a.name()), Some("xgboost"));
        assert_eq!(by_image("kiln/xgboost").map(|a| a.name()), Some("xgboost"));
        assert_eq!(by_image("kmeans").map(|a| a.name()), Some("kmeans"));
        assert_eq!(by_image("kiln/kmeans").map(|a| a.name()), Some("kmeans"));
        assert_eq!(by_image("linear-learner").map(|a| a.name()), Some("linear-learner"));
        assert_eq!(
            by_image("kiln/linear-learner").map(|a| a.name()),
            Some("linear-learner")
        );
        assert_eq!(by_name("Linear-Learner").map(|a| a.name()), Some("linear-learner"));
        assert_eq!(
            by_image("factorization-machines").map(|a| a.name()),
            Some("factorization-machines")
        );
        assert_eq!(
            by_image("kiln/factorization-machines").map(|a| a.name()),
            Some("factorization-machines")
        );
        assert!(by_image("ntm").is_none());
        // No two algorithms answer to one image.
        for a in ALGORITHMS {
            for i in a.images() {
                assert_eq!(by_image(i).map(|b| b.name()), Some(a.name()), "{i}");
            }
        }
    }

    #[test]
    fn channel_checks() {
        let km = by_name("kmeans").unwrap();
        let ch = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_channels(km, &ch(&["train", "test"])).is_ok());
        let e = check_channels(km, &ch(&["test"])).unwrap_err().to_string();
        assert!(e.starts_with("channel 'train' is required"), "{e}");
        let e = check_channels(km, &ch(&["train", "validation"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Extraneous channel found: validation"), "{e}");
    }
}
