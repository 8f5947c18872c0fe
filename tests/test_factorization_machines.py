"""The built-in Factorization Machines driven as its users drive it: through the SageMaker SDK's
own `FactorizationMachines` estimator on sparse one-hot data written by the SDK's
`write_spmatrix_to_sparse_tensor`, through boto3 for a regressor in Pipe mode, a tuning job on
`test:rmse`; failures carry a reason that says what to fix."""
import io
import json
import os

import numpy as np
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")
sparse = pytest.importorskip("scipy.sparse")

from builtin_jobs import builtin_request, extract_model, kiln, predict, s3, session, sm, wait, wait_tuning  # noqa: E402,F401
from sagemaker.amazon.amazon_estimator import RecordSet  # noqa: E402
from sagemaker.serializer_utils import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
FM_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/factorization-machines:1"
BUCKET = "fmachines"
USERS, ITEMS = 60, 40
DIM = USERS + ITEMS


def pairs(n, seed, regress=False):
    """One-hot (user, item) rows, USERS + ITEMS columns with two non-zeros each. The target is
    an interaction only: binary, whether the user's and the item's hidden signs agree; regressor,
    3 + the dot product of two hidden 2-d factors (plus noise). Each user's and item's mean
    effect is about zero, so a linear model on the one-hot columns is near chance."""
    rng = np.random.default_rng(seed)
    hidden = np.random.default_rng(1000)
    su, si = hidden.choice([-1, 1], USERS), hidden.choice([-1, 1], ITEMS)
    fu, fi = hidden.normal(size=(USERS, 2)), hidden.normal(size=(ITEMS, 2))
    u, i = rng.integers(0, USERS, n), rng.integers(0, ITEMS, n)
    X = sparse.csr_matrix((np.ones(2 * n, dtype="float32"), (np.repeat(np.arange(n), 2),
                                                             np.column_stack([u, USERS + i]).ravel())),
                          shape=(n, DIM))
    if regress:
        y = 3 + (fu[u] * fi[i]).sum(axis=1) + rng.normal(scale=0.1, size=n)
    else:
        y = (su[u] * si[i] > 0).astype("float64")
    return X, y.astype("float32")


def sparse_rec(X, y=None):
    buf = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buf, X, y)
    return buf.getvalue()


def dense_rec(X, y=None):
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, np.asarray(X.todense(), dtype="float32"), y)
    return buf.getvalue()


def fm_model(s3, uri, into):
    """Unpacks a job's model.tar.gz into `into`; returns the model JSON."""
    return json.loads((extract_model(s3, uri, into) / "factorization-machines-model.json").read_text())


def fm_predict(model_dir, data, *extra):
    return [line.split(",") for line in predict("factorization-machines", model_dir, data, *extra)]


def fm_scores(model, X):
    """The FM formula in numpy, from the model file: w0 + Xw + sum_{i<j} <v_i, v_j> x_i x_j."""
    w, V = np.array(model["w"]), np.array(model["V"])
    XV = X @ V
    pair = 0.5 * ((XV ** 2).sum(axis=1) - (X.multiply(X) @ (V ** 2)).sum(axis=1))
    return model["w0"] + X @ w + np.asarray(pair).ravel()


def fm_request(name, hps, channels, mode="File"):
    return builtin_request(name, FM_IMAGE, hps, channels, "s3://fmachines/boto", mode)


FAST = {"epochs": 15, "mini_batch_size": 100, "linear_lr": 0.02, "factors_lr": 0.02, "factors_init_sigma": 0.1}


