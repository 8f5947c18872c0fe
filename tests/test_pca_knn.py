"""The built-in PCA, k-NN and Random Cut Forest driven as their users drive them: through the
SageMaker SDK's own `PCA`, `KNN` and `RandomCutForest` estimators with `record_set()`
(RecordIO-protobuf), through boto3 with CSV, and `kiln algo pca|knn|randomcutforest predict` on
the models the jobs uploaded; bad hyperparameters fail with a reason that says what to fix."""
import io
import json
import os

import numpy as np
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")

from builtin_jobs import builtin_request, extract_model, kiln, predict, s3, session, sm, wait  # noqa: E402,F401
from sagemaker.serializer_utils import write_numpy_to_dense_tensor  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
KNN_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/knn:1"
PCA_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/pca:1"
RCF_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/randomcutforest:1"
BUCKET = "pcaknn"


def correlated(n, seed):
    """Rows of a 10-dimensional Gaussian with a few dominant directions and an offset mean."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(10, 10)))[0]
    scales = np.array([9.0, 5.0, 3.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1])
    return (rng.normal(size=(n, 10)) * scales @ basis.T + 50.0).astype("float32")


def test_sdk_pca_with_record_set_matches_numpy_svd(session, s3, tmp_path, capsys):
    X = correlated(4000, seed=1)
    Xt = correlated(500, seed=2)
    pca = sagemaker.PCA(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge", num_components=3,
                        output_path="s3://pcaknn/pca", sagemaker_session=session)
    assert pca.training_image_uri().endswith("/pca:1")
    pca.fit([pca.record_set(X, channel="train"), pca.record_set(Xt, channel="test")], wait=True, logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, train explained_variance_ratio <score>=" in out, out
    job = pca.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    hps = job["HyperParameters"]
    assert hps["feature_dim"] == "10" and hps["num_components"] == "3" and "mini_batch_size" in hps, hps

    model_dir = extract_model(s3, pca.model_data, tmp_path / "model")
    model = json.loads((model_dir / "pca-model.json").read_text())
    assert model["algorithm"] == "pca" and model["num_components"] == 3 and model["n_rows"] == 4000
    comps = np.array(model["components"])
    mean = X.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    for c in range(3):
        assert abs(comps[c] @ vt[c]) > 0.99, (c, comps[c], vt[c])
    np.testing.assert_allclose(model["mean"], mean, rtol=1e-4)
    np.testing.assert_allclose(model["singular_values"], s[:3], rtol=1e-3)
    ratio = (s[:3] ** 2).sum() / (s ** 2).sum()
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["train:explained_variance_ratio"] == pytest.approx(ratio, rel=1e-3), metrics
    assert 0.9 < metrics["test:explained_variance_ratio"] <= 1.0, metrics

    # `kiln algo pca predict`: each row minus the mean, on each component.
    data = tmp_path / "test.rec"
    with open(data, "wb") as f:
        write_numpy_to_dense_tensor(f, Xt)
    proj = np.array([[float(v) for v in line.split(",")] for line in predict("pca", model_dir, data)])
    np.testing.assert_allclose(proj, (Xt - np.array(model["mean"])) @ comps.T, atol=1e-3)


def test_sdk_pca_randomized_mode_finds_the_same_components(session, s3, tmp_path):
    X = correlated(3000, seed=3)
    pca = sagemaker.PCA(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge", num_components=2,
                        algorithm_mode="randomized", extra_components=3, output_path="s3://pcaknn/pcar",
                        sagemaker_session=session)
    pca.fit(pca.record_set(X), wait=True, logs=False)
    job = pca.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = json.loads((extract_model(s3, pca.model_data, tmp_path / "m") / "pca-model.json").read_text())
    assert model["algorithm_mode"] == "randomized"
    _, _, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    for c in range(2):
        assert abs(np.array(model["components"][c]) @ vt[c]) > 0.99


def blobs(n, d, classes, seed):
    centers = np.random.default_rng(100).normal(scale=4.0, size=(classes, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    return (centers[y] + rng.normal(size=(n, d))).astype("float32"), y.astype("float32")


def sklearn_free_knn(X, y, Q, k):
    """Exact k-NN majority vote in numpy (ties: the label of the nearest among the tied)."""
    d2 = (Q ** 2).sum(1)[:, None] - 2 * Q @ X.T + (X ** 2).sum(1)[None, :]
    idx = np.argsort(d2, axis=1)[:, :k]
    out = []
    for row in y[idx]:
        labels, counts = np.unique(row, return_counts=True)
        tied = set(labels[counts == counts.max()])
        out.append(next(l for l in row if l in tied))
    return np.array(out)


def test_sdk_knn_classifier_with_record_set(session, s3, tmp_path, capsys):
    X, y = blobs(3000, 8, 4, seed=1)
    Xt, yt = blobs(400, 8, 4, seed=2)
    knn = sagemaker.KNN(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge", k=5, sample_size=3000,
                        predictor_type="classifier", output_path="s3://pcaknn/knn", sagemaker_session=session)
    assert knn.training_image_uri().endswith("/knn:1")
    knn.fit([knn.record_set(X, labels=y, channel="train"), knn.record_set(Xt, labels=yt, channel="test")],
            wait=True, logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, test accuracy <score>=" in out, out
    job = knn.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameters"]["predictor_type"] == "classifier"
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    expect = sklearn_free_knn(X, y, Xt, 5)
    assert metrics["test:accuracy"] == pytest.approx((expect == yt).mean(), abs=1e-6), metrics
    assert metrics["test:accuracy"] > 0.9

    model_dir = extract_model(s3, knn.model_data, tmp_path / "model")
    data = tmp_path / "test.rec"
    with open(data, "wb") as f:
        write_numpy_to_dense_tensor(f, Xt)
    pred = np.array([float(v) for v in predict("knn", model_dir, data)])
    assert (pred == expect).mean() > 0.99, (pred[:20], expect[:20])


def knn_request(name, hps, channels, mode="File", image=KNN_IMAGE):
    return builtin_request(name, image, hps, channels, "s3://pcaknn/boto", mode)


def csv_rows(y, X):
    return "\n".join(",".join(map(str, [l, *r])) for l, r in zip(y, X)).encode()


def test_boto3_knn_regressor_on_csv_with_an_ivf_index(sm, s3, tmp_path):
    rng = np.random.default_rng(5)
    X = rng.uniform(-3, 3, size=(4000, 2)).astype("float32")
    f = lambda A: np.sin(A[:, 0]) + 0.5 * A[:, 1]  # noqa: E731
    y = f(X).astype("float32")
    Xt = rng.uniform(-2.5, 2.5, size=(300, 2)).astype("float32")
    yt = f(Xt).astype("float32")
    s3.put_object(Bucket="pcaknn", Key="csv/train/part-0.csv", Body=csv_rows(y, X))
    s3.put_object(Bucket="pcaknn", Key="csv/test/part-0.csv", Body=csv_rows(yt, Xt))
    hps = {"feature_dim": "2", "k": "8", "predictor_type": "regressor", "sample_size": "4000",
           "index_type": "faiss.IVFFlat", "faiss_index_ivf_nlists": "20"}
    sm.create_training_job(**knn_request("knn-csv", hps, {
        "train": ("s3://pcaknn/csv/train/", "text/csv"), "test": ("s3://pcaknn/csv/test/", "text/csv; label_size=1")}))
    d = wait(sm, "knn-csv")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    names = {m["Name"] for m in d["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"test:accuracy", "test:mse"} <= names
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert metrics["test:mse"] < 0.01, metrics

    model_dir = extract_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "model")
    (tmp_path / "q.csv").write_text("\n".join(",".join(map(str, r)) for r in Xt))
    pred = np.array([float(v) for v in predict("knn", model_dir, tmp_path / "q.csv")])
    assert len(pred) == len(Xt)
    assert ((pred - yt) ** 2).mean() == pytest.approx(metrics["test:mse"], rel=1e-3)


def test_pipe_mode_reads_recordio_from_the_fifos(sm, s3, tmp_path):
    """Pipe mode (no ContentType: RecordIO-protobuf is the default): k-NN reads labelled `train`
    and `test` records from their FIFOs, PCA its `train`; the results are File mode's."""
    def upload(key, X, y=None):
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, X, y)
        s3.put_object(Bucket="pcaknn", Key=key, Body=buf.getvalue())

    X, y = blobs(2000, 6, 3, seed=11)
    Xt, yt = blobs(300, 6, 3, seed=12)
    upload("pipe/knn-train/a.rec", X[:1000], y[:1000])
    upload("pipe/knn-train/b.rec", X[1000:], y[1000:])
    upload("pipe/knn-test/t.rec", Xt, yt)
    P = correlated(3000, seed=13)
    upload("pipe/pca-train/p.rec", P)
    sm.create_training_job(**knn_request("knn-pipe", {
        "feature_dim": "6", "k": "5", "predictor_type": "classifier", "sample_size": "2000"}, {
        "train": ("s3://pcaknn/pipe/knn-train/", None), "test": ("s3://pcaknn/pipe/knn-test/", None)}, mode="Pipe"))
    sm.create_training_job(**knn_request("pca-pipe", {
        "feature_dim": "10", "num_components": "2", "mini_batch_size": "500"}, {
        "train": ("s3://pcaknn/pipe/pca-train/", None)}, mode="Pipe", image=PCA_IMAGE))
    d = wait(sm, "knn-pipe")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    expect = sklearn_free_knn(X, y, Xt, 5)
    assert metrics["test:accuracy"] == pytest.approx((expect == yt).mean(), abs=1e-6), metrics

    d = wait(sm, "pca-pipe")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    model = json.loads((extract_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "pca")
                        / "pca-model.json").read_text())
    assert model["n_rows"] == len(P)
    vt = np.linalg.svd(P - P.mean(0), full_matrices=False)[2]
    for c in range(2):
        assert abs(np.array(model["components"][c]) @ vt[c]) > 0.99


