"""The built-in Linear Learner driven as its users drive it: through the SageMaker SDK's own
`LinearLearner` estimator and `record_set()` (RecordIO-protobuf, labels in the records), through
boto3 with CSV (label first) for a regressor and a multiclass classifier, a tuning job on
`validation:objective_loss`; failures carry a reason that says what to fix."""
import io
import json
import os

import numpy as np
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")

from builtin_jobs import builtin_request, extract_model, kiln, predict, s3, session, sm, wait, wait_tuning  # noqa: E402,F401
from sagemaker.serializer_utils import write_numpy_to_dense_tensor  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
LL_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
BUCKET = "linear"
W = np.array([1.5, -2.0, 0.0, 0.7, 3.0], dtype="float32")


def binary(n, seed):
    """Rows whose label is the sign of W.x - 1 plus a little noise (about 97% separable)."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, len(W))) * [1, 2, 1, 5, 0.5] + [0, 1, 0, -3, 2]).astype("float32")
    y = ((X @ W - 1 + rng.normal(scale=0.5, size=n)) > 0).astype("float32")
    return X, y


def regression(n, seed):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, len(W))) * 3 + 1).astype("float32")
    return X, (X @ W + 4.0 + rng.normal(scale=0.1, size=n)).astype("float32")


def blobs(n, seed):
    """Three well-separated classes in 2 dimensions."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 6], [6, -6], [-6, -6]], dtype="float32")
    y = rng.integers(0, 3, size=n)
    return (centers[y] + rng.normal(size=(n, 2))).astype("float32"), y.astype("float32")


def ll_model(s3, uri, into):
    """Unpacks a job's model.tar.gz into `into`; returns the model JSON."""
    return json.loads((extract_model(s3, uri, into) / "linear-learner-model.json").read_text())


def ll_predict(model_dir, data, *extra):
    return [line.split(",") for line in predict("linear-learner", model_dir, data, *extra)]


def csv_bytes(X, y=None):
    rows = X if y is None else np.column_stack([y, X])
    return "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows).encode()


def ll_request(name, hps, channels, mode="File"):
    return builtin_request(name, LL_IMAGE, hps, channels, "s3://linear/boto", mode)