def test_sdk_binary_classifier_on_sparse_one_hot(session, s3, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    X, y = pairs(6000, seed=1)
    Xt, yt = pairs(1500, seed=2)
    s3.put_object(Bucket="fmachines", Key="bin/train/data.rec", Body=sparse_rec(X, y))
    s3.put_object(Bucket="fmachines", Key="bin/test/data.rec", Body=sparse_rec(Xt, yt))
    fm = sagemaker.FactorizationMachines(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge",
                                         num_factors=4, predictor_type="binary_classifier",
                                         output_path="s3://fmachines/sdk", sagemaker_session=session, **FAST)
    assert fm.training_image_uri().endswith("/factorization-machines:1")
    channels = [RecordSet("s3://fmachines/bin/train/", len(y), DIM, s3_data_type="S3Prefix", channel="train"),
                RecordSet("s3://fmachines/bin/test/", len(yt), DIM, s3_data_type="S3Prefix", channel="test")]
    fm.fit(channels, wait=True, logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, epoch=0, train binary_classification_accuracy <score>=" in out, out
    assert "#quality_metric: host=algo-1, test binary_f_1.000 <score>=" in out, out
    assert "#test_score (algo-1) : ('binary_classification_cross_entropy', " in out, out
    job = fm.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameters"]["feature_dim"] == str(DIM)
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["test:binary_classification_accuracy"] > 0.97, metrics
    assert metrics["test:binary_f_beta"] > 0.97, metrics
    assert metrics["test:binary_classification_cross_entropy"] < 0.2, metrics
    # A linear model on the same one-hot columns is near chance: the label is an interaction.
    linear = (LogisticRegression(max_iter=1000).fit(X, y).predict(Xt) == yt).mean()
    assert linear < 0.65 and metrics["test:binary_classification_accuracy"] > linear + 0.3, (linear, metrics)

    model = fm_model(s3, fm.model_data, tmp_path / "model")
    assert model["predictor_type"] == "binary_classifier" and model["feature_dim"] == DIM
    assert len(model["w"]) == DIM and np.array(model["V"]).shape == (DIM, 4)
    (tmp_path / "test.rec").write_bytes(sparse_rec(Xt))
    rows = fm_predict(tmp_path / "model", tmp_path / "test.rec")
    assert len(rows) == len(yt)
    label = np.array([float(r[0]) for r in rows])
    score = np.array([float(r[1]) for r in rows])
    expect = 1 / (1 + np.exp(-fm_scores(model, Xt)))
    assert np.abs(score - expect).max() < 1e-4
    assert (label == (score >= 0.5)).all()
    assert (label == yt).mean() == pytest.approx(metrics["test:binary_classification_accuracy"], abs=1e-6)


def test_boto3_regressor_in_pipe_mode_from_dense_records(sm, s3, tmp_path):
    X, y = pairs(6000, seed=3, regress=True)
    Xt, yt = pairs(1000, seed=4, regress=True)
    s3.put_object(Bucket="fmachines", Key="reg/train/data.rec", Body=dense_rec(X, y))
    s3.put_object(Bucket="fmachines", Key="reg/test/data.rec", Body=sparse_rec(Xt, yt))
    hps = {k: str(v) for k, v in dict(FAST, feature_dim=DIM, num_factors=4, predictor_type="regressor").items()}
    sm.create_training_job(**fm_request("fm-regressor", hps, {"train": ("s3://fmachines/reg/train/", None),
                                                              "test": ("s3://fmachines/reg/test/", None)}, mode="Pipe"))
    d = wait(sm, "fm-regressor")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    # The interaction's standard deviation is about 1.4 and the noise's 0.1.
    assert metrics["test:rmse"] < 0.35, metrics
    model = fm_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "model")
    assert model["predictor_type"] == "regressor"
    (tmp_path / "test.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in np.column_stack(
        [yt, np.asarray(Xt.todense())])))
    pred = np.array([float(r[0]) for r in fm_predict(tmp_path / "model", tmp_path / "test.csv", "--has-label")])
    assert np.abs(pred - fm_scores(model, Xt)).max() < 1e-3
    assert np.sqrt(np.mean((pred - yt) ** 2)) == pytest.approx(metrics["test:rmse"], rel=1e-3)