def test_bad_hyperparameters_and_data_fail_clearly(sm, s3):
    X, y = blobs(50, 3, 2, seed=7)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, X, y)
    s3.put_object(Bucket="pcaknn", Key="bad/train/data.rec", Body=buf.getvalue())
    unlabeled = io.BytesIO()
    write_numpy_to_dense_tensor(unlabeled, X)
    s3.put_object(Bucket="pcaknn", Key="nolabel/train/data.rec", Body=unlabeled.getvalue())
    knn = {"feature_dim": "3", "k": "3", "predictor_type": "classifier", "sample_size": "50"}
    pca = {"feature_dim": "3", "num_components": "2", "mini_batch_size": "10"}
    cases = {
        "knn-no-type": (KNN_IMAGE, {k: v for k, v in knn.items() if k != "predictor_type"}, "bad",
                        "Hyperparameter 'predictor_type' is required by k-NN"),
        "knn-red": (KNN_IMAGE, dict(knn, dimension_reduction_type="sign"), "bad",
                    "'dimension_reduction_target' is required"),
        "knn-index": (KNN_IMAGE, dict(knn, index_type="faiss.HNSW"), "bad", "faiss.Flat, faiss.IVFFlat, faiss.IVFPQ"),
        "knn-k": (KNN_IMAGE, dict(knn, k="80"), "bad", "the index holds only 50 rows"),
        "knn-nolabel": (KNN_IMAGE, knn, "nolabel", "row 1 has no label"),
        "pca-comp": (PCA_IMAGE, dict(pca, num_components="4"), "bad", "PCA finds at most feature_dim components"),
        "pca-mode": (PCA_IMAGE, dict(pca, algorithm_mode="fast"), "bad", "is not one of: regular, randomized"),
        "pca-dim": (PCA_IMAGE, dict(pca, feature_dim="5"), "bad", "has 3 features, expected 5"),
        "rcf-trees": (RCF_IMAGE, {"feature_dim": "3", "num_trees": "10"}, "bad",
                      "Hyperparameter 'num_trees': value '10' is out of range"),
    }
    for name, (image, hps, prefix, _) in cases.items():
        req = knn_request(name, hps, {"train": (f"s3://pcaknn/{prefix}/train/", None)})
        req["AlgorithmSpecification"]["TrainingImage"] = image
        sm.create_training_job(**req)
    for name, (_, _, _, reason) in cases.items():
        d = wait(sm, name)
        assert d["TrainingJobStatus"] == "Failed", (name, d["TrainingJobStatus"])
        assert reason in d["FailureReason"], (name, d["FailureReason"])


def auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))


def planted_outliers(n, n_out, seed):
    """A correlated 5-dimensional Gaussian bulk and `n_out` rows planted outside it (label 1)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(0).normal(size=(5, 5))
    X = rng.normal(size=(n, 5)) @ mix
    out = rng.normal(size=(n_out, 5))
    out = out / np.linalg.norm(out, axis=1, keepdims=True) * rng.uniform(8, 12, size=(n_out, 1)) @ mix
    y = np.r_[np.zeros(n), np.ones(n_out)].astype("float32")
    X = np.vstack([X, out]).astype("float32")
    order = rng.permutation(len(X))
    return X[order], y[order]


def test_sdk_random_cut_forest_scores_planted_outliers(session, s3, tmp_path, capsys):
    X, _ = planted_outliers(5000, 50, seed=1)
    Xt, yt = planted_outliers(2000, 40, seed=2)
    rcf = sagemaker.RandomCutForest(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge", num_trees=100,
                                    num_samples_per_tree=256, output_path="s3://pcaknn/rcf",
                                    sagemaker_session=session)
    assert rcf.training_image_uri().endswith("/randomcutforest:1")
    rcf.fit([rcf.record_set(X, channel="train"), rcf.record_set(Xt, labels=yt, channel="test")], wait=True,
            logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, test f1 <score>=" in out, out
    job = rcf.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert {"test:f1", "test:precision", "test:recall", "test:accuracy"} <= set(metrics), metrics
    assert metrics["test:precision"] > 0.8 and metrics["test:recall"] > 0.5, metrics

    model_dir = extract_model(s3, rcf.model_data, tmp_path / "model")
    model = json.loads((model_dir / "rcf-model.json").read_text())
    assert model["algorithm"] == "randomcutforest" and len(model["samples"]) == 100
    data = tmp_path / "test.rec"
    with open(data, "wb") as f:
        write_numpy_to_dense_tensor(f, Xt)
    scores = np.array([float(v) for v in predict("randomcutforest", model_dir, data)])
    assert len(scores) == len(Xt)
    assert auc(scores, yt) >= 0.9, auc(scores, yt)
    # The test metrics are the scores against mean + 3 sd of the training scores.
    flagged = scores > model["score_mean"] + 3 * model["score_std"]
    assert metrics["test:recall"] == pytest.approx(flagged[yt == 1].mean(), abs=1e-6)
