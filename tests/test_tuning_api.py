"""Hyperparameter tuning jobs through boto3: validation, the shapes the SDK reads, children launched
within MaxParallelTrainingJobs (on a server that does not run them)."""
import time

import pytest
from botocore.exceptions import ClientError

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def tuning_request(name, strategy="Bayesian", **over):
    req = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"}],
                "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}],
            },
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"num_round": "20", "objective": "binary:logistic", "eval_metric": "auc"},
            "AlgorithmSpecification": {"TrainingImage": XGB, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/train/"}}}],
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }
    for k, v in over.items():
        req[k] = v
    return req


def err(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_create_describe_and_children(sm):
    arn = sm.create_hyper_parameter_tuning_job(**tuning_request("tune-api", Tags=[{"Key": "team", "Value": "ml"}]))["HyperParameterTuningJobArn"]
    assert arn.endswith(":hyper-parameter-tuning-job/tune-api")
    deadline = time.time() + 20
    while True:
        kids = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")["TrainingJobSummaries"]
        if len(kids) == 2:
            break
        assert time.time() < deadline, kids
        time.sleep(0.2)
    time.sleep(1.5)
    # Never more than MaxParallelTrainingJobs in flight.
    assert len(sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")["TrainingJobSummaries"]) == 2
    d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")
    cfg = d["HyperParameterTuningJobConfig"]
    assert d["HyperParameterTuningJobStatus"] == "InProgress"
    assert cfg["TrainingJobEarlyStoppingType"] == "Off"
    assert set(cfg["ParameterRanges"]) >= {"IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges"}
    assert cfg["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    td = d["TrainingJobDefinition"]
    assert td["StaticHyperParameters"]["_tuning_objective_metric"] == "validation:auc"
    assert any(m["Name"] == "validation:auc" for m in td["AlgorithmSpecification"]["MetricDefinitions"])
    assert d["TrainingJobStatusCounters"]["InProgress"] == 2
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 0, "Pending": 2, "Failed": 0}
    assert "BestTrainingJob" not in d
    for k in kids:
        assert k["TrainingJobName"].startswith("tune-api-00") and len(k["TrainingJobName"].split("-")[-1]) == 8
        assert set(k["TunedHyperParameters"]) == {"max_depth", "eta"}
        assert 2 <= int(k["TunedHyperParameters"]["max_depth"]) <= 8
        assert 0.05 <= float(k["TunedHyperParameters"]["eta"]) <= 0.5
        child = sm.describe_training_job(TrainingJobName=k["TrainingJobName"])
        assert child["TuningJobArn"] == arn
        assert child["HyperParameters"]["_tuning_objective_metric"] == "validation:auc"
        assert child["HyperParameters"]["num_round"] == "20"
        assert sm.list_tags(ResourceArn=child["TrainingJobArn"])["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    listed = sm.list_hyper_parameter_tuning_jobs(NameContains="tune-api")["HyperParameterTuningJobSummaries"]
    assert [j["HyperParameterTuningJobName"] for j in listed] == ["tune-api"] and listed[0]["Strategy"] == "Bayesian"
    assert err(sm.create_hyper_parameter_tuning_job, **tuning_request("tune-api"))[0] == "ResourceInUse"
    # Stop: children are stopped, then the tuning job is Stopped.
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")
    deadline = time.time() + 20
    while sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")["HyperParameterTuningJobStatus"] != "Stopped":
        assert time.time() < deadline
        time.sleep(0.2)
    for k in kids:
        assert sm.describe_training_job(TrainingJobName=k["TrainingJobName"])["TrainingJobStatus"] == "Stopped"
    sm.delete_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-api")
    assert err(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName="tune-api")[0] == "ResourceNotFound"
    assert sm.describe_training_job(TrainingJobName=kids[0]["TrainingJobName"])["TrainingJobStatus"] == "Stopped"


def test_grid_fills_max_number_of_jobs(sm):
    req = tuning_request("tune-grid", strategy="Grid")
    req["HyperParameterTuningJobConfig"]["ParameterRanges"] = {"CategoricalParameterRanges": [
        {"Name": "max_depth", "Values": ["3", "5", "7"]}, {"Name": "eta", "Values": ["0.1", "0.3"]}]}
    req["HyperParameterTuningJobConfig"]["ResourceLimits"] = {"MaxParallelTrainingJobs": 1}
    sm.create_hyper_parameter_tuning_job(**req)
    d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-grid")
    assert d["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 6
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-grid")


def mutate(path, value):
    def f(req):
        obj = req
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            obj.pop(path[-1])
        else:
            obj[path[-1]] = value
    return f


C = ["HyperParameterTuningJobConfig"]
RANGES = C + ["ParameterRanges"]
CASES = [
    ("name pattern", mutate(["HyperParameterTuningJobName"], "bad_name"), "at 'hyperParameterTuningJobName' failed to satisfy constraint: Member must satisfy regular expression pattern"),
    ("name too long", mutate(["HyperParameterTuningJobName"], "a" * 33), "Member must have length less than or equal to 32"),
    ("strategy enum", mutate(C + ["Strategy"], "Genetic"), "at 'hyperParameterTuningJobConfig.strategy' failed to satisfy constraint: Member must satisfy enum value set"),
    ("scaling enum", mutate(RANGES + ["IntegerParameterRanges", 0, "ScalingType"], "Cubic"), "scalingType' failed to satisfy constraint"),
    ("log needs positive min", mutate(RANGES + ["ContinuousParameterRanges", 0, "MinValue"], "0"), "'eta'"),
    ("min above max", mutate(RANGES + ["IntegerParameterRanges", 0, "MinValue"], "9"), "'max_depth'"),
    ("integer bound not a number", mutate(RANGES + ["IntegerParameterRanges", 0, "MaxValue"], "lots"), "is not a valid integer"),
    ("reverse log continuous only", mutate(RANGES + ["IntegerParameterRanges", 0, "ScalingType"], "ReverseLogarithmic"), "'max_depth'"),
    ("grid with integer ranges", mutate(C + ["Strategy"], "Grid"), "Grid"),
    ("hyperband needs early stopping off", lambda r: (r[C[0]].update(Strategy="Hyperband", TrainingJobEarlyStoppingType="Auto")), "TrainingJobEarlyStoppingType must be Off"),
    ("hyperband needs a resource", mutate(C + ["Strategy"], "Hyperband"), "MaxResource"),
    ("max jobs required", mutate(C + ["ResourceLimits", "MaxNumberOfTrainingJobs"], KeyError), "MaxNumberOfTrainingJobs is required"),
    ("parallel at least 1", mutate(C + ["ResourceLimits", "MaxParallelTrainingJobs"], 0), "at 'hyperParameterTuningJobConfig.resourceLimits.maxParallelTrainingJobs'"),
    ("runtime range", mutate(C + ["ResourceLimits", "MaxRuntimeInSeconds"], 60), "maxRuntimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 120"),
    ("too many ranges", mutate(RANGES + ["CategoricalParameterRanges"], [{"Name": f"c{i}", "Values": ["a"]} for i in range(31)]), "categoricalParameterRanges' failed to satisfy constraint: Member must have length less than or equal to 30"),
    ("too many values", mutate(RANGES + ["CategoricalParameterRanges"], [{"Name": "c", "Values": [str(i) for i in range(31)]}]), "Member must have length less than or equal to 30"),
    ("tuned and static", mutate(["TrainingJobDefinition", "StaticHyperParameters", "eta"], "0.1"), "both tuned and given in StaticHyperParameters"),
    ("objective not defined", mutate(C + ["HyperParameterTuningJobObjective", "MetricName"], "validation:banana"), "not one of the MetricDefinitions"),
    ("both definitions", lambda r: r.update(TrainingJobDefinitions=[r["TrainingJobDefinition"]]), "not both"),
    ("no definition", mutate(["TrainingJobDefinition"], KeyError), "TrainingJobDefinition or TrainingJobDefinitions is required"),
    ("objective type enum", mutate(C + ["HyperParameterTuningJobObjective", "Type"], "Best"), "type' failed to satisfy constraint: Member must satisfy enum value set: [Maximize, Minimize]"),
    ("warm start parent missing", lambda r: r.update(WarmStartConfig={"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "nope"}], "WarmStartType": "TransferLearning"}), "'nope' does not exist"),
    ("bad child definition", mutate(["TrainingJobDefinition", "ResourceConfig", "InstanceType"], "ml.p3.2xlarge"), "GPUs"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_tuning_validation(sm_raw, case):
    _, change, expected = case
    req = tuning_request("tune-valid")
    change(req)
    code, msg = err(sm_raw.create_hyper_parameter_tuning_job, **req)
    assert code in ("ValidationException", "ResourceLimitExceeded"), msg
    assert expected in msg, msg


def test_unknown_tuning_job(sm):
    assert err(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName="missing")[0] == "ResourceNotFound"
    assert err(sm.stop_hyper_parameter_tuning_job, HyperParameterTuningJobName="missing")[0] == "ResourceNotFound"
    assert err(sm.list_training_jobs_for_hyper_parameter_tuning_job, HyperParameterTuningJobName="missing")[0] == "ResourceNotFound"
