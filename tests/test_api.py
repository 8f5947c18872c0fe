"""The SageMaker training-job API through boto3 and the AWS CLI against the real `kiln serve`."""
import json
import math
import re
import time

import botocore
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from kilntest import job_request


def error_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    err = e.value.response["Error"]
    return err["Code"], err["Message"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


# --- every operation -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_bucket(kiln):
    s3 = kiln.client("s3")
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="train/part-0.csv", Body=b"1,2,3\n")
    return "bucket"


def test_input_prefix_without_objects_is_refused(sm, data_bucket):
    for uri in ("s3://bucket/empty/", "s3://no-such-bucket/train/"):
        req = job_request("no-input", InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri}}}])
        code, msg, _ = error_of(sm.create_training_job, **req)
        assert code == "ValidationException"
        assert msg.startswith(f'No S3 objects found under S3 URL "{uri}" given in input data source.'), msg


def test_create_describe_echoes_request_with_service_defaults(sm, data_bucket):
    req = job_request("echo-1", HyperParameters={"num_round": "10"},
                      InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                          "S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/"}}}],
                      Environment={"MY_VAR": "1"}, Tags=[{"Key": "team", "Value": "ml"}])
    req["ResourceConfig"].pop("VolumeSizeInGB")
    req.pop("StoppingCondition")
    # The model requires StoppingCondition only on older API versions; kiln requires it (reference §3.1).
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 86400}
    arn = sm.create_training_job(**req)["TrainingJobArn"]
    account = sm.meta.config.user_agent and arn.split(":")[4]
    assert arn == f"arn:aws:sagemaker:us-east-1:{account}:training-job/echo-1"
    d = sm.describe_training_job(TrainingJobName="echo-1")
    assert d["TrainingJobName"] == "echo-1" and d["TrainingJobArn"] == arn
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("InProgress", "Starting")
    assert d["OutputDataConfig"]["KmsKeyId"] == ""
    assert d["ResourceConfig"]["VolumeSizeInGB"] == 30
    assert d["StoppingCondition"]["MaxRuntimeInSeconds"] == 86400
    ch = d["InputDataConfig"][0]
    assert ch["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert ch["CompressionType"] == "None" and ch["RecordWrapperType"] == "None"
    assert d["HyperParameters"] == {"num_round": "10"}
    assert d["Environment"] == {"MY_VAR": "1"}
    assert d["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert d["EnableManagedSpotTraining"] is False and d["EnableNetworkIsolation"] is False
    assert "Tags" not in d and "ModelArtifacts" not in d and "TrainingStartTime" not in d
    assert "FailureReason" not in d and "TrainingEndTime" not in d
    tr = d["SecondaryStatusTransitions"]
    assert [t["Status"] for t in tr] == ["Starting"] and tr[0]["StatusMessage"]
    assert tr[0]["StartTime"] == d["CreationTime"]
    assert d["LastModifiedTime"] >= d["CreationTime"]


def test_list_filters_sort_and_default_newest_first(sm):
    names = [f"lst-{i}" for i in range(5)]
    for i, n in enumerate(names):
        sm.create_training_job(**job_request(n))
        # boto3 sends timestamps as whole seconds: keep the first and last job a second apart.
        time.sleep(1.05 if i in (0, 3) else 0.01)
    got = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains="lst-", MaxResults=100)["TrainingJobSummaries"]]
    assert got == list(reversed(names))
    got = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains="LST", SortBy="Name", SortOrder="Ascending")["TrainingJobSummaries"]]
    assert got == names
    s = sm.list_training_jobs(NameContains="lst-3")["TrainingJobSummaries"][0]
    assert set(s) >= {"TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingJobStatus", "SecondaryStatus", "LastModifiedTime"}
    assert "NextToken" not in sm.list_training_jobs(NameContains="lst-", MaxResults=5)
    first = sm.describe_training_job(TrainingJobName="lst-0")["CreationTime"].timestamp()
    last = sm.describe_training_job(TrainingJobName="lst-4")["CreationTime"].timestamp()
    after = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains="lst-", CreationTimeAfter=math.ceil(first))["TrainingJobSummaries"]]
    assert "lst-0" not in after and "lst-4" in after
    before = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains="lst-", CreationTimeBefore=math.floor(last))["TrainingJobSummaries"]]
    assert "lst-4" not in before and "lst-0" in before
    assert sm.list_training_jobs(NameContains="lst-", StatusEquals="Completed")["TrainingJobSummaries"] == []
    assert len(sm.list_training_jobs(NameContains="lst-", StatusEquals="InProgress")["TrainingJobSummaries"]) == 5
    mod = [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains="lst-", LastModifiedTimeAfter=math.floor(last))["TrainingJobSummaries"]]
    assert "lst-4" in mod and "lst-0" not in mod
    assert sm.list_training_jobs(NameContains="lst-", WarmPoolStatusEquals="Available")["TrainingJobSummaries"] == []