def test_sdk_linear_learner_binary_with_record_set(session, s3, tmp_path, capsys):
    X, y = binary(4000, seed=1)
    Xv, yv = binary(1000, seed=2)
    Xt, yt = binary(1000, seed=3)
    ll = sagemaker.LinearLearner(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge",
                                 predictor_type="binary_classifier", output_path="s3://linear/sdk",
                                 sagemaker_session=session, epochs=10)
    assert ll.training_image_uri().endswith("/linear-learner:1")
    channels = [ll.record_set(X, labels=y, channel="train"), ll.record_set(Xv, labels=yv, channel="validation"),
                ll.record_set(Xt, labels=yt, channel="test")]
    ll.fit(channels, wait=True, logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, epoch=0, validation binary_classification_cross_entropy_objective <loss>=" in out, out
    assert "#quality_metric: host=algo-1, test binary_classification_accuracy <score>=" in out, out
    job = ll.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameters"]["predictor_type"] == "binary_classifier"
    assert job["HyperParameters"]["feature_dim"] == "5"
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    # About 3% of the labels are flipped by the noise: a linear model gets the rest.
    assert metrics["test:binary_classification_accuracy"] > 0.93, metrics
    assert metrics["test:recall"] > 0.9 and metrics["test:precision"] > 0.9, metrics
    assert 0 < metrics["validation:objective_loss"] < 0.25, metrics
    assert 0 < metrics["test:objective_loss"] < 0.25, metrics
    assert metrics["test:roc_auc_score"] > 0.98, metrics

    model = ll_model(s3, ll.model_data, tmp_path / "model")
    assert model["predictor_type"] == "binary_classifier" and model["feature_dim"] == 5
    assert 0 < model["threshold"] < 1
    # The weights point where W does (the data is not normalized in the file: original space).
    w = np.array(model["weights"][0])
    assert np.dot(w, W) / (np.linalg.norm(w) * np.linalg.norm(W)) > 0.98, w

    data = tmp_path / "test.rec"
    with open(data, "wb") as f:
        write_numpy_to_dense_tensor(f, Xt)
    rows = ll_predict(tmp_path / "model", data)
    assert len(rows) == len(Xt)
    label = np.array([float(r[0]) for r in rows])
    score = np.array([float(r[1]) for r in rows])
    # Scores are the model's probabilities; labels apply its threshold.
    expect = 1 / (1 + np.exp(-(Xt @ w + model["bias"][0])))
    assert np.abs(score - expect).max() < 1e-4
    assert (label == (score >= model["threshold"])).all()
    assert (label == yt).mean() == pytest.approx(metrics["test:binary_classification_accuracy"], abs=1e-6)


def test_pipe_mode_trains_the_file_mode_model(sm, s3):
    """Pipe mode: `train` (two objects, streamed back to back) and `validation` records read from
    their FIFOs train the model File mode trains on the same objects."""
    X, y = binary(3000, seed=31)
    Xv, yv = binary(800, seed=32)
    for key, (A, b) in {"pipe/train/a.rec": (X[:1500], y[:1500]), "pipe/train/b.rec": (X[1500:], y[1500:]),
                        "pipe/validation/v.rec": (Xv, yv)}.items():
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, A, b)
        s3.put_object(Bucket="linear", Key=key, Body=buf.getvalue())
    hps = {"predictor_type": "binary_classifier", "feature_dim": "5", "epochs": "5"}
    channels = {"train": ("s3://linear/pipe/train/", None), "validation": ("s3://linear/pipe/validation/", None)}
    sm.create_training_job(**ll_request("ll-pipe", hps, channels, mode="Pipe"))
    sm.create_training_job(**ll_request("ll-pipe-file", hps, channels))
    pipe, file = wait(sm, "ll-pipe"), wait(sm, "ll-pipe-file")
    assert pipe["TrainingJobStatus"] == "Completed", pipe.get("FailureReason")
    assert file["TrainingJobStatus"] == "Completed", file.get("FailureReason")
    got = {m["MetricName"]: m["Value"] for m in pipe["FinalMetricDataList"]}
    want = {m["MetricName"]: m["Value"] for m in file["FinalMetricDataList"]}
    assert got["validation:binary_classification_accuracy"] > 0.93, got
    assert got == pytest.approx(want, rel=1e-4), (got, want)


def test_boto3_csv_regressor_recovers_the_weights(sm, s3, tmp_path):
    X, y = regression(5000, seed=4)
    Xt, yt = regression(500, seed=5)
    s3.put_object(Bucket="linear", Key="reg/train/part-0.csv", Body=csv_bytes(X, y))
    s3.put_object(Bucket="linear", Key="reg/test/part-0.csv", Body=csv_bytes(Xt, yt))
    sm.create_training_job(**ll_request("ll-regressor", {"predictor_type": "regressor", "feature_dim": "5",
                                                         "epochs": "20", "mini_batch_size": "100", "wd": "0"},
                                        {"train": ("s3://linear/reg/train/", "text/csv"),
                                         "test": ("s3://linear/reg/test/", "text/csv")}))
    d = wait(sm, "ll-regressor")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    # The noise's variance is 0.01.
    assert metrics["test:mse"] < 0.03, metrics
    assert metrics["test:absolute_loss"] < 0.15, metrics
    assert metrics["test:objective_loss"] == pytest.approx(metrics["test:mse"], rel=1e-3), metrics
    model = ll_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "model")
    assert np.abs(np.array(model["weights"][0]) - W).max() < 0.05, model
    assert abs(model["bias"][0] - 4.0) < 0.2, model
    (tmp_path / "test.csv").write_bytes(csv_bytes(Xt, yt))
    pred = np.array([float(r[0]) for r in ll_predict(tmp_path / "model", tmp_path / "test.csv", "--has-label")])
    assert np.mean((pred - yt) ** 2) == pytest.approx(metrics["test:mse"], rel=1e-3)


