//! Which runtime a job's image maps to (architecture "Image URIs and runtimes").

use kiln_api::agent::Runtime;
use kiln_api::shapes::CreateTrainingJobRequest;

/// SageMaker's framework images: they run the user's script (`sagemaker_program`), or a
/// `ContainerEntrypoint` on the host's environment; never pulled (kiln builds their environments).
const FRAMEWORKS: &[&str] = &[
    "pytorch-training",
    "pytorch",
    "tensorflow-training",
    "huggingface-pytorch-training",
    "huggingface-tensorflow-training",
    "sagemaker-scikit-learn",
    "mxnet-training",
    "sagemaker-xgboost",
    "xgboost",
];

/// Built-in images SageMaker has that kiln does not implement yet (the implemented ones are in
/// `kiln_algos::registry`).
const UNIMPLEMENTED: &[&str] = &[
    "ntm",
    "lda",
    "object2vec",
    "ipinsights",
    "blazingtext",
    "image-classification",
    "object-detection",
    "semantic-segmentation",
    "forecasting-deepar",
    "seq2seq",
];

/// The repository part of an image URI: `123.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1`
/// → `sagemaker-xgboost`; `kiln/xgboost:latest` → `kiln/xgboost`.
pub fn image_repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A first path segment with a dot, a port or `localhost` is a registry host, not part of the name.
    let rest = match without_digest.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => without_digest,
    };
    let repo = match rest.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => rest,
    };
    repo.to_string()
}

/// Decodes a hyperparameter value the way the SageMaker toolkit does: JSON when it parses.
fn decoded(v: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => v.to_string(),
    }
}

/// Maps a job to its runtime, or explains (as a `ClientError` reason) why kiln cannot run it.
pub fn resolve(spec: &CreateTrainingJobRequest) -> Result<Runtime, String> {
    let Some(alg) = &spec.algorithm_specification else {
        return Err("ClientError: the job has no AlgorithmSpecification, so there is nothing to run.".into());
    };
    if let Some(name) = &alg.algorithm_name {
        return Err(format!(
            "ClientError: AlgorithmName '{name}' names a marketplace or custom algorithm resource, which kiln does not host. \
             Use TrainingImage with a built-in image (e.g. sagemaker-xgboost) or a framework image with sagemaker_program."
        ));
    }
    let image = alg.training_image.clone().unwrap_or_default();
    let repo = image_repository(&image);
    let short = repo.rsplit('/').next().unwrap_or(&repo).to_string();
    // kiln's own names and SageMaker's framework images are not pulled: a ContainerEntrypoint runs
    // on the host's environment. Any other image is the job's own: pulled and run.
    let own_image = !repo.starts_with("kiln/")
        && !FRAMEWORKS.contains(&short.as_str())
        && !UNIMPLEMENTED.contains(&repo.as_str())
        && kiln_algos::registry::by_image(&repo).is_none();
    if let Some(entrypoint) = &alg.container_entrypoint {
        if own_image && !image.is_empty() {
            return Ok(Runtime::Image {
                image,
                entrypoint: Some(entrypoint.clone()),
                arguments: alg.container_arguments.clone(),
            });
        }
        return Ok(Runtime::Command {
            entrypoint: entrypoint.clone(),
            arguments: alg.container_arguments.clone().unwrap_or_default(),
        });
    }
    let program = spec
        .hyper_parameters
        .as_ref()
        .and_then(|h| h.get("sagemaker_program"))
        .map(|p| decoded(p));
    if let Some(program) = program
        && !program.is_empty()
    {
        let framework = repo
            .rsplit('/')
            .next()
            .unwrap_or(&repo)
            .trim_start_matches("sagemaker-")
            .to_string();
        return Ok(Runtime::Script { framework });
    }
    if repo == "kiln/noop" {
        return Ok(Runtime::Noop);
    }
    if let Some(algo) = kiln_algos::registry::by_image(&repo) {
        return Ok(Runtime::Builtin {
            algorithm: algo.name().to_string(),
        });
    }
    if UNIMPLEMENTED.contains(&repo.as_str()) {
        return Err(format!(
            "ClientError: the built-in algorithm image '{image}' ({repo}) is not implemented by kiln yet. \
             Built-in algorithms available: {}.",
            builtin_list()
        ));
    }
    if own_image && !image.is_empty() {
        return Ok(Runtime::Image {
            image,
            entrypoint: None,
            arguments: alg.container_arguments.clone(),
        });
    }
    Err(format!(
        "ClientError: cannot run image '{image}': it is a SageMaker framework image or a kiln name, and no \
         'sagemaker_program' hyperparameter selects the script to run in it. Set sagemaker_program (script mode), \
         use a built-in image (sagemaker-xgboost, kiln/xgboost), or set ContainerEntrypoint to run a command."
    ))
}

/// The built-ins and the images they answer to, for messages:
/// `xgboost (sagemaker-xgboost, xgboost, kiln/xgboost), kmeans (...)`.
fn builtin_list() -> String {
    kiln_algos::registry::ALGORITHMS
        .iter()
        .map(|a| format!("{} ({})", a.name(), a.images().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The built-in algorithm the job runs, if any (for injecting its metric definitions).
pub fn builtin_algorithm(spec: &CreateTrainingJobRequest) -> Option<&'static dyn kiln_algos::registry::Algorithm> {
    match resolve(spec) {
        Ok(Runtime::Builtin { algorithm }) => kiln_algos::registry::by_name(&algorithm),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::shapes::AlgorithmSpecification;
    use std::collections::BTreeMap;

    fn spec(image: &str, hps: &[(&str, &str)]) -> CreateTrainingJobRequest {
        CreateTrainingJobRequest {
            algorithm_specification: Some(AlgorithmSpecification {
                training_image: Some(image.into()),
                training_input_mode: "File".into(),
                ..Default::default()
            }),
            hyper_parameters: Some(
                hps.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn repositories() {
        assert_eq!(
            image_repository("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"),
            "sagemaker-xgboost"
        );
        assert_eq!(image_repository("kiln/xgboost"), "kiln/xgboost");
        assert_eq!(image_repository("localhost:5000/team/img:tag"), "team/img");
        assert_eq!(image_repository("img@sha256:abc"), "img");
    }

    #[test]
    fn mapping() {
        let xgb = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1";
        assert_eq!(
            resolve(&spec(xgb, &[])),
            Ok(Runtime::Builtin {
                algorithm: "xgboost".into()
            })
        );
        assert_eq!(
            resolve(&spec(xgb, &[("sagemaker_program", "\"train.py\"")])),
            Ok(Runtime::Script {
                framework: "xgboost".into()
            })
        );
        let pt = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310";
        assert_eq!(
            resolve(&spec(pt, &[("sagemaker_program", "train.py")])),
            Ok(Runtime::Script {
                framework: "pytorch-training".into()
            })
        );
        assert!(resolve(&spec(pt, &[])).unwrap_err().contains("cannot run image"));
        assert_eq!(
            resolve(&spec("382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1", &[])),
            Ok(Runtime::Builtin {
                algorithm: "kmeans".into()
            })
        );
        assert_eq!(
            builtin_algorithm(&spec("kiln/kmeans", &[])).map(|a| a.name()),
            Some("kmeans")
        );
        assert!(builtin_algorithm(&spec(pt, &[])).is_none());
        assert!(
            resolve(&spec("382416733822.dkr.ecr.us-east-1.amazonaws.com/ntm:1", &[]))
                .unwrap_err()
                .contains("not implemented")
        );
        assert_eq!(resolve(&spec("kiln/noop", &[])), Ok(Runtime::Noop));
    }
}
