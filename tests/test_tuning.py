"""Tuning jobs that really run: the built-in XGBoost on Titanic, early stopping (median rule and
Hyperband) on a script-mode trainer, warm start, and the SageMaker SDK's HyperparameterTuner."""
import io
import json
import os
import tarfile
import textwrap
import time

import boto3
import pytest

from kilntest import SHARED, Kiln

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TERMINAL = ("Completed", "Failed", "Stopped")


@pytest.fixture(scope="module")
def tuner():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    s3 = k.client("s3")
    s3.create_bucket(Bucket="hpo")
    titanic = SHARED / "data" / "titanic"
    s3.upload_file(str(titanic / "train.csv"), "hpo", "titanic/train/train.csv")
    s3.upload_file(str(titanic / "test.csv"), "hpo", "titanic/validation/test.csv")
    yield k
    k.stop()


def xgb_definition(statics=None):
    return {
        "StaticHyperParameters": {"num_round": "30", "objective": "binary:logistic", "eval_metric": "auc", **(statics or {})},
        "AlgorithmSpecification": {"TrainingImage": XGB, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://hpo/titanic/{ch}/"}}} for ch in ("train", "validation")],
        "OutputDataConfig": {"S3OutputPath": "s3://hpo/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def wait_tuning(sm, name, timeout=300, watch_parallel=None):
    deadline = time.time() + timeout
    most = 0
    while time.time() < deadline:
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        # One page, so that the statuses counted are of one moment (pages fetched one after the
        # other can see a child end on the first and its successor start on the second).
        kids = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100)["TrainingJobSummaries"]
        most = max(most, sum(1 for j in kids if j["TrainingJobStatus"] in ("InProgress", "Stopping")))
        if d["HyperParameterTuningJobStatus"] in TERMINAL:
            return d, kids, most
        time.sleep(0.3)
    raise AssertionError(f"{name} still {d['HyperParameterTuningJobStatus']} after {timeout} s: {d['TrainingJobStatusCounters']}")


def test_bayesian_xgboost_on_titanic(tuner):
    sm = tuner.client()
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="titanic-bayes",
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}],
                "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}],
            },
            "RandomSeed": 7,
        },
        TrainingJobDefinition=xgb_definition())
    d, kids, most = wait_tuning(sm, "titanic-bayes")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert most <= 2
    assert len(kids) == 6
    assert d["TrainingJobStatusCounters"]["Completed"] == 6
    assert d["ObjectiveStatusCounters"]["Succeeded"] == 6
    values = {j["TrainingJobName"]: j["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for j in kids}
    best = d["BestTrainingJob"]
    assert best["TrainingJobName"] == max(values, key=values.get)
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {"Type": "Maximize", "MetricName": "validation:auc", "Value": max(values.values())}
    assert 0.75 < best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] < 1.0
    # Each child's objective is its own last validation:auc.
    for name, v in values.items():
        child = sm.describe_training_job(TrainingJobName=name)
        final = {m["MetricName"]: m["Value"] for m in child["FinalMetricDataList"]}
        assert final["validation:auc"] == v
    ordered = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="titanic-bayes", SortBy="FinalObjectiveMetricValue", SortOrder="Descending")["TrainingJobSummaries"]
    assert ordered[0]["TrainingJobName"] == best["TrainingJobName"]
    assert "HyperParameterTuningEndTime" in d and d["ConsumedResources"]["RuntimeInSeconds"] >= 0


def test_warm_start_identical_data(tuner):
    sm = tuner.client()
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="titanic-warm",
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}],
                "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}],
            },
        },
        TrainingJobDefinition=xgb_definition(),
        WarmStartConfig={"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "titanic-bayes"}],
                         "WarmStartType": "IdenticalDataAndAlgorithm"})
    d, kids, _ = wait_tuning(sm, "titanic-warm")
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    parent = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="titanic-bayes")["BestTrainingJob"]
    overall = d["OverallBestTrainingJob"]
    best_here = d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    expected = parent if parent["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] >= best_here else d["BestTrainingJob"]
    assert overall["TrainingJobName"] == expected["TrainingJobName"]
    assert d["WarmStartConfig"]["WarmStartType"] == "IdenticalDataAndAlgorithm"


def upload_trainer(s3, key):
    code = textwrap.dedent("""
        import argparse, time
        p = argparse.ArgumentParser()
        p.add_argument("-x", type=float)  # the toolkit passes one-letter hyperparameters as -x
        p.add_argument("--epochs", type=int, default=9)
        a = p.parse_args()
        for e in range(1, a.epochs + 1):
            # Good trials (large x) climb higher; every trial's curve rises with epochs.
            print(f"epoch={e} score={a.x * (1 - 0.5 ** e):.5f}", flush=True)
            time.sleep(0.25)
    """)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = code.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="hpo", Key=key, Body=buf.getvalue())
    return f"s3://hpo/{key}"