def test_boto3_csv_multiclass(sm, s3, tmp_path):
    X, y = blobs(3000, seed=6)
    Xt, yt = blobs(300, seed=7)
    s3.put_object(Bucket="linear", Key="multi/train/part-0.csv", Body=csv_bytes(X, y))
    s3.put_object(Bucket="linear", Key="multi/test/part-0.csv", Body=csv_bytes(Xt, yt))
    sm.create_training_job(**ll_request("ll-multiclass", {"predictor_type": "multiclass_classifier",
                                                          "num_classes": "3", "epochs": "5"},
                                        {"train": ("s3://linear/multi/train/", "text/csv"),
                                         "test": ("s3://linear/multi/test/", "text/csv")}))
    d = wait(sm, "ll-multiclass")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert metrics["test:multiclass_accuracy"] > 0.99, metrics
    assert metrics["test:macro_f_beta"] > 0.99, metrics
    model = ll_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "model")
    assert model["num_classes"] == 3 and len(model["weights"]) == 3
    (tmp_path / "test.csv").write_bytes(csv_bytes(Xt))
    rows = ll_predict(tmp_path / "model", tmp_path / "test.csv")
    assert all(len(r) == 4 for r in rows)
    label = np.array([float(r[0]) for r in rows])
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (label == probs.argmax(axis=1)).all()
    assert (label == yt).mean() > 0.99


