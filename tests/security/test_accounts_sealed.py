"""Regressions of what held up in issue 24's review: account B cannot see or touch account A's
training jobs, tags, logs or buckets, through any endpoint."""
import pytest
from botocore.exceptions import ClientError

from kilntest import job_request


def code_of(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"]


def test_account_b_cannot_reach_account_a(two_accounts):
    kiln, a, b = two_accounts
    sm_a, sm_b = kiln.client(key=a), kiln.client(key=b)
    arn = sm_a.create_training_job(**job_request("sealed-a", Tags=[{"Key": "k", "Value": "v"}]))["TrainingJobArn"]
    assert code_of(sm_b.describe_training_job, TrainingJobName="sealed-a") == "ValidationException"
    assert code_of(sm_b.stop_training_job, TrainingJobName="sealed-a") in ("ResourceNotFound", "ValidationException")
    assert code_of(sm_b.list_tags, ResourceArn=arn) == "ValidationException"
    assert code_of(sm_b.add_tags, ResourceArn=arn, Tags=[{"Key": "x", "Value": "y"}]) == "ValidationException"
    assert all(j["TrainingJobName"] != "sealed-a" for j in sm_b.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    assert sm_a.describe_training_job(TrainingJobName="sealed-a")["TrainingJobStatus"] == "InProgress"
    assert sm_a.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    # Logs: A's group is not B's.
    logs_a, logs_b = kiln.client("logs", key=a), kiln.client("logs", key=b)
    logs_a.create_log_group(logGroupName="/sealed/a")
    assert "/sealed/a" not in [g["logGroupName"] for g in logs_b.describe_log_groups()["logGroups"]]
    # S3: A's bucket is invisible and closed to B.
    s3_a, s3_b = kiln.client("s3", key=a), kiln.client("s3", key=b)
    s3_a.create_bucket(Bucket="sealed-a-bucket")
    s3_a.put_object(Bucket="sealed-a-bucket", Key="secret", Body=b"a's")
    assert "sealed-a-bucket" not in [x["Name"] for x in s3_b.list_buckets()["Buckets"]]
    for call, kw in ((s3_b.get_object, {"Key": "secret"}), (s3_b.list_objects_v2, {}),
                     (s3_b.put_object, {"Key": "planted", "Body": b"b's"}),
                     (s3_b.delete_object, {"Key": "secret"})):
        assert code_of(call, Bucket="sealed-a-bucket", **kw) == "AccessDenied"
    assert s3_a.get_object(Bucket="sealed-a-bucket", Key="secret")["Body"].read() == b"a's"
