"""SageMaker Search against the real binary, through boto3 and the AWS CLI: TrainingJob and
HyperParameterTuningJob resources, every filter operator, nested filters on FinalMetricDataList,
sub-expressions, sort, pagination, accounts apart, and the errors of bad input. (The SageMaker
Python SDK has no helper that searches training jobs; its model-card code calls the client's
`search` as below.)"""
import datetime
import json
import shutil

import pytest
from botocore.exceptions import ClientError

from kilntest import Kiln, job_request
from test_jobs import bundle, script_job, wait
from test_tuning_api import tuning_request

# Three script jobs that print an accuracy, with a learning rate and tags each.
SCRIPTED = {
    "srch-a": {"lr": "0.1", "acc": 0.9, "tags": {"team": "ml", "env": "prod"}},
    "srch-b": {"lr": "0.01", "acc": 0.7, "tags": {"team": "ml"}},
    "srch-c": {"lr": "0.5", "acc": 0.95, "tags": {"team": "data"}},
}
NOOPS = [f"srch-noop-{i}" for i in range(5)]
TUNING = "tuning-for-search"
OTHER_ACCOUNT = "444455556666"

TRAIN_PY = """
import json, os
hps = json.loads(os.environ["SM_HPS"])
print(f"acc={float(hps['acc']):.4f}", flush=True)
"""


@pytest.fixture(scope="module")
def server():
    k = Kiln().start()
    s3 = k.client("s3")
    s3.create_bucket(Bucket="jobs")
    sm = k.client()
    src = bundle(s3, "code/search/sourcedir.tar.gz", {"train.py": TRAIN_PY})
    for name, job in SCRIPTED.items():
        req = script_job(name, src, hps={"lr": job["lr"], "acc": str(job["acc"])})
        req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "acc", "Regex": r"acc=([0-9.]+)"}]
        req["Tags"] = [{"Key": k_, "Value": v} for k_, v in job["tags"].items()]
        sm.create_training_job(**req)
    for name in NOOPS:
        sm.create_training_job(**job_request(name, OutputDataConfig={"S3OutputPath": "s3://jobs/noop-out"}))
    for name in list(SCRIPTED) + NOOPS:
        d = wait(sm, name, timeout=180)
        assert d["TrainingJobStatus"] == "Completed", (name, d.get("FailureReason"))
    req = tuning_request(TUNING, Tags=[{"Key": "team", "Value": "tune"}])
    req["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 1
    sm.create_hyper_parameter_tuning_job(**req)
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=TUNING)
    other = k.client(key=k.add_key(account=OTHER_ACCOUNT))
    req = job_request("srch-a")
    req["Tags"] = [{"Key": "team", "Value": "ml"}]
    other.create_training_job(**req)
    k.other = other
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sm(server):
    return server.client()


def names(results, key="TrainingJob", name="TrainingJobName"):
    return [r[key][name] for r in results["Results"]]


def search(sm, *filters, nested=None, subs=None, operator=None, **kw):
    expr = {}
    if filters:
        expr["Filters"] = [{k: v for k, v in zip(("Name", "Operator", "Value"), f) if v is not None} for f in filters]
    if nested:
        expr["NestedFilters"] = nested
    if subs:
        expr["SubExpressions"] = subs
    if operator:
        expr["Operator"] = operator
    kw.setdefault("MaxResults", 100)
    return sm.search(Resource="TrainingJob", SearchExpression=expr, **kw)


def found(sm, *filters, **kw):
    """The names matching, among this module's jobs, sorted."""
    return sorted(n for n in names(search(sm, *filters, **kw)) if n.startswith("srch-"))


def test_equals_returns_the_described_job_with_tags(sm):
    r = search(sm, ("TrainingJobName", "Equals", "srch-a"))
    assert names(r) == ["srch-a"] and r["TotalHits"] == {"Value": 1, "Relation": "EqualTo"}
    job = r["Results"][0]["TrainingJob"]
    described = sm.describe_training_job(TrainingJobName="srch-a")
    for key in ("TrainingJobArn", "TrainingJobStatus", "HyperParameters", "CreationTime", "ResourceConfig",
                "AlgorithmSpecification", "FinalMetricDataList"):
        assert job[key] == described[key], key
    assert sorted((t["Key"], t["Value"]) for t in job["Tags"]) == [("env", "prod"), ("team", "ml")]
    assert [m["MetricName"] for m in job["FinalMetricDataList"]] == ["acc"]


