"""Debugger and Profiler rules, evaluated by kiln on a job's metrics, logs and host metrics, against the
real binary through boto3 and the SageMaker SDK: `DebugRuleEvaluationStatuses` and
`ProfilerRuleEvaluationStatuses` go InProgress -> IssuesFound / NoIssuesFound (or Error, Stopped), and
StalledTrainingRule with stop_training_on_fire stops a silent job."""
import json
import os
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from kilntest import Kiln
from test_jobs import bundle, script_job, wait

EVALUATOR = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"

# Prints one loss a line; the losses come from the `losses` hyperparameter.
TRAIN_PY = """
import json, os, sys, time
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))

def value(key, default):
    v = json.loads(hp.get(key, default))
    return json.loads(v) if isinstance(v, str) else v  # the SDK JSON-encodes values once more

for i, loss in enumerate(value("losses", "[]")):
    print(f"step={i} loss={loss} val_loss={loss * float(value('gap', '1'))}", flush=True)
    time.sleep(0.05)
time.sleep(float(value("sleep", "0")))
"""

RISING = [1.0, 0.8, 0.7, 0.75, 0.9, 1.1, 1.3]
FALLING = [1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1]


def rule(name, image=EVALUATOR, **params):
    return {"RuleConfigurationName": name, "RuleEvaluatorImage": image,
            "RuleParameters": {"rule_to_invoke": name.split("-")[0], **{k: str(v) for k, v in params.items()}}}


@pytest.fixture(scope="module")
def kiln():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    k.client("s3").create_bucket(Bucket="jobs")
    yield k
    k.stop()


@pytest.fixture(scope="module")
def sm(kiln):
    return kiln.client()


@pytest.fixture(scope="module")
def source(kiln):
    return bundle(kiln.client("s3"), "code/rules/sourcedir.tar.gz", {"train.py": TRAIN_PY})


def job(name, source, losses, debug=(), profiler=(), **hps):
    req = script_job(name, source, hps={"losses": json.dumps(losses), **{k: str(v) for k, v in hps.items()}})
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "train:loss", "Regex": r" loss=([0-9.]+)"},
        {"Name": "validation:loss", "Regex": r"val_loss=([0-9.]+)"},
    ]
    if debug:
        req["DebugRuleConfigurations"] = list(debug)
    if profiler:
        req["ProfilerRuleConfigurations"] = list(profiler)
    return req


def rules_of(d):
    return {r["RuleConfigurationName"]: r for r in
            d.get("DebugRuleEvaluationStatuses", []) + d.get("ProfilerRuleEvaluationStatuses", [])}