def test_stop_delete_and_name_reuse(sm):
    sm.create_training_job(**job_request("stop-me"))
    sm.stop_training_job(TrainingJobName="stop-me")
    d = sm.describe_training_job(TrainingJobName="stop-me")
    # No host was running yet, so the job stops at once.
    assert d["TrainingJobStatus"] in ("Stopping", "Stopped")
    deadline = time.time() + 30
    while d["TrainingJobStatus"] == "Stopping" and time.time() < deadline:
        time.sleep(0.2)
        d = sm.describe_training_job(TrainingJobName="stop-me")
    assert d["TrainingJobStatus"] == "Stopped"
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses[0] == "Starting" and statuses[-2:] == ["Stopping", "Stopped"]
    assert all("StatusMessage" in t for t in d["SecondaryStatusTransitions"])
    assert "TrainingEndTime" in d
    code, msg, _ = error_of(sm.stop_training_job, TrainingJobName="stop-me")
    assert code == "ValidationException" and "Stopped" in msg
    sm.delete_training_job(TrainingJobName="stop-me")
    code, msg, _ = error_of(sm.describe_training_job, TrainingJobName="stop-me")
    assert (code, msg) == ("ValidationException", "Requested resource not found.")
    sm.create_training_job(**job_request("stop-me"))


def test_delete_refuses_running_jobs(sm):
    sm.create_training_job(**job_request("busy-1"))
    code, _, _ = error_of(sm.delete_training_job, TrainingJobName="busy-1")
    assert code == "ResourceInUse"
    code, _, _ = error_of(sm.delete_training_job, TrainingJobName="never-existed")
    assert code == "ResourceNotFound"