def script_definition(src):
    return {
        "StaticHyperParameters": {"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(src), "epochs": "9"},
        "AlgorithmSpecification": {"TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
                                   "TrainingInputMode": "File",
                                   "MetricDefinitions": [{"Name": "score", "Regex": r"score=([0-9.]+)"}]},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://hpo/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


@pytest.mark.parametrize("mode", ["Auto", "Hyperband"])
def test_early_stopping_stops_bad_children(tuner, mode):
    sm = tuner.client()
    src = upload_trainer(tuner.client("s3"), f"code/curve-{mode}/sourcedir.tar.gz")
    name = f"curves-{mode.lower()}"
    config = {
        "Strategy": "Random" if mode == "Auto" else "Hyperband",
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3},
        "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "0.0", "MaxValue": "1.0", "ScalingType": "Linear"}]},
        "RandomSeed": 3,
    }
    if mode == "Auto":
        config["TrainingJobEarlyStoppingType"] = "Auto"
    else:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 9}}
    sm.create_hyper_parameter_tuning_job(HyperParameterTuningJobName=name, HyperParameterTuningJobConfig=config,
                                         TrainingJobDefinition=script_definition(src))
    d, kids, most = wait_tuning(sm, name, timeout=400)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert most <= 3
    stopped = [j for j in kids if j["TrainingJobStatus"] == "Stopped"]
    completed = [j for j in kids if j["TrainingJobStatus"] == "Completed"]
    assert stopped, "early stopping stopped no child"
    assert d["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    # The children that were stopped were the weaker ones: below the best completed child.
    best_x = max(float(j["TunedHyperParameters"]["x"]) for j in completed)
    seen = sorted((j["TrainingJobName"], j["TrainingJobStatus"], j["TunedHyperParameters"]["x"]) for j in kids)
    assert all(float(j["TunedHyperParameters"]["x"]) < best_x for j in stopped), seen
    assert d["BestTrainingJob"]["TrainingJobStatus"] == "Completed"


def test_sagemaker_sdk_hyperparameter_tuner(tuner, monkeypatch):
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    sagemaker = pytest.importorskip("sagemaker")
    from sagemaker.inputs import TrainingInput
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter
    key = tuner.key
    for k, v in dict(AWS_ENDPOINT_URL=tuner.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                     AWS_SECRET_ACCESS_KEY=key["secret_access_key"], AWS_DEFAULT_REGION="us-east-1").items():
        monkeypatch.setenv(k, v)
    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="hpo")
    est = sagemaker.estimator.Estimator(
        image_uri=sagemaker.image_uris.retrieve("xgboost", region="us-east-1", version="1.7-1"), role=ROLE,
        instance_count=1, instance_type="ml.m5.large", output_path="s3://hpo/sdk-out", sagemaker_session=session)
    est.set_hyperparameters(objective="binary:logistic", num_round=20, eval_metric="auc")
    tuner_obj = HyperparameterTuner(
        est, objective_metric_name="validation:auc", objective_type="Maximize",
        hyperparameter_ranges={"eta": ContinuousParameter(0.05, 0.5), "max_depth": IntegerParameter(2, 6)},
        max_jobs=4, max_parallel_jobs=2, base_tuning_job_name="sdk-tune")
    tuner_obj.fit({"train": TrainingInput("s3://hpo/titanic/train/", content_type="text/csv"),
                   "validation": TrainingInput("s3://hpo/titanic/validation/", content_type="text/csv")}, wait=True)
    name = tuner_obj.latest_tuning_job.name
    best = tuner_obj.best_training_job()
    sm = tuner.client()
    d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert best == d["BestTrainingJob"]["TrainingJobName"]
    attached = HyperparameterTuner.attach(name, sagemaker_session=session)
    assert attached.best_training_job() == best
    assert attached.objective_metric_name == "validation:auc"
    df = tuner_obj.analytics().dataframe()
    assert len(df) == 4 and set(df["TrainingJobStatus"]) == {"Completed"}
    assert df["FinalObjectiveValue"].max() == d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


def test_tuning_survives_a_server_restart_without_losing_or_duplicating_children(tmp_path):
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    try:
        s3 = k.client("s3")
        s3.create_bucket(Bucket="hpo")
        src = upload_trainer(s3, "code/restart/sourcedir.tar.gz")
        definition = script_definition(src)
        definition["StaticHyperParameters"]["epochs"] = "4"
        k.client().create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="restart-tune",
            HyperParameterTuningJobConfig={
                "Strategy": "Random",
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
                "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "0", "MaxValue": "1"}]},
            },
            TrainingJobDefinition=definition)
        deadline = time.time() + 60
        while True:
            kids = k.client().list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="restart-tune")["TrainingJobSummaries"]
            if len(kids) >= 3:
                break
            assert time.time() < deadline
            time.sleep(0.2)
        k.proc.kill()  # SIGKILL the server mid-tuning; children's agents keep running
        k.proc.wait()
        k = Kiln(data_dir=k.data_dir, port=k.port).start()
        sm = k.client()
        d, kids, most = wait_tuning(sm, "restart-tune", timeout=300)
        assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
        names = sorted(j["TrainingJobName"] for j in kids)
        assert len(names) == 6 and len(set(names)) == 6
        assert [n.split("-")[2] for n in names] == ["001", "002", "003", "004", "005", "006"]
        assert d["TrainingJobStatusCounters"]["Completed"] == 6
    finally:
        k.stop()