def test_each_operator(sm):
    assert found(sm, ("TrainingJobName", "NotEquals", "srch-a"), ("TrainingJobName", "Contains", "srch-")) == sorted(
        ["srch-b", "srch-c"] + NOOPS)
    # Hyperparameters are strings holding numbers: compared as numbers (as text "0.5" < "0.05" is false too,
    # but "0.1" > "0.05" and "10" < "9" would not be).
    assert found(sm, ("HyperParameters.lr", "GreaterThan", "0.05")) == ["srch-a", "srch-c"]
    assert found(sm, ("HyperParameters.lr", "GreaterThanOrEqualTo", "0.1")) == ["srch-a", "srch-c"]
    assert found(sm, ("HyperParameters.lr", "LessThan", "0.1")) == ["srch-b"]
    assert found(sm, ("HyperParameters.lr", "LessThanOrEqualTo", "0.1")) == ["srch-a", "srch-b"]
    assert found(sm, ("TrainingJobName", "Contains", "noop")) == NOOPS
    assert found(sm, ("Tags.env", "Exists", None)) == ["srch-a"]
    assert found(sm, ("Tags.team", "NotExists", None)) == NOOPS
    assert found(sm, ("Tags.team", "In", "data,nobody")) == ["srch-c"]
    assert found(sm, ("TrainingJobStatus", "In", "Failed, Stopped")) == []
    assert found(sm, ("TrainingJobStatus", "Equals", "Completed"), ("Tags.team", "Equals", "ml")) == [
        "srch-a", "srch-b"]
    assert found(sm, ("AlgorithmSpecification.TrainingImage", "Equals", "kiln/noop")) == NOOPS
    assert found(sm, ("ResourceConfig.InstanceType", "Equals", "ml.m5.large")) == sorted(list(SCRIPTED) + NOOPS)


def test_times(sm):
    created = sm.describe_training_job(TrainingJobName="srch-noop-4")["CreationTime"]
    before = (created - datetime.timedelta(hours=1)).isoformat()
    after = (created + datetime.timedelta(hours=1)).isoformat()
    assert len(found(sm, ("CreationTime", "GreaterThan", before))) == 8
    assert found(sm, ("CreationTime", "GreaterThan", after)) == []
    assert len(found(sm, ("LastModifiedTime", "LessThan", str(created.timestamp() + 3600)))) == 8


