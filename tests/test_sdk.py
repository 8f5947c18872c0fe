"""The SageMaker Python SDK (v2) against kiln: Estimator.fit(wait=True, logs=True) in script mode and
with the built-in XGBoost image, pointed at kiln by AWS_ENDPOINT_URL (reference §1.3)."""
import os
import tarfile
import textwrap

import boto3
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
sagemaker = pytest.importorskip("sagemaker")

from kilntest import SHARED, Kiln, postgres_store  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def sdk_session():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    key = k.key
    saved = {v: os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=k.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                      AWS_SECRET_ACCESS_KEY=key["secret_access_key"], AWS_DEFAULT_REGION="us-east-1")
    boto_session = boto3.Session(region_name="us-east-1")
    # default_bucket keeps the SDK off STS (reference §1.3); the SDK creates the bucket itself.
    session = sagemaker.Session(boto_session=boto_session, default_bucket="sdk-bucket")
    assert session.default_bucket() == "sdk-bucket"  # creates it (ListBuckets, CreateBucket)
    yield k, session
    for v, old in saved.items():
        if old is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = old
    k.stop()


def test_estimator_fit_script_mode_with_logs(sdk_session, tmp_path, capsys):
    k, session = sdk_session
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent("""
        import argparse, json, os
        p = argparse.ArgumentParser()
        p.add_argument("--epochs", type=int)
        p.add_argument("--lr", type=float)
        a = p.parse_args()
        train = os.environ["SM_CHANNEL_TRAIN"]
        n = sum(1 for f in os.listdir(train) for _ in open(os.path.join(train, f)))
        for e in range(a.epochs):
            print(f"epoch {e}: loss={a.lr / (e + 1):.4f} rows={n}", flush=True)
        json.dump({"rows": n}, open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
    """))
    train_uri = session.upload_data(str(SHARED / "data" / "titanic" / "train.csv"), bucket="sdk-bucket", key_prefix="titanic/train")
    est = sagemaker.estimator.Estimator(
        image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
        entry_point="train.py", source_dir=str(src), role=ROLE, instance_count=1, instance_type="ml.m5.large",
        output_path="s3://sdk-bucket/output", sagemaker_session=session,
        hyperparameters={"epochs": 3, "lr": 0.5},
        metric_definitions=[{"Name": "loss", "Regex": r"loss=([0-9.]+)"}])
    est.fit({"train": train_uri}, wait=True, logs=True)
    out = capsys.readouterr().out
    assert "epoch 2: loss=0.1667 rows=1049" in out
    assert "Completed - Training job completed" in out
    assert "Training seconds:" in out and "Billable seconds:" in out
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == est.model_data
    assert {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}["loss"] == pytest.approx(0.1667, abs=1e-4)
    local = tmp_path / "model.tar.gz"
    session.boto_session.client("s3").download_file("sdk-bucket", est.model_data.split("sdk-bucket/", 1)[1], str(local))
    with tarfile.open(local) as tar:
        assert "model.json" in tar.getnames()
    # attach() reads the description back with the keys it indexes directly.
    attached = sagemaker.estimator.Estimator.attach(est.latest_training_job.name, sagemaker_session=session)
    assert attached.model_data == est.model_data


def test_estimator_builtin_xgboost_on_flights(sdk_session, tmp_path, capsys):
    k, session = sdk_session
    image = sagemaker.image_uris.retrieve("xgboost", region="us-east-1", version="1.7-1")
    assert image.endswith("/sagemaker-xgboost:1.7-1")
    flights = SHARED / "data" / "flights"
    train = session.upload_data(str(flights / "train.csv"), bucket="sdk-bucket", key_prefix="flights/train")
    val = session.upload_data(str(flights / "test.csv"), bucket="sdk-bucket", key_prefix="flights/validation")
    est = sagemaker.estimator.Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.xlarge",
                                        output_path="s3://sdk-bucket/xgb", sagemaker_session=session)
    est.set_hyperparameters(objective="binary:logistic", num_round=30, max_depth=6, eta=0.3, eval_metric="auc")
    from sagemaker.inputs import TrainingInput
    est.fit({"train": TrainingInput(train, content_type="text/csv"),
             "validation": TrainingInput(val, content_type="text/csv")}, wait=True, logs=True)
    out = capsys.readouterr().out
    assert "[29]#011train-auc:" in out or "[29]\ttrain-auc:" in out
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.7