def test_update_training_job(sm, sm_raw):
    sm.create_training_job(**job_request("upd-1"))
    code, msg, _ = error_of(sm.update_training_job, TrainingJobName="upd-1", ResourceConfig={"KeepAlivePeriodInSeconds": 60})
    assert code == "ValidationException" and "warm pool" in msg
    req = job_request("upd-2")
    req["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 600
    sm.create_training_job(**req)
    out = sm.update_training_job(TrainingJobName="upd-2", ResourceConfig={"KeepAlivePeriodInSeconds": 1200})
    assert out["TrainingJobArn"].endswith("/upd-2")
    assert sm.describe_training_job(TrainingJobName="upd-2")["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 1200
    code, msg, _ = error_of(sm_raw.update_training_job, TrainingJobName="upd-2", ResourceConfig={"KeepAlivePeriodInSeconds": 21601})
    assert code == "ValidationException" and "resourceConfig.keepAlivePeriodInSeconds" in msg
    code, _, _ = error_of(sm.update_training_job, TrainingJobName="nope-9", ResourceConfig={"KeepAlivePeriodInSeconds": 1})
    assert code == "ResourceNotFound"
    code, _, _ = error_of(sm.update_training_job, TrainingJobName="upd-2")
    assert code == "ValidationException"
    sm.update_training_job(TrainingJobName="upd-2", ProfilerConfig={"ProfilingIntervalInMilliseconds": 500})
    assert sm.describe_training_job(TrainingJobName="upd-2")["ProfilingStatus"] == "Enabled"


def test_tags_round_trip_and_pagination(sm):
    arn = sm.create_training_job(**job_request("tagged", Tags=[{"Key": "a", "Value": "1"}]))["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "1"}]
    out = sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "2"}, {"Key": "b", "Value": ""}])
    assert out["Tags"] == [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": ""}]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": ""}]
    sm.delete_tags(ResourceArn=arn, TagKeys=["a", "zzz"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": ""}]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i:02}", "Value": str(i)} for i in range(49)])
    pages = list(sm.get_paginator("list_tags").paginate(ResourceArn=arn, PaginationConfig={"PageSize": 50}))
    keys = [t["Key"] for p in pages for t in p["Tags"]]
    assert keys == sorted(keys) and len(keys) == 50 and len(pages) == 1
    code, msg, _ = error_of(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "one-too-many", "Value": "x"}])
    assert code == "ValidationException" and "at most 50" in msg
    code, msg, _ = error_of(sm.list_tags, ResourceArn=arn.replace("tagged", "untagged-missing"))
    assert code == "ValidationException" and "does not exist" in msg
    code, _, _ = error_of(sm.add_tags, ResourceArn=arn.replace("tagged", "missing"), Tags=[{"Key": "a", "Value": "b"}])
    assert code == "ValidationException"
    # Names and ARNs are case-insensitive for lookups.
    assert len(sm.list_tags(ResourceArn=arn.replace("tagged", "TAGGED"))["Tags"]) == 50


def test_duplicate_names_are_resource_in_use(sm):
    sm.create_training_job(**job_request("dup-1"))
    for name in ("dup-1", "DUP-1"):
        code, msg, status = error_of(sm.create_training_job, **job_request(name))
        assert code == "ResourceInUse" and status == 400
        assert "a training job with this name already exists" in msg and "training-job/dup-1" in msg


def test_unknown_job_errors(sm):
    code, msg, status = error_of(sm.describe_training_job, TrainingJobName="does-not-exist")
    assert (code, msg, status) == ("ValidationException", "Requested resource not found.", 400)
    assert error_of(sm.stop_training_job, TrainingJobName="does-not-exist")[0] == "ResourceNotFound"


def test_waiter_fails_on_missing_job(sm):
    waiter = sm.get_waiter("training_job_completed_or_stopped")
    with pytest.raises(botocore.exceptions.WaiterError):
        waiter.wait(TrainingJobName="no-such-job", WaiterConfig={"Delay": 1, "MaxAttempts": 2})


def test_pagination_over_250_jobs(fresh_kiln):
    sm = fresh_kiln.client()
    for i in range(250):
        sm.create_training_job(**job_request(f"page-{i:03}"))
    seen, pages, token = [], 0, None
    while True:
        kw = {"MaxResults": 7}
        if token:
            kw["NextToken"] = token
        page = sm.list_training_jobs(**kw)
        pages += 1
        seen += [j["TrainingJobName"] for j in page["TrainingJobSummaries"]]
        token = page.get("NextToken")
        if not token:
            assert len(page["TrainingJobSummaries"]) > 0
            break
        assert len(page["TrainingJobSummaries"]) == 7
    assert pages == 36 and len(seen) == 250 and len(set(seen)) == 250
    assert seen == sorted(seen, reverse=True)
    via_paginator = [j["TrainingJobName"] for p in sm.get_paginator("list_training_jobs").paginate(
        SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 7}) for j in p["TrainingJobSummaries"]]
    assert via_paginator == sorted(seen)
    # Jobs created while paging do not shift the pages already issued (keyset pagination).
    page = sm.list_training_jobs(MaxResults=7)
    sm.create_training_job(**job_request("page-new"))
    nxt = sm.list_training_jobs(MaxResults=7, NextToken=page["NextToken"])
    assert [j["TrainingJobName"] for j in nxt["TrainingJobSummaries"]] == seen[7:14]
    code, msg, _ = error_of(sm.list_training_jobs, NextToken="garbage")
    assert code == "ValidationException" and "pagination token" in msg
    # The AWS CLI pages too.
    out = json.loads(fresh_kiln.aws("sagemaker", "list-training-jobs", "--page-size", "7", "--max-items", "30").stdout)
    assert len(out["TrainingJobSummaries"]) == 30 and "NextToken" in out
    out = json.loads(fresh_kiln.aws("sagemaker", "list-training-jobs", "--page-size", "7").stdout)
    assert len(out["TrainingJobSummaries"]) == 251


