"""Built-in algorithms driven as their users drive them: K-Means through the
SageMaker SDK's own `KMeans` estimator and `record_set()` (RecordIO-protobuf, a ManifestFile
channel), and through boto3 with CSV and Pipe mode; XGBoost's incremental training (a `model`
channel) through boto3; failures carry a reason that says what to fix."""
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")

from builtin_jobs import builtin_request, extract_model, kiln, s3, s3_bytes, session, sm, wait, wait_tuning  # noqa: E402,F401
from kilntest import SHARED, kiln_bin  # noqa: E402
from sagemaker.serializer_utils import write_numpy_to_dense_tensor  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
KMEANS_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
TRUTH = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 5.0], [0.0, 20.0, -5.0], [20.0, 20.0, 10.0]], dtype="float32")
BUCKET = "builtins"


def blobs(n_per, seed):
    """Rows around TRUTH (Gaussian, sd 1), shuffled, with their blob."""
    rng = np.random.default_rng(seed)
    X = np.vstack([c + rng.normal(size=(n_per, 3)) for c in TRUTH]).astype("float32")
    y = np.repeat(np.arange(len(TRUTH)), n_per)
    order = rng.permutation(len(X))
    return X[order], y[order]


def model_centers(s3, uri):
    with tarfile.open(fileobj=io.BytesIO(s3_bytes(s3, uri))) as tar:
        model = json.load(tar.extractfile("kmeans-model.json"))
    assert model["algorithm"] == "kmeans" and model["feature_dim"] == 3
    return np.array(model["centers"]), model


def assert_near_truth(centers, tol=0.3):
    for t in TRUTH:
        assert np.linalg.norm(centers - t, axis=1).min() < tol, (t, centers)