@pytest.mark.skipif(postgres_store(), reason="environments do not depend on the store: runs once, in the SQLite run")
def test_sklearn_estimator_runs_on_the_images_pinned_scikit_learn(sdk_session, tmp_path, capsys):
    """`sagemaker.sklearn.SKLearn` 1.2-1: the script sees the image's scikit-learn 1.2 release (not the
    host's), isolated from the host's site-packages; a requirements.txt pinning scikit-learn==1.2.2 on
    top of it works (no `numpy.dtype size changed`)."""
    k, session = sdk_session
    from sagemaker.sklearn import SKLearn

    def run(name, files):
        src = tmp_path / name
        src.mkdir()
        for fname, text in files.items():
            (src / fname).write_text(textwrap.dedent(text))
        est = SKLearn(entry_point="train.py", source_dir=str(src), framework_version="1.2-1", py_version="py3",
                      role=ROLE, instance_count=1, instance_type="ml.m5.large", output_path="s3://sdk-bucket/output",
                      sagemaker_session=session)
        est.fit(wait=True, logs=True)
        return est.latest_training_job.describe(), capsys.readouterr().out

    check = """
        import os, sys, sklearn, numpy
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().fit(numpy.array([[0.0], [1.0]]), [0, 1])
        print(f"sklearn {sklearn.__version__} numpy {numpy.__version__}", flush=True)
        print("host site-packages visible:", any("site-packages" in p and sys.base_prefix in p for p in sys.path), flush=True)
    """
    job, out = run("pinned", {"train.py": check})
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "sklearn 1.2.1 numpy 1." in out, out
    assert "host site-packages visible: False" in out, out
    assert "environment: sklearn 1.2-1" in out, out

    job, out = run("with-requirements", {"train.py": check, "requirements.txt": "scikit-learn==1.2.2\n"})
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "sklearn 1.2.2 numpy 1." in out, out


def test_estimators_with_keep_alive_reuse_a_warm_pool_and_its_cache(sdk_session, tmp_path, capsys):
    """The SDK's `keep_alive_period_in_seconds`: the second fit reuses the first's warm pool (and
    sees its cache); `Session.update_training_job` with 0 releases the pool."""
    k, session = sdk_session
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent("""
        import os, pathlib
        cache = pathlib.Path(os.environ["SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"])
        print("cache holds", sorted(p.name for p in cache.iterdir()), flush=True)
        (cache / "marker").write_text("from an earlier job")
    """))

    def estimator():
        return sagemaker.estimator.Estimator(
            image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            entry_point="train.py", source_dir=str(src), role=ROLE, instance_count=1, instance_type="ml.m5.large",
            output_path="s3://sdk-bucket/output", sagemaker_session=session, keep_alive_period_in_seconds=120)

    first = estimator()
    first.fit(wait=True, logs=True)
    out = capsys.readouterr().out
    assert "cache holds []" in out, out
    assert "Completed - Resource retained for reuse" in out, out
    second = estimator()
    second.fit(wait=True, logs=True)
    assert "cache holds ['marker']" in capsys.readouterr().out
    old = first.latest_training_job.describe()["WarmPoolStatus"]
    assert (old["Status"], old["ReusedByJob"]) == ("Reused", second.latest_training_job.name), old
    name = second.latest_training_job.name
    assert session.describe_training_job(name)["WarmPoolStatus"]["Status"] == "Available"
    session.update_training_job(name, resource_config={"KeepAlivePeriodInSeconds": 0})
    assert session.describe_training_job(name)["WarmPoolStatus"]["Status"] == "Terminated"