# --- validation ------------------------------------------------------------------------------------

PATTERN = "Member must satisfy regular expression pattern: "

VALIDATION_CASES = [
    ("bad name pattern", lambda r: r.update(TrainingJobName="a_b"),
     f"Value 'a_b' at 'trainingJobName' failed to satisfy constraint: {PATTERN}^[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,62}}"),
    ("name too long", lambda r: r.update(TrainingJobName="a" * 64),
     "at 'trainingJobName' failed to satisfy constraint: Member must have length less than or equal to 63"),
    ("name ends with dash", lambda r: r.update(TrainingJobName="abc-"), f"at 'trainingJobName' failed to satisfy constraint: {PATTERN}"),
    ("role arn", lambda r: r.update(RoleArn="arn:aws:iam::12:role/x"), "at 'roleArn' failed to satisfy constraint"),
    ("instance count", lambda r: r["ResourceConfig"].update(InstanceCount=-1),
     "Value '-1' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member must have value greater than or equal to 0"),
    ("instance type enum", lambda r: r["ResourceConfig"].update(InstanceType="ml.nope.large"),
     "Value 'ml.nope.large' at 'resourceConfig.instanceType' failed to satisfy constraint: Member must satisfy enum value set: ["),
    ("volume size", lambda r: r["ResourceConfig"].update(VolumeSizeInGB=-5), "at 'resourceConfig.volumeSizeInGB'"),
    ("keep alive range", lambda r: r["ResourceConfig"].update(KeepAlivePeriodInSeconds=21601),
     "at 'resourceConfig.keepAlivePeriodInSeconds' failed to satisfy constraint: Member must have value less than or equal to 21600"),
    ("max runtime", lambda r: r["StoppingCondition"].update(MaxRuntimeInSeconds=0),
     "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1"),
    ("max runtime 28 days", lambda r: r["StoppingCondition"].update(MaxRuntimeInSeconds=2419201), "exceeds the limit of 2419200 seconds"),
    ("max pending", lambda r: r["StoppingCondition"].update(MaxPendingTimeInSeconds=10),
     "at 'stoppingCondition.maxPendingTimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 7200"),
    ("input mode enum", lambda r: r["AlgorithmSpecification"].update(TrainingInputMode="Stream"),
     "Value 'Stream' at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must satisfy enum value set: [Pipe, File, FastFile]"),
    ("missing input mode", lambda r: r["AlgorithmSpecification"].pop("TrainingInputMode"),
     "Value null at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must not be null"),
    ("missing role", lambda r: r.pop("RoleArn"), "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"),
    ("missing output path", lambda r: r["OutputDataConfig"].pop("S3OutputPath"),
     "Value null at 'outputDataConfig.s3OutputPath' failed to satisfy constraint: Member must not be null"),
    ("missing resource config", lambda r: r.pop("ResourceConfig"),
     "Value null at 'resourceConfig' failed to satisfy constraint: Member must not be null"),
    ("missing algorithm spec", lambda r: r.pop("AlgorithmSpecification"),
     "Value null at 'algorithmSpecification' failed to satisfy constraint: Member must not be null"),
    ("output path pattern", lambda r: r["OutputDataConfig"].update(S3OutputPath="ftp://x"), "at 'outputDataConfig.s3OutputPath'"),
    ("image and algorithm name", lambda r: r["AlgorithmSpecification"].update(AlgorithmName="my-algo"),
     "specify exactly one of them"),
    ("neither image nor algorithm", lambda r: r["AlgorithmSpecification"].pop("TrainingImage"),
     "must specify either TrainingImage or AlgorithmName"),
    ("instance groups with type", lambda r: r["ResourceConfig"].update(
        InstanceGroups=[{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "g1"}]),
     "InstanceGroups cannot be specified together with InstanceType or InstanceCount"),
    ("no instances", lambda r: r["ResourceConfig"].pop("InstanceType"), "either InstanceType and InstanceCount, or InstanceGroups"),
    ("spot without max wait", lambda r: r.update(EnableManagedSpotTraining=True),
     "Invalid MaxWaitTimeInSeconds. It must be present"),
    ("spot max wait below runtime", lambda r: (r.update(EnableManagedSpotTraining=True), r["StoppingCondition"].update(MaxWaitTimeInSeconds=60)),
     "must be greater than or equal to MaxRuntimeInSeconds"),
    ("max wait without spot", lambda r: r["StoppingCondition"].update(MaxWaitTimeInSeconds=7200),
     "MaxWaitTimeInSeconds can only be specified when EnableManagedSpotTraining is true"),
    ("warm pool with spot", lambda r: (r.update(EnableManagedSpotTraining=True), r["StoppingCondition"].update(MaxWaitTimeInSeconds=7200),
                                      r["ResourceConfig"].update(KeepAlivePeriodInSeconds=60)),
     "cannot be used with managed spot training"),
    ("hyperparameter value too long", lambda r: r.update(HyperParameters={"k": "x" * 2501}),
     "at 'hyperParameters' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 2500]"),
    ("too many hyperparameters", lambda r: r.update(HyperParameters={f"k{i}": "v" for i in range(101)}),
     "at 'hyperParameters' failed to satisfy constraint: Member must have length less than or equal to 100"),
    ("environment key pattern", lambda r: r.update(Environment={"1BAD": "x"}),
     "at 'environment' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern"),
    ("channel name", lambda r: r.update(InputDataConfig=[{"ChannelName": "bad name", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}}]),
     f"Value 'bad name' at 'inputDataConfig.1.member.channelName' failed to satisfy constraint: {PATTERN}"),
    ("s3 data type enum", lambda r: r.update(InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "Folder", "S3Uri": "s3://b/p"}}}]),
     "at 'inputDataConfig.1.member.dataSource.s3DataSource.s3DataType' failed to satisfy constraint: Member must satisfy enum value set"),
    ("duplicate channels", lambda r: r.update(InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}}] * 2),
     "Channel names must be unique"),
    ("too many channels", lambda r: r.update(InputDataConfig=[{"ChannelName": f"c{i}", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}} for i in range(21)]),
     "at 'inputDataConfig' failed to satisfy constraint: Member must have length less than or equal to 20"),
    ("gzip in file mode", lambda r: r.update(InputDataConfig=[{"ChannelName": "train", "CompressionType": "Gzip", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}}]),
     "CompressionType Gzip is only supported in Pipe input mode"),
    ("fastfile manifest", lambda r: r.update(InputDataConfig=[{"ChannelName": "train", "InputMode": "FastFile", "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}}}]),
     "FastFile input mode requires S3DataType S3Prefix"),
    ("tag key pattern", lambda r: r.update(Tags=[{"Key": "bad#key", "Value": "v"}]),
     f"Value 'bad#key' at 'tags.1.member.key' failed to satisfy constraint: {PATTERN}"),
    ("too many tags", lambda r: r.update(Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]),
     "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"),
    ("metric definitions", lambda r: r["AlgorithmSpecification"].update(MetricDefinitions=[{"Name": "m", "Regex": ""}]),
     "at 'algorithmSpecification.metricDefinitions.1.member.regex' failed to satisfy constraint: Member must have length greater than or equal to 1"),
    ("retry attempts", lambda r: r.update(RetryStrategy={"MaximumRetryAttempts": 31}),
     "at 'retryStrategy.maximumRetryAttempts' failed to satisfy constraint: Member must have value less than or equal to 30"),
    ("instance groups count", lambda r: (r["ResourceConfig"].pop("InstanceType"), r["ResourceConfig"].pop("InstanceCount"),
                                        r["ResourceConfig"].update(InstanceGroups=[{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": f"g{i}"} for i in range(6)])),
     "at 'resourceConfig.instanceGroups' failed to satisfy constraint: Member must have length less than or equal to 5"),
]


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_create_validation(sm_raw, case):
    _, mutate, expected = case
    req = job_request("valid-name")
    mutate(req)
    code, msg, status = error_of(sm_raw.create_training_job, **req)
    assert code == "ValidationException" and status == 400, msg
    assert expected in msg, msg
    if "failed to satisfy constraint" in expected:
        assert re.match(r"\d+ validation errors? detected: ", msg), msg


def test_several_violations_are_counted(sm_raw):
    req = job_request("a_b")
    req["ResourceConfig"]["InstanceCount"] = -1
    code, msg, _ = error_of(sm_raw.create_training_job, **req)
    assert msg.startswith("2 validation errors detected: ") and "; " in msg


@pytest.mark.parametrize("kwargs,expected", [
    ({"MaxResults": 0}, "at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"),
    ({"MaxResults": 101}, "at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"),
    ({"SortBy": "Size"}, "at 'sortBy' failed to satisfy constraint: Member must satisfy enum value set: [Name, CreationTime, Status]"),
    ({"SortOrder": "Up"}, "at 'sortOrder' failed to satisfy constraint"),
    ({"StatusEquals": "Done"}, "at 'statusEquals' failed to satisfy constraint"),
    ({"NameContains": "a_b"}, "Value 'a_b' at 'nameContains' failed to satisfy constraint: Member must satisfy regular expression pattern"),
])
def test_list_validation(sm_raw, kwargs, expected):
    code, msg, _ = error_of(sm_raw.list_training_jobs, **kwargs)
    assert code == "ValidationException" and expected in msg, msg


def test_tag_operation_validation(sm_raw):
    code, msg, _ = error_of(sm_raw.list_tags, ResourceArn="arn:aws:sagemaker:us-east-1:123456789012:training-job/x", MaxResults=10)
    assert code == "ValidationException" and "at 'maxResults'" in msg
    code, msg, _ = error_of(sm_raw.delete_tags, ResourceArn="arn:aws:sagemaker:us-east-1:123456789012:training-job/x", TagKeys=[])
    assert code == "ValidationException" and "at 'tagKeys'" in msg
    code, msg, _ = error_of(sm_raw.add_tags, ResourceArn="not-an-arn", Tags=[])
    assert code == "ValidationException" and "at 'resourceArn'" in msg


def test_wrong_types_are_serialization_errors(kiln):
    import raw_client
    c = raw_client.RawClient(kiln)
    for body in (b'{"TrainingJobName": 5}', b'{"TrainingJobName": ["x"]}', b'[]', b'"str"', b'{"TrainingJobName": null, "x": {'):
        status, err = c.call("SageMaker.DescribeTrainingJob", body)
        assert status == 400 and err["__type"] == "SerializationException", (body, err)
    status, err = c.call("SageMaker.ListTrainingJobs", b'{"MaxResults": "10"}')
    assert (status, err["__type"]) == (400, "SerializationException")
    status, err = c.call("SageMaker.ListTrainingJobs", b'{"CreationTimeAfter": "yesterday"}')
    assert (status, err["__type"]) == (400, "SerializationException")


def test_unknown_operation_and_oversized_body(kiln):
    import raw_client
    c = raw_client.RawClient(kiln)
    status, err = c.call("SageMaker.CreateModel", b"{}")
    assert (status, err["__type"]) == (400, "UnknownOperationException")
    status, err = c.call("Nonsense.Op", b"{}")
    assert (status, err["__type"]) == (400, "UnknownOperationException")
    status, err = c.call("SageMaker.ListTrainingJobs", b'{"NameContains": "' + b"a" * (5 * 1024 * 1024) + b'"}')
    # Over the 4 MiB limit: refused before it is read (tests/security/test_body_limits.py).
    assert (status, err["__type"]) == (413, "RequestEntityTooLargeException")
    assert kiln.alive()


# --- authentication and accounts -------------------------------------------------------------------

def test_wrong_secret_unknown_key_and_unsigned_are_refused(kiln):
    key = dict(kiln.key)
    bad = kiln.client(key={"access_key_id": key["access_key_id"], "secret_access_key": "wrong" + key["secret_access_key"][5:]})
    code, msg, status = error_of(bad.list_training_jobs)
    assert (code, status) == ("InvalidSignatureException", 403) and "signature" in msg
    unknown = kiln.client(key={"access_key_id": "AKIAUNKNOWNUNKNOWN00", "secret_access_key": "x" * 40})
    code, _, status = error_of(unknown.list_training_jobs)
    assert (code, status) == ("UnrecognizedClientException", 403)
    anon = kiln.client(signature_version=UNSIGNED)
    code, _, status = error_of(anon.list_training_jobs)
    assert (code, status) == ("MissingAuthenticationTokenException", 403)
    # A signature for another service's scope is refused too.
    logs_scoped = kiln.client("logs")
    logs_scoped.meta.events.register("before-sign.*.*", lambda request, **kw: request.headers.__setitem__("X-Amz-Target", "SageMaker.ListTrainingJobs"))
    with pytest.raises(ClientError) as e:
        logs_scoped.describe_log_groups()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_expired_signature_is_refused(kiln):
    import raw_client
    c = raw_client.RawClient(kiln)
    status, err = c.call("SageMaker.ListTrainingJobs", b"{}", skew=3600)
    assert (status, err["__type"]) == (403, "InvalidSignatureException") and "Signature expired" in err["message"]


def test_two_accounts_are_isolated(kiln):
    second = kiln.add_key()
    other_account = second["account_id"]
    assert other_account != kiln.key["account_id"]
    a, b = kiln.client(), kiln.client(key=second)
    arn_a = a.create_training_job(**job_request("iso-1", Tags=[{"Key": "owner", "Value": "a"}]))["TrainingJobArn"]
    assert error_of(b.describe_training_job, TrainingJobName="iso-1")[0] == "ValidationException"
    assert all(j["TrainingJobName"] != "iso-1" for j in b.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    assert error_of(b.list_tags, ResourceArn=arn_a)[0] == "ValidationException"
    assert error_of(b.add_tags, ResourceArn=arn_a, Tags=[{"Key": "x", "Value": "y"}])[0] == "ValidationException"
    assert error_of(b.stop_training_job, TrainingJobName="iso-1")[0] == "ResourceNotFound"
    arn_b = b.create_training_job(**job_request("iso-1"))["TrainingJobArn"]
    assert arn_b == arn_a.replace(kiln.key["account_id"], other_account)
    assert a.list_tags(ResourceArn=arn_a)["Tags"] == [{"Key": "owner", "Value": "a"}]
    assert b.list_tags(ResourceArn=arn_b)["Tags"] == []


# --- the AWS CLI -----------------------------------------------------------------------------------

def test_aws_cli_operations(kiln):
    kiln.aws("sagemaker", "create-training-job", "--training-job-name", "cli-1",
             "--role-arn", "arn:aws:iam::123456789012:role/R",
             "--algorithm-specification", "TrainingImage=kiln/noop,TrainingInputMode=File",
             "--output-data-config", "S3OutputPath=s3://b/out",
             "--resource-config", "InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=5",
             "--stopping-condition", "MaxRuntimeInSeconds=600", "--tags", "Key=via,Value=cli")
    d = json.loads(kiln.aws("sagemaker", "describe-training-job", "--training-job-name", "cli-1").stdout)
    assert d["TrainingJobStatus"] == "InProgress" and d["ResourceConfig"]["VolumeSizeInGB"] == 5
    names = json.loads(kiln.aws("sagemaker", "list-training-jobs", "--name-contains", "cli-").stdout)
    assert [j["TrainingJobName"] for j in names["TrainingJobSummaries"]] == ["cli-1"]
    tags = json.loads(kiln.aws("sagemaker", "list-tags", "--resource-arn", d["TrainingJobArn"]).stdout)
    assert tags["Tags"] == [{"Key": "via", "Value": "cli"}]
    kiln.aws("sagemaker", "stop-training-job", "--training-job-name", "cli-1")
    p = kiln.aws("sagemaker", "describe-training-job", "--training-job-name", "cli-missing", check=False)
    assert p.returncode != 0 and "ValidationException" in p.stderr and "Requested resource not found." in p.stderr
    p = kiln.aws("sagemaker", "create-training-job", "--training-job-name", "cli-1",
                 "--role-arn", "arn:aws:iam::123456789012:role/R",
                 "--algorithm-specification", "TrainingImage=kiln/noop,TrainingInputMode=File",
                 "--output-data-config", "S3OutputPath=s3://b/out",
                 "--resource-config", "InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=5",
                 "--stopping-condition", "MaxRuntimeInSeconds=600", check=False)
    assert p.returncode != 0 and "ResourceInUse" in p.stderr
    env = kiln.env()
    env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    import subprocess
    p = subprocess.run(["aws", "sagemaker", "list-training-jobs"], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "InvalidSignatureException" in p.stderr


def test_kiln_cli_is_a_client_of_the_api(kiln):
    import subprocess
    from kilntest import kiln_bin
    a = kiln.client()
    a.create_training_job(**job_request("kcli-1"))
    env = kiln.env()
    out = subprocess.run([kiln_bin(), "jobs", "list", "--name-contains", "kcli"], env=env, capture_output=True, text=True, check=True).stdout
    assert "kcli-1" in out and "InProgress" in out
    out = subprocess.run([kiln_bin(), "jobs", "describe", "kcli-1"], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["TrainingJobName"] == "kcli-1"
    subprocess.run([kiln_bin(), "jobs", "stop", "kcli-1"], env=env, capture_output=True, text=True, check=True)
    assert a.describe_training_job(TrainingJobName="kcli-1")["TrainingJobStatus"] in ("Stopping", "Stopped")
    p = subprocess.run([kiln_bin(), "jobs", "describe", "kcli-missing"], env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "Requested resource not found." in p.stderr
    out = subprocess.run([kiln_bin(), "--data-dir", str(kiln.data_dir), "env"], capture_output=True, text=True, check=True).stdout
    assert f"export AWS_ACCESS_KEY_ID={kiln.key['access_key_id']}" in out and "AWS_ENDPOINT_URL=" in out
    assert "AWS_SECRET_ACCESS_KEY=" in out and "AWS_DEFAULT_REGION=" in out
    # The endpoint clients reach the server by can be named; a pipe closed early is no panic.
    out = subprocess.run([kiln_bin(), "--data-dir", str(kiln.data_dir), "env", "--endpoint", "http://kiln.lan:8080/"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "export AWS_ENDPOINT_URL=http://kiln.lan:8080"
    p = subprocess.run(f"'{kiln_bin()}' --data-dir '{kiln.data_dir}' env | head -c 10", shell=True, capture_output=True, text=True)
    assert p.stdout == "export AWS" and "panicked" not in p.stderr, p.stderr