def test_sdk_kmeans_with_record_set_learns_the_centers(session, s3, tmp_path, capsys):
    X, y = blobs(2000, seed=1)
    Xt, yt = blobs(250, seed=2)
    km = sagemaker.KMeans(role=ROLE, instance_count=1, instance_type="ml.c5.xlarge", k=4,
                          output_path="s3://builtins/kmeans", sagemaker_session=session,
                          eval_metrics=["msd", "ssd"], init_method="kmeans++")
    assert km.training_image_uri().endswith("/kmeans:1")
    train = km.record_set(X, channel="train")
    test = km.record_set(Xt, channel="test")
    km.fit([train, test], wait=True, logs=True)
    out = capsys.readouterr().out
    assert "#quality_metric: host=algo-1, test msd <loss>=" in out, out
    job = km.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["HyperParameters"]["feature_dim"] == "3" and job["HyperParameters"]["force_dense"] == "True"
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    # Gaussian blobs of sd 1 in 3 dimensions: the mean squared distance to the true center is 3.
    assert 2.5 < metrics["test:msd"] < 3.5, metrics
    assert metrics["test:ssd"] == pytest.approx(metrics["test:msd"] * len(Xt), rel=1e-3)
    centers, _ = model_centers(s3, km.model_data)
    assert_near_truth(centers)

    # `kiln algo kmeans predict` on the model from model.tar.gz: every test row goes to its blob's center.
    extract_model(s3, km.model_data, tmp_path / "model")
    data = tmp_path / "test.rec"
    with open(data, "wb") as f:
        write_numpy_to_dense_tensor(f, Xt)
    p = subprocess.run([kiln_bin(), "algo", "kmeans", "predict", "--model", str(tmp_path / "model"),
                        "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = [l.split(",") for l in p.stdout.splitlines()]
    assert len(rows) == len(Xt)
    cluster = np.array([int(r[0]) for r in rows])
    dist = np.array([float(r[1]) for r in rows])
    truth_of_cluster = {c: int(np.linalg.norm(TRUTH - centers[c], axis=1).argmin()) for c in range(4)}
    assert all(truth_of_cluster[c] == b for c, b in zip(cluster, yt))
    expect = np.linalg.norm(Xt - centers[cluster], axis=1)
    assert np.abs(dist - expect).max() < 1e-4


def kmeans_request(name, hps, channels, mode="File"):
    return builtin_request(name, KMEANS_IMAGE, hps, channels, "s3://builtins/boto", mode)


def test_boto3_kmeans_on_csv_reports_test_msd(sm, s3):
    X, _ = blobs(500, seed=3)
    Xt, _ = blobs(100, seed=4)
    s3.put_object(Bucket="builtins", Key="csv/train/part-0.csv", Body="\n".join(",".join(map(str, r)) for r in X).encode())
    s3.put_object(Bucket="builtins", Key="csv/test/part-0.csv", Body="\n".join(",".join(map(str, r)) for r in Xt).encode())
    req = kmeans_request("kmeans-csv", {"k": "4", "feature_dim": "3", "mini_batch_size": "200", "epochs": "2"},
                         {"train": ("s3://builtins/csv/train/", "text/csv"), "test": ("s3://builtins/csv/test/", "text/csv")})
    sm.create_training_job(**req)
    d = wait(sm, "kmeans-csv")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    names = {m["Name"] for m in d["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"test:msd", "test:ssd"} <= names
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert 2.5 < metrics["test:msd"] < 3.5, metrics
    assert_near_truth(model_centers(s3, d["ModelArtifacts"]["S3ModelArtifacts"])[0])


def test_boto3_kmeans_in_pipe_mode_reads_recordio_from_the_fifo(sm, s3):
    X, _ = blobs(500, seed=5)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, X)
    s3.put_object(Bucket="builtins", Key="pipe/train/data.rec", Body=buf.getvalue())
    # No ContentType: RecordIO-protobuf is K-Means' default.
    req = kmeans_request("kmeans-pipe", {"k": "4", "feature_dim": "3"},
                         {"train": ("s3://builtins/pipe/train/", None)}, mode="Pipe")
    sm.create_training_job(**req)
    d = wait(sm, "kmeans-pipe")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert_near_truth(model_centers(s3, d["ModelArtifacts"]["S3ModelArtifacts"])[0])


def test_kmeans_warm_starts_from_a_model_channel(sm, s3):
    """A `model` channel holding an earlier job's model.tar.gz: the new job continues its centers
    (same indices, so cluster ids stay stable), and its model stands for both jobs' rows."""
    def upload(key, X):
        s3.put_object(Bucket="builtins", Key=key, Body="\n".join(",".join(map(str, r)) for r in X).encode())

    X1, _ = blobs(300, seed=21)
    X2, _ = blobs(200, seed=22)
    upload("warm/first/part-0.csv", X1)
    upload("warm/second/part-0.csv", X2)
    hps = {"k": "4", "feature_dim": "3", "mini_batch_size": "200"}
    sm.create_training_job(**kmeans_request("kmeans-warm-1", hps, {"train": ("s3://builtins/warm/first/", "text/csv")}))
    first = wait(sm, "kmeans-warm-1")
    assert first["TrainingJobStatus"] == "Completed", first.get("FailureReason")
    uri = first["ModelArtifacts"]["S3ModelArtifacts"]
    c1, m1 = model_centers(s3, uri)
    assert sum(m1["weights"]) == len(X1)

    # One extra center per cluster and one Lloyd trial: the prior's centers are the start.
    warm_hps = dict(hps, extra_center_factor="1", local_lloyd_num_trials="1")
    sm.create_training_job(**kmeans_request("kmeans-warm-2", warm_hps, {
        "train": ("s3://builtins/warm/second/", "text/csv"), "model": (uri, None)}))
    second = wait(sm, "kmeans-warm-2")
    assert second["TrainingJobStatus"] == "Completed", second.get("FailureReason")
    c2, m2 = model_centers(s3, second["ModelArtifacts"]["S3ModelArtifacts"])
    assert_near_truth(c2)
    assert np.linalg.norm(c2 - c1, axis=1).max() < 0.3, (c1, c2)
    assert sum(m2["weights"]) == len(X1) + len(X2)

    # A model of another k cannot start this job, and says why.
    sm.create_training_job(**kmeans_request("kmeans-warm-k3", dict(hps, k="3"), {
        "train": ("s3://builtins/warm/second/", "text/csv"), "model": (uri, None)}))
    bad = wait(sm, "kmeans-warm-k3")
    assert bad["TrainingJobStatus"] == "Failed"
    assert "the model has k 4 but this job has k 3" in bad["FailureReason"], bad["FailureReason"]


def test_malformed_protobuf_and_bad_hyperparameters_fail_clearly(sm, s3):
    X, _ = blobs(10, seed=6)
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, X)
    good = buf.getvalue()
    # The third record's length is cut short by the end of the object.
    s3.put_object(Bucket="builtins", Key="bad/train/data.rec", Body=good[: len(good) // 2 + 10])
    s3.put_object(Bucket="builtins", Key="good/train/data.rec", Body=good)
    s3.put_object(Bucket="builtins", Key="csvasrec/train/data.csv", Body=b"1,2,3\n4,5,6\n")
    cases = {
        "kmeans-truncated": ({"k": "2", "feature_dim": "3"}, "bad", "truncated"),
        "kmeans-notrecordio": ({"k": "2", "feature_dim": "3"}, "csvasrec", "RecordIO magic"),
        "kmeans-no-k": ({"feature_dim": "3"}, "good", "Hyperparameter 'k' is required"),
        "kmeans-k-too-big": ({"k": "50", "feature_dim": "3"}, "good", "has only 40 rows"),
        "kmeans-dim": ({"k": "2", "feature_dim": "4"}, "good", "has 3 features, expected 4"),
        "kmeans-badinit": ({"k": "2", "feature_dim": "3", "init_method": "best"}, "good", "random, kmeans++"),
    }
    for name, (hps, prefix, _) in cases.items():
        sm.create_training_job(**kmeans_request(name, hps, {"train": (f"s3://builtins/{prefix}/train/", None)}))
    for name, (_, _, reason) in cases.items():
        d = wait(sm, name)
        assert d["TrainingJobStatus"] == "Failed", (name, d["TrainingJobStatus"])
        assert reason in d["FailureReason"], (name, d["FailureReason"])
    d = sm.describe_training_job(TrainingJobName="kmeans-truncated")
    assert "data.rec: record" in d["FailureReason"] and "channel 'train'" in d["FailureReason"], d["FailureReason"]


def test_tuning_kmeans_on_test_msd_picks_the_right_k(sm, s3):
    """A tuning job on K-Means' injected `test:msd` (minimized): of k = 2, 3, 4 the child with k=4
    (the number of blobs) has the lowest msd, since k=2 and 3 leave whole blobs merged."""
    X, _ = blobs(300, seed=7)
    Xt, _ = blobs(100, seed=8)
    for ch, data in (("train", X), ("test", Xt)):
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, data)
        s3.put_object(Bucket="builtins", Key=f"tune/{ch}/data.rec", Body=buf.getvalue())
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-kmeans",
        HyperParameterTuningJobConfig={
            "Strategy": "Grid",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "test:msd"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 3},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "k", "Values": ["2", "3", "4"]}]},
        },
        TrainingJobDefinition={
            "StaticHyperParameters": {"feature_dim": "3", "init_method": "kmeans++"},
            "AlgorithmSpecification": {"TrainingImage": KMEANS_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "InputDataConfig": [{"ChannelName": ch, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://builtins/tune/{ch}/"}}} for ch in ("train", "test")],
            "OutputDataConfig": {"S3OutputPath": "s3://builtins/tune-out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        })
    d = wait_tuning(sm, "tune-kmeans")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 3
    best = d["BestTrainingJob"]
    assert best["TunedHyperParameters"]["k"] == "4", best
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "test:msd"
    assert 2.0 < best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] < 4.0, best


XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def xgboost_request(s3, name, hps, model_uri=None):
    """A built-in XGBoost job on the flights data (uploaded once), with a `model` channel at
    `model_uri` when given (ContentType as SageMaker's incremental training sets it)."""
    flights = SHARED / "data" / "flights"
    if "Contents" not in s3.list_objects_v2(Bucket="builtins", Prefix="flights/train/"):
        s3.upload_file(str(flights / "train.csv"), "builtins", "flights/train/train.csv")
    channels = {"train": ("s3://builtins/flights/train/", "text/csv")}
    if model_uri:
        channels["model"] = (model_uri, "application/x-sagemaker-model")
    return xgboost_data_request(name, hps, channels)


def xgboost_model(s3, uri, path):
    """The `xgboost-model` of a job's model.tar.gz, loaded with xgboost's own Python package."""
    xgb = pytest.importorskip("xgboost")
    with tarfile.open(fileobj=io.BytesIO(s3_bytes(s3, uri))) as tar:
        path.write_bytes(tar.extractfile("xgboost-model").read())
    return xgb.Booster(model_file=str(path))


def flights_frame(rows):
    """The first `rows` of the flights training set as a DataFrame, the label first."""
    import pandas as pd
    return pd.read_csv(SHARED / "data" / "flights" / "train.csv", header=None, nrows=rows)


def xgboost_data_request(name, hps, channels, mode="File"):
    """A built-in XGBoost job whose channels are {name: (uri, content_type)}."""
    return builtin_request(name, XGBOOST_IMAGE, hps, channels, "s3://builtins/xgb-out", mode)


def test_xgboost_reads_parquet_as_pandas_writes_it(kiln, sm, s3, tmp_path):
    """`application/x-parquet` written by pandas (pyarrow; several files and row groups, int and
    float columns, nulls) trains the model the same rows as CSV train, in File and Pipe mode; a
    string column fails the job saying which column."""
    pytest.importorskip("pyarrow")
    xgb = pytest.importorskip("xgboost")
    df = flights_frame(6000)
    df.columns = ["label"] + [f"f{i}" for i in range(1, df.shape[1])]
    df["f3"] = df["f3"].astype("float64")
    df.loc[df.index % 7 == 0, "f3"] = None  # nulls: missing values, as CSV's empty fields
    train, valid = df.iloc[:5000], df.iloc[5000:]
    for i, part in enumerate((train.iloc[:2500], train.iloc[2500:])):
        buf = io.BytesIO()
        part.to_parquet(buf, index=False, row_group_size=1000)
        s3.put_object(Bucket="builtins", Key=f"pq/train/part-{i}.parquet", Body=buf.getvalue())
    buf = io.BytesIO()
    valid.to_parquet(buf, index=False)
    s3.put_object(Bucket="builtins", Key="pq/validation/v.parquet", Body=buf.getvalue())
    s3.put_object(Bucket="builtins", Key="pq-csv/train/t.csv", Body=train.to_csv(header=False, index=False).encode())
    s3.put_object(Bucket="builtins", Key="pq-csv/validation/v.csv", Body=valid.to_csv(header=False, index=False).encode())

    hps = {"objective": "binary:logistic", "num_round": 20, "max_depth": 4, "eval_metric": "auc"}
    pq = {"train": ("s3://builtins/pq/train/", "application/x-parquet"),
          "validation": ("s3://builtins/pq/validation/", "application/x-parquet")}
    csv = {"train": ("s3://builtins/pq-csv/train/", "text/csv"),
           "validation": ("s3://builtins/pq-csv/validation/", "text/csv")}
    sm.create_training_job(**xgboost_data_request("xgb-parquet", hps, pq))
    sm.create_training_job(**xgboost_data_request("xgb-parquet-pipe", hps, pq, mode="Pipe"))
    sm.create_training_job(**xgboost_data_request("xgb-parquet-csv", hps, csv))
    jobs = {n: wait(sm, n, timeout=300) for n in ("xgb-parquet", "xgb-parquet-pipe", "xgb-parquet-csv")}
    for n, d in jobs.items():
        assert d["TrainingJobStatus"] == "Completed", (n, d.get("FailureReason"))
    auc = {n: {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}["validation:auc"]
           for n, d in jobs.items()}
    assert auc["xgb-parquet"] == auc["xgb-parquet-csv"] == auc["xgb-parquet-pipe"], auc
    assert auc["xgb-parquet"] > 0.6, auc
    test = xgb.DMatrix(valid.iloc[:, 1:].to_numpy(), missing=float("nan"))
    preds = {n: xgboost_model(s3, d["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / f"{n}.json").predict(test)
             for n, d in jobs.items()}
    assert np.array_equal(preds["xgb-parquet"], preds["xgb-parquet-csv"])
    assert np.array_equal(preds["xgb-parquet"], preds["xgb-parquet-pipe"])

    bad = df.iloc[:100].assign(f2=["x"] * 100)
    buf = io.BytesIO()
    bad.to_parquet(buf, index=False)
    s3.put_object(Bucket="builtins", Key="pq-bad/train/t.parquet", Body=buf.getvalue())
    sm.create_training_job(**xgboost_data_request("xgb-parquet-bad", hps, {
        "train": ("s3://builtins/pq-bad/train/", "application/x-parquet")}))
    d = wait(sm, "xgb-parquet-bad")
    assert d["TrainingJobStatus"] == "Failed"
    assert "column 3 ('f2') is BYTE_ARRAY" in d["FailureReason"], d["FailureReason"]


def test_xgboost_incremental_training_from_a_model_channel(kiln, sm, s3, tmp_path):
    """Job B trains 50 rounds on top of job A's 100 (A's model.tar.gz as B's `model` channel):
    B's model is the model a 150-round job C trains."""
    xgb = pytest.importorskip("xgboost")
    base = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "subsample": 1}
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-a", dict(base, num_round=100)))
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-c", dict(base, num_round=150)))
    a = wait(sm, "xgb-incr-a", timeout=600)
    assert a["TrainingJobStatus"] == "Completed", a.get("FailureReason")
    a_model = a["ModelArtifacts"]["S3ModelArtifacts"]
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-b", dict(base, num_round=50), model_uri=a_model))
    b, c = wait(sm, "xgb-incr-b", timeout=600), wait(sm, "xgb-incr-c", timeout=600)
    assert b["TrainingJobStatus"] == "Completed", b.get("FailureReason")
    assert c["TrainingJobStatus"] == "Completed", c.get("FailureReason")
    mb = xgboost_model(s3, b["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "b.json")
    mc = xgboost_model(s3, c["ModelArtifacts"]["S3ModelArtifacts"], tmp_path / "c.json")
    assert mb.num_boosted_rounds() == 150 and mc.num_boosted_rounds() == 150
    X = np.loadtxt(SHARED / "data" / "flights" / "test.csv", delimiter=",", max_rows=5000)[:, 1:]
    d = xgb.DMatrix(X)
    pb, pc = mb.predict(d), mc.predict(d)
    assert np.abs(pb - pc).max() <= 1e-5, np.abs(pb - pc).max()
    # Fewer rounds differ: the comparison can tell.
    pa = xgboost_model(s3, a_model, tmp_path / "a.json").predict(d)
    assert np.abs(pa - pc).max() > 1e-3


def test_xgboost_incompatible_model_channel_fails_with_the_reason(kiln, sm, s3):
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-small", {"objective": "binary:logistic", "num_round": 2}))
    d = wait(sm, "xgb-incr-small", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-obj", {"objective": "reg:squarederror", "num_round": 2},
                                             model_uri=uri))
    s3.put_object(Bucket="builtins", Key="garbage/model.tar.gz", Body=b"this is not a model")
    sm.create_training_job(**xgboost_request(s3, "xgb-incr-junk", {"num_round": 2},
                                             model_uri="s3://builtins/garbage/model.tar.gz"))
    d = wait(sm, "xgb-incr-obj", timeout=600)
    assert d["TrainingJobStatus"] == "Failed"
    assert "objective binary:logistic" in d["FailureReason"], d["FailureReason"]
    assert "objective reg:squarederror" in d["FailureReason"], d["FailureReason"]
    d = wait(sm, "xgb-incr-junk", timeout=600)
    assert d["TrainingJobStatus"] == "Failed"
    assert "channel 'model'" in d["FailureReason"] and "is not an XGBoost model" in d["FailureReason"], d["FailureReason"]


def test_xgboost_reads_recordio_protobuf_as_the_sdk_writes_it(kiln, sm, s3):
    """The built-in XGBoost on application/x-recordio-protobuf (the SDK's dense and sparse writers)
    learns what it learns from the same rows in CSV; a malformed file fails with where it broke."""
    from scipy import sparse
    from sagemaker.serializer_utils import write_spmatrix_to_sparse_tensor
    titanic = SHARED / "data" / "titanic"
    rows = {ch: np.genfromtxt(titanic / f, delimiter=",", dtype="float32")
            for ch, f in (("train", "train.csv"), ("validation", "test.csv"))}

    def put(key, body):
        s3.put_object(Bucket="builtins", Key=key, Body=body)

    for ch, m in rows.items():
        put(f"rio/csv/{ch}/data.csv", (titanic / ("train.csv" if ch == "train" else "test.csv")).read_bytes())
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, m[:, 1:], m[:, 0])
        put(f"rio/dense/{ch}/data.rec", buf.getvalue())
        # Sparse: only the present (non-NaN) values are written; the absent ones are missing.
        present = np.nan_to_num(m[:, 1:], nan=0.0)
        buf = io.BytesIO()
        write_spmatrix_to_sparse_tensor(buf, sparse.csr_matrix(present), m[:, 0])
        put(f"rio/sparse/{ch}/data.rec", buf.getvalue())
    put("rio/bad/train/data.rec", b"\x0a\x00\x00\x00\x10\x00\x00\x00not a record at all")

    def request(name, layout, content_type):
        hps = {"objective": "binary:logistic", "num_round": 20, "max_depth": 3, "eval_metric": "auc"}
        chans = ("train",) if layout == "bad" else ("train", "validation")
        return xgboost_data_request(name, hps, {ch: (f"s3://builtins/rio/{layout}/{ch}/", content_type) for ch in chans})

    rio = "application/x-recordio-protobuf"
    for name, layout, ct in (("xgb-rio-csv", "csv", "text/csv"), ("xgb-rio-dense", "dense", rio),
                             ("xgb-rio-sparse", "sparse", rio), ("xgb-rio-bad", "bad", rio)):
        sm.create_training_job(**request(name, layout, ct))

    def auc(name):
        d = wait(sm, name, timeout=300)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        return {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}["validation:auc"]

    csv_auc, dense_auc, sparse_auc = auc("xgb-rio-csv"), auc("xgb-rio-dense"), auc("xgb-rio-sparse")
    assert dense_auc == pytest.approx(csv_auc, abs=1e-6), (dense_auc, csv_auc)
    # Zeros the sparse writer leaves out become missing: a close, not identical, model.
    assert abs(sparse_auc - csv_auc) < 0.03 and sparse_auc > 0.75, (sparse_auc, csv_auc)
    bad = wait(sm, "xgb-rio-bad", timeout=300)
    assert bad["TrainingJobStatus"] == "Failed"
    assert "channel 'train'" in bad["FailureReason"] and "RecordIO-protobuf: record 1" in bad["FailureReason"], \
        bad["FailureReason"]