def wait_rules(sm, name, timeout=30):
    """The job's description once it ended and no rule is InProgress any more."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") and all(
                r["RuleEvaluationStatus"] != "InProgress" for r in rules_of(d).values()):
            return d
        time.sleep(0.2)
    raise AssertionError(f"rules of {name} still in progress: {rules_of(d)}")


def test_loss_not_decreasing_finds_a_rising_loss_and_not_a_falling_one(sm, source):
    debug = [rule("LossNotDecreasing", num_steps=2, metric_name="train:loss")]
    # Long enough for host metrics (the first sample comes a second after the start).
    sm.create_training_job(**job("rules-rising", source, RISING, debug=debug, sleep=2.5,
                                 profiler=[rule("ProfilerReport")]))
    sm.create_training_job(**job("rules-falling", source, FALLING, debug=debug))
    d = sm.describe_training_job(TrainingJobName="rules-rising")
    first = d["DebugRuleEvaluationStatuses"][0]
    assert first["RuleConfigurationName"] == "LossNotDecreasing"
    assert first["RuleEvaluationStatus"] in ("InProgress", "IssuesFound")
    account = d["TrainingJobArn"].split(":")[4]
    assert first["RuleEvaluationJobArn"].startswith(
        f"arn:aws:sagemaker:us-east-1:{account}:processing-job/rules-rising-lossnotdecreasing-")

    rising = wait_rules(sm, "rules-rising")
    assert rising["TrainingJobStatus"] == "Completed", rising.get("FailureReason")
    r = rules_of(rising)["LossNotDecreasing"]
    assert r["RuleEvaluationStatus"] == "IssuesFound", r
    assert r["StatusDetails"].startswith("RuleEvaluationConditionMet: Evaluation of the rule LossNotDecreasing")
    assert "train:loss rose from 0.7 at step 2 to 0.9 at step 4" in r["StatusDetails"], r["StatusDetails"]
    report = rules_of(rising)["ProfilerReport"]
    assert report["RuleEvaluationStatus"] == "NoIssuesFound", report
    assert "CPU utilization of the 1 host(s)" in report["StatusDetails"], report
    assert rising["ProfilerRuleEvaluationStatuses"][0]["RuleConfigurationName"] == "ProfilerReport"

    falling = wait_rules(sm, "rules-falling")
    r = rules_of(falling)["LossNotDecreasing"]
    assert r["RuleEvaluationStatus"] == "NoIssuesFound", r
    assert "StatusDetails" not in r


def test_overfit_and_overtraining_read_the_training_and_validation_losses(sm, source):
    losses = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3]
    sm.create_training_job(**job("rules-overfit", source, losses, gap=1.5,
                                 debug=[rule("Overfit", patience=2), rule("Overtraining")]))
    sm.create_training_job(**job("rules-fit", source, losses, gap=1.02,
                                 debug=[rule("Overfit", patience=2), rule("Overtraining")]))
    over = rules_of(wait_rules(sm, "rules-overfit"))
    assert over["Overfit"]["RuleEvaluationStatus"] == "IssuesFound", over
    assert "validation:loss" in over["Overfit"]["StatusDetails"]
    assert over["Overtraining"]["RuleEvaluationStatus"] == "NoIssuesFound", over
    fit = rules_of(wait_rules(sm, "rules-fit"))
    assert fit["Overfit"]["RuleEvaluationStatus"] == "NoIssuesFound", fit


def test_stalled_training_rule_stops_a_silent_job(sm, source):
    stalled = rule("StalledTrainingRule", threshold=3, stop_training_on_fire=True)
    sm.create_training_job(**job("rules-stalled", source, [1.0], sleep=120, debug=[stalled]))
    started = time.time()
    d = wait(sm, "rules-stalled", timeout=60)
    assert d["TrainingJobStatus"] == "Stopped", d.get("FailureReason")
    assert time.time() - started < 40
    r = rules_of(d)["StalledTrainingRule"]
    assert r["RuleEvaluationStatus"] == "IssuesFound", r
    assert "printed nothing for" in r["StatusDetails"] and "threshold=3" in r["StatusDetails"], r


def test_rules_kiln_cannot_evaluate_say_why_and_bad_configurations_are_refused(sm, source):
    sm.create_training_job(**job("rules-unknown", source, FALLING,
                                 debug=[rule("VanishingGradient"), rule("LossNotDecreasing", metric_name="nope")]))
    got = rules_of(wait_rules(sm, "rules-unknown"))
    assert got["VanishingGradient"]["RuleEvaluationStatus"] == "Error"
    assert "kiln does not evaluate the rule 'VanishingGradient'" in got["VanishingGradient"]["StatusDetails"]
    assert got["LossNotDecreasing"]["RuleEvaluationStatus"] == "Error"
    assert "printed no value of the metric 'nope'" in got["LossNotDecreasing"]["StatusDetails"]

    bad = job("rules-bad", source, FALLING, debug=[{"RuleConfigurationName": "x", "RuleEvaluatorImage": "i"},
                                                  {"RuleConfigurationName": "x", "RuleEvaluatorImage": "i"}])
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**bad)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "RuleConfigurationName 'x' appears more than once" in e.value.response["Error"]["Message"]


def test_update_adds_a_profiler_rule_to_a_running_job_and_stop_stops_the_rules(sm, source):
    sm.create_training_job(**job("rules-update", source, FALLING, sleep=60,
                                 debug=[rule("LossNotDecreasing", num_steps=50)]))
    wait(sm, "rules-update", until=("InProgress",))
    sm.update_training_job(TrainingJobName="rules-update", ProfilerRuleConfigurations=[rule("ProfilerReport-1")])
    d = sm.describe_training_job(TrainingJobName="rules-update")
    assert [r["RuleConfigurationName"] for r in d["ProfilerRuleEvaluationStatuses"]] == ["ProfilerReport-1"]
    assert d["ProfilerRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == "InProgress"
    assert [r["RuleConfigurationName"] for r in d["ProfilerRuleConfigurations"]] == ["ProfilerReport-1"]
    deadline = time.time() + 30
    while sm.describe_training_job(TrainingJobName="rules-update")["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.2)
    sm.stop_training_job(TrainingJobName="rules-update")
    d = wait(sm, "rules-update")
    assert d["TrainingJobStatus"] == "Stopped"
    assert {r["RuleEvaluationStatus"] for r in rules_of(d).values()} == {"Stopped"}, rules_of(d)


def test_sdk_estimator_with_rules(kiln, source):
    sagemaker = pytest.importorskip("sagemaker")
    from sagemaker.debugger import Rule, rule_configs
    from sagemaker.estimator import Estimator

    key = kiln.key
    boto = boto3.Session(aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                         region_name="us-east-1")
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = kiln.endpoint
    try:
        session = sagemaker.Session(boto_session=boto, default_bucket="jobs")
        est = Estimator(
            image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            role="arn:aws:iam::123456789012:role/SageMakerRole", instance_count=1, instance_type="ml.m5.large",
            entry_point="train.py", source_dir=source, sagemaker_session=session, output_path="s3://jobs/sdk-rules",
            hyperparameters={"losses": json.dumps(RISING)},
            metric_definitions=[{"Name": "train:loss", "Regex": r" loss=([0-9.]+)"}],
            rules=[Rule.sagemaker(rule_configs.loss_not_decreasing(), rule_parameters={"num_steps": "2"})],
        )
        est.fit(job_name="rules-sdk", wait=True, logs=False)
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved
    sm = kiln.client()
    got = rules_of(wait_rules(sm, "rules-sdk"))
    assert got["LossNotDecreasing"]["RuleEvaluationStatus"] == "IssuesFound", got
    # The SDK reads the statuses back as SageMaker's.
    assert est.latest_training_job.rule_job_summary()[0]["RuleEvaluationStatus"] == "IssuesFound"