def test_bad_hyperparameters_and_malformed_data_fail_clearly(sm, s3):
    X, y = binary(50, seed=8)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, X, y)
    good = buf.getvalue()
    s3.put_object(Bucket="linear", Key="good/train/data.rec", Body=good)
    s3.put_object(Bucket="linear", Key="trunc/train/data.rec", Body=good[: len(good) // 2 + 10])
    nolabel = io.BytesIO()
    write_numpy_to_dense_tensor(nolabel, X)
    s3.put_object(Bucket="linear", Key="nolabel/train/data.rec", Body=nolabel.getvalue())
    s3.put_object(Bucket="linear", Key="label2/train/data.csv", Body=b"0,1,2\n2,3,4\n1,5,6\n")
    s3.put_object(Bucket="linear", Key="hole/train/data.csv", Body=b"0,1,2\n1,,4\n")
    rec = lambda prefix: {"train": (f"s3://linear/{prefix}/train/", None)}  # noqa: E731
    csv = lambda prefix: {"train": (f"s3://linear/{prefix}/train/", "text/csv")}  # noqa: E731
    cases = {
        "ll-no-type": ({"feature_dim": "5"}, rec("good"), "Hyperparameter 'predictor_type' is required"),
        "ll-bad-type": ({"predictor_type": "classifier"}, rec("good"), "binary_classifier, multiclass_classifier, regressor"),
        "ll-no-classes": ({"predictor_type": "multiclass_classifier"}, rec("good"), "'num_classes' is required"),
        "ll-bad-loss": ({"predictor_type": "regressor", "loss": "logistic"}, rec("good"), "does not apply to predictor_type regressor"),
        "ll-bad-lr": ({"predictor_type": "regressor", "learning_rate": "-0.1"}, rec("good"), "'learning_rate': value '-0.1'"),
        "ll-unknown": ({"predictor_type": "regressor", "eta": "0.1"}, rec("good"), "'eta' is not a Linear Learner hyperparameter"),
        "ll-dim": ({"predictor_type": "regressor", "feature_dim": "4"}, rec("good"), "has 5 features, expected 4"),
        "ll-truncated": ({"predictor_type": "binary_classifier"}, rec("trunc"), "truncated"),
        "ll-csv-as-rec": ({"predictor_type": "binary_classifier"}, rec("label2"), "RecordIO magic"),
        "ll-no-label": ({"predictor_type": "binary_classifier"}, rec("nolabel"), "row 1 has no label"),
        "ll-label-2": ({"predictor_type": "binary_classifier"}, csv("label2"), "row 2 has label 2; binary_classifier labels must be 0 or 1"),
        "ll-hole": ({"predictor_type": "regressor"}, csv("hole"), "empty or non-finite feature"),
    }
    for name, (hps, channels, _) in cases.items():
        sm.create_training_job(**ll_request(name, hps, channels))
    for name, (_, _, reason) in cases.items():
        d = wait(sm, name)
        assert d["TrainingJobStatus"] == "Failed", (name, d["TrainingJobStatus"])
        assert reason in d["FailureReason"], (name, d["FailureReason"])
    d = sm.describe_training_job(TrainingJobName="ll-truncated")
    assert "channel 'train'" in d["FailureReason"] and "data.rec: record" in d["FailureReason"], d["FailureReason"]


def test_tuning_on_validation_objective_loss(sm, s3):
    """Two children, wd 0 and wd 10 (heavy L2 shrinks the weights): the tuner minimizes the
    injected `validation:objective_loss` and picks wd 0."""
    X, y = binary(2000, seed=9)
    Xv, yv = binary(500, seed=10)
    for ch, (A, b) in (("train", (X, y)), ("validation", (Xv, yv))):
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, A, b)
        s3.put_object(Bucket="linear", Key=f"tune/{ch}/data.rec", Body=buf.getvalue())
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-linear",
        HyperParameterTuningJobConfig={
            "Strategy": "Grid",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:objective_loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "wd", "Values": ["0", "10"]}]},
        },
        TrainingJobDefinition={
            "StaticHyperParameters": {"predictor_type": "binary_classifier", "feature_dim": "5", "epochs": "10",
                                      "mini_batch_size": "100"},
            "AlgorithmSpecification": {"TrainingImage": LL_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "InputDataConfig": [{"ChannelName": ch, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://linear/tune/{ch}/"}}} for ch in ("train", "validation")],
            "OutputDataConfig": {"S3OutputPath": "s3://linear/tune-out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        })
    d = wait_tuning(sm, "tune-linear")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 2
    best = d["BestTrainingJob"]
    assert best["TunedHyperParameters"]["wd"] == "0", best
    objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
    assert objective["MetricName"] == "validation:objective_loss"
    assert 0 < objective["Value"] < 0.25, best
    # The other child's loss is the larger one.
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-linear")
    losses = {j["TunedHyperParameters"]["wd"]: j["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
              for j in jobs["TrainingJobSummaries"]}
    assert losses["10"] > losses["0"], losses


def test_incremental_training_from_a_model_channel(sm, s3):
    """Job B starts from job A's model.tar.gz (a `model` channel) with a learning rate too small
    to move: B's test mse is A's, while the same job without the channel is far off. A model of
    another predictor_type fails B with both values named."""
    X, y = regression(2000, seed=11)
    Xt, yt = regression(300, seed=12)
    s3.put_object(Bucket="linear", Key="incr/train/part-0.csv", Body=csv_bytes(X, y))
    s3.put_object(Bucket="linear", Key="incr/test/part-0.csv", Body=csv_bytes(Xt, yt))
    data = {"train": ("s3://linear/incr/train/", "text/csv"), "test": ("s3://linear/incr/test/", "text/csv")}
    sm.create_training_job(**ll_request("ll-incr-a", {"predictor_type": "regressor", "epochs": "20",
                                                      "mini_batch_size": "100"}, data))
    a = wait(sm, "ll-incr-a")
    assert a["TrainingJobStatus"] == "Completed", a.get("FailureReason")
    a_mse = {m["MetricName"]: m["Value"] for m in a["FinalMetricDataList"]}["test:mse"]
    assert a_mse < 0.05
    prior = ("s3://linear/boto/ll-incr-a/output/model.tar.gz", "application/x-sagemaker-model")
    assert a["ModelArtifacts"]["S3ModelArtifacts"] == prior[0]
    tiny = {"predictor_type": "regressor", "epochs": "1", "learning_rate": "1e-9", "num_models": "1"}
    sm.create_training_job(**ll_request("ll-incr-b", tiny, dict(data, model=prior)))
    sm.create_training_job(**ll_request("ll-incr-cold", tiny, data))
    sm.create_training_job(**ll_request("ll-incr-wrong", {"predictor_type": "binary_classifier"},
                                        dict(data, model=prior)))
    b, cold = wait(sm, "ll-incr-b"), wait(sm, "ll-incr-cold")
    assert b["TrainingJobStatus"] == "Completed", b.get("FailureReason")
    b_mse = {m["MetricName"]: m["Value"] for m in b["FinalMetricDataList"]}["test:mse"]
    cold_mse = {m["MetricName"]: m["Value"] for m in cold["FinalMetricDataList"]}["test:mse"]
    assert b_mse == pytest.approx(a_mse, rel=0.05, abs=1e-3), (b_mse, a_mse)
    assert cold_mse > 10 * a_mse, (cold_mse, a_mse)
    wrong = wait(sm, "ll-incr-wrong")
    assert wrong["TrainingJobStatus"] == "Failed"
    assert "channel 'model': the model was trained with predictor_type regressor but this job has " \
           "predictor_type binary_classifier" in wrong["FailureReason"], wrong["FailureReason"]