def test_tuning_on_test_rmse(sm, s3):
    """Two children, factors frozen (factors_lr 0: a linear model) and learning: the tuner
    minimizes the injected `test:rmse` and picks the one that learns the interaction."""
    X, y = pairs(3000, seed=5, regress=True)
    Xt, yt = pairs(500, seed=6, regress=True)
    s3.put_object(Bucket="fmachines", Key="tune/train/data.rec", Body=sparse_rec(X, y))
    s3.put_object(Bucket="fmachines", Key="tune/test/data.rec", Body=sparse_rec(Xt, yt))
    static = {k: str(v) for k, v in dict(FAST, feature_dim=DIM, num_factors=4, predictor_type="regressor").items()}
    del static["factors_lr"]
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-fm",
        HyperParameterTuningJobConfig={
            "Strategy": "Grid",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "test:rmse"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "factors_lr", "Values": ["0", "0.02"]}]},
        },
        TrainingJobDefinition={
            "StaticHyperParameters": static,
            "AlgorithmSpecification": {"TrainingImage": FM_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "InputDataConfig": [{"ChannelName": ch, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://fmachines/tune/{ch}/"}}} for ch in ("train", "test")],
            "OutputDataConfig": {"S3OutputPath": "s3://fmachines/tune-out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        })
    d = wait_tuning(sm, "tune-fm")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 2
    best = d["BestTrainingJob"]
    assert best["TunedHyperParameters"]["factors_lr"] == "0.02", best
    objective = best["FinalHyperParameterTuningJobObjectiveMetric"]
    assert objective["MetricName"] == "test:rmse" and objective["Value"] < 0.5, best
    jobs = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-fm")
    rmse = {j["TunedHyperParameters"]["factors_lr"]: j["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
            for j in jobs["TrainingJobSummaries"]}
    assert rmse["0"] > 1.0 > rmse["0.02"], rmse


def test_bad_hyperparameters_and_data_fail_clearly(sm, s3):
    X, y = pairs(50, seed=7)
    s3.put_object(Bucket="fmachines", Key="bad/good/data.rec", Body=sparse_rec(X, y))
    s3.put_object(Bucket="fmachines", Key="bad/label2/data.rec", Body=sparse_rec(X, np.full_like(y, 2)))
    s3.put_object(Bucket="fmachines", Key="bad/nolabel/data.rec", Body=sparse_rec(X))
    s3.put_object(Bucket="fmachines", Key="bad/csv/data.csv", Body=b"1,0,1\n0,1,0\n")
    base = {"feature_dim": str(DIM), "num_factors": "4", "predictor_type": "binary_classifier"}
    rec = lambda prefix, ct=None: {"train": (f"s3://fmachines/bad/{prefix}/", ct)}  # noqa: E731
    cases = {
        "fm-no-type": ({"feature_dim": str(DIM), "num_factors": "4"}, rec("good"),
                       "Hyperparameter 'predictor_type' is required by Factorization Machines"),
        "fm-no-factors": ({"feature_dim": str(DIM), "predictor_type": "regressor"}, rec("good"),
                          "Hyperparameter 'num_factors' is required"),
        "fm-bad-type": (dict(base, predictor_type="multiclass_classifier"), rec("good"),
                        "is not one of: binary_classifier, regressor"),
        "fm-bad-lr": (dict(base, factors_lr="-1"), rec("good"), "'factors_lr': value '-1' is out of range"),
        "fm-unknown": (dict(base, learning_rate="0.1"), rec("good"),
                       "'learning_rate' is not a Factorization Machines hyperparameter"),
        "fm-dim": (dict(base, feature_dim="99"), rec("good"), "has 100 features, expected 99 (feature_dim)"),
        "fm-label-2": (base, rec("label2"), "row 1 has label 2; binary_classifier labels must be 0 or 1"),
        "fm-no-label": (base, rec("nolabel"), "row 1 has no label"),
        "fm-csv": (base, rec("csv", "text/csv"), "trains on application/x-recordio-protobuf only"),
    }
    for name, (hps, channels, _) in cases.items():
        sm.create_training_job(**fm_request(name, hps, channels))
    for name, (_, _, reason) in cases.items():
        d = wait(sm, name)
        assert d["TrainingJobStatus"] == "Failed", (name, d["TrainingJobStatus"])
        assert reason in d["FailureReason"], (name, d["FailureReason"])