def test_nested_metric_filters(sm):
    def metric_above(value):
        return [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
            {"Name": "FinalMetricDataList.MetricName", "Operator": "Equals", "Value": "acc"},
            {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThan", "Value": str(value)}]}]
    assert found(sm, nested=metric_above(0.8)) == ["srch-a", "srch-c"]
    assert found(sm, nested=metric_above(0.92)) == ["srch-c"]
    assert found(sm, nested=metric_above(0.99)) == []
    # A metric of another name does not count.
    none = [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
        {"Name": "FinalMetricDataList.MetricName", "Operator": "Equals", "Value": "loss"},
        {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThan", "Value": "0"}]}]
    assert found(sm, nested=none) == []


def test_or_and_sub_expressions(sm):
    subs = [{"Filters": [{"Name": "Tags.team", "Operator": "Equals", "Value": "ml"},
                         {"Name": "HyperParameters.lr", "Operator": "LessThan", "Value": "0.05"}]},
            {"Filters": [{"Name": "TrainingJobName", "Operator": "Equals", "Value": "srch-noop-3"}]}]
    assert found(sm, subs=subs, operator="Or") == ["srch-b", "srch-noop-3"]
    assert found(sm, ("TrainingJobName", "Equals", "srch-c"), ("TrainingJobName", "Equals", "srch-a"),
                 operator="Or") == ["srch-a", "srch-c"]


def test_sort(sm):
    only_scripted = ("HyperParameters.lr", "Exists", None)
    assert names(search(sm, only_scripted, SortBy="HyperParameters.lr", SortOrder="Ascending")) == [
        "srch-b", "srch-a", "srch-c"]
    assert names(search(sm, only_scripted, SortBy="HyperParameters.lr", SortOrder="Descending")) == [
        "srch-c", "srch-a", "srch-b"]
    assert names(search(sm, ("TrainingJobName", "Contains", "noop"), SortBy="TrainingJobName")) == NOOPS[::-1]
    # The default: newest first.
    r = search(sm, ("TrainingJobName", "Contains", "srch-"))
    times = [x["TrainingJob"]["CreationTime"] for x in r["Results"]]
    assert times == sorted(times, reverse=True)
    # Jobs without the sort property go last, whichever the order.
    for order in ("Ascending", "Descending"):
        got = names(search(sm, ("TrainingJobName", "Contains", "srch-"), SortBy="Tags.env", SortOrder=order))
        assert got[0] == "srch-a"


def test_pagination(sm):
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        r = search(sm, ("TrainingJobName", "Contains", "srch-"), SortBy="TrainingJobName", SortOrder="Ascending",
                   MaxResults=3, **kw)
        assert len(r["Results"]) <= 3 and r["TotalHits"]["Value"] == 8
        seen += names(r)
        pages += 1
        token = r.get("NextToken")
        if not token:
            break
    assert pages == 3 and seen == sorted(list(SCRIPTED) + NOOPS)
    paginated = sm.get_paginator("search").paginate(
        Resource="TrainingJob", SearchExpression={"Filters": [{"Name": "Tags.team", "Operator": "In", "Value": "ml,data"}]},
        PaginationConfig={"PageSize": 1})
    assert sorted(n for page in paginated for n in names(page)) == ["srch-a", "srch-b", "srch-c"]
    # MaxResults defaults to 10, more than the 8 jobs.
    r = sm.search(Resource="TrainingJob", SearchExpression={"Filters": [
        {"Name": "TrainingJobName", "Operator": "Contains", "Value": "srch-"}]})
    assert len(names(r)) == 8 and "NextToken" not in r


def test_tuning_jobs(sm):
    r = sm.search(Resource="HyperParameterTuningJob", SearchExpression={"Filters": [
        {"Name": "HyperParameterTuningJobName", "Operator": "Equals", "Value": TUNING}]})
    assert names(r, "HyperParameterTuningJob", "HyperParameterTuningJobName") == [TUNING]
    job = r["Results"][0]["HyperParameterTuningJob"]
    assert job["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"
    assert job["Tags"] == [{"Key": "team", "Value": "tune"}]
    assert job["HyperParameterTuningJobStatus"] in ("Stopping", "Stopped")
    r = sm.search(Resource="HyperParameterTuningJob", SearchExpression={"Filters": [
        {"Name": "Tags.team", "Operator": "Equals", "Value": "ml"}]})
    assert r["Results"] == []


def test_accounts_are_apart(server, sm):
    other = server.other
    r = other.search(Resource="TrainingJob", MaxResults=100)
    assert names(r) == ["srch-a"]
    assert r["Results"][0]["TrainingJob"]["AlgorithmSpecification"]["TrainingImage"] == "kiln/noop"
    assert names(other.search(Resource="TrainingJob", SearchExpression={"Filters": [
        {"Name": "TrainingJobName", "Operator": "Contains", "Value": "noop"}]})) == []
    assert other.search(Resource="HyperParameterTuningJob")["Results"] == []
    # And this account's srch-a is its own, with its tags.
    assert search(sm, ("TrainingJobName", "Equals", "srch-a"))["Results"][0]["TrainingJob"][
        "AlgorithmSpecification"]["TrainingImage"] != "kiln/noop"


def test_bad_input(server, sm):
    raw = server.client(validate=False)

    def code(client, **kw):
        with pytest.raises(ClientError) as e:
            client.search(**kw)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    c, m = code(sm, Resource="TrainingJob", SearchExpression={"Filters": [{"Name": "Nope", "Value": "x"}]})
    assert c == "ValidationException" and "Nope" in m
    c, m = code(raw, Resource="TrainingJob", SearchExpression={"Filters": [
        {"Name": "TrainingJobName", "Operator": "Like", "Value": "x"}]})
    assert c == "ValidationException" and "Like" in m
    c, m = code(sm, Resource="TrainingJob", SearchExpression={"Filters": [
        {"Name": "TrainingJobName", "Operator": "Equals"}]})
    assert c == "ValidationException" and "Value" in m
    c, _ = code(sm, Resource="TrainingJob", SearchExpression={"NestedFilters": [
        {"NestedPropertyName": "FinalMetricDataList", "Filters": [{"Name": "MetricName", "Value": "acc"}]}]})
    assert c == "ValidationException"
    c, _ = code(sm, Resource="Endpoint")
    assert c == "ValidationException"
    c, _ = code(sm, Resource="TrainingJob", SortBy="Bogus")
    assert c == "ValidationException"
    c, _ = code(sm, Resource="TrainingJob", NextToken="garbage")
    assert c == "ValidationException"
    c, _ = code(raw, Resource="TrainingJob", MaxResults=1000)
    assert c == "ValidationException"


def test_aws_cli(server):
    expr = json.dumps({"NestedFilters": [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
        {"Name": "FinalMetricDataList.MetricName", "Operator": "Equals", "Value": "acc"},
        {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThanOrEqualTo", "Value": "0.9"}]}]})
    p = server.aws("sagemaker", "search", "--resource", "TrainingJob", "--search-expression", expr,
                   "--sort-by", "TrainingJobName", "--sort-order", "Ascending", "--output", "json")
    assert [r["TrainingJob"]["TrainingJobName"] for r in json.loads(p.stdout)["Results"]] == ["srch-a", "srch-c"]
