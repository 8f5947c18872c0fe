"""Issue 24 item 3: counts from a request are bounded before anything is sized by them.
`InstanceCount=1e11` and instance groups whose counts overflow an i64 get a ValidationException that
names the limit, and the server stays up."""
import json

import raw_client
from kilntest import job_request


def group(name, n):
    return {"InstanceType": "ml.m5.large", "InstanceCount": n, "InstanceGroupName": name}


def test_huge_instance_count_is_a_validation_error(two_accounts):
    kiln, a, _ = two_accounts
    c = raw_client.RawClient(kiln, key=a)
    body = job_request("count-huge", ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 100_000_000_000,
                                                     "VolumeSizeInGB": 10})
    status, err = c.call("SageMaker.CreateTrainingJob", json.dumps(body).encode())
    assert (status, err["__type"]) == (400, "ValidationException"), err
    assert "100000000000" in err["message"] and "1000" in err["message"]
    assert kiln.alive()


def test_instance_group_counts_that_overflow_are_a_validation_error(two_accounts):
    kiln, a, _ = two_accounts
    c = raw_client.RawClient(kiln, key=a)
    top = 2**63 - 1
    for i, groups in enumerate([[group("a", top), group("b", top), group("c", 3)],
                                [group("a", top), group("b", 1)],
                                [group("a", 600), group("b", 600)]]):
        body = job_request(f"count-groups-{i}", ResourceConfig={"InstanceGroups": groups, "VolumeSizeInGB": 10})
        status, err = c.call("SageMaker.CreateTrainingJob", json.dumps(body).encode())
        assert (status, err["__type"]) == (400, "ValidationException"), err
        assert "limit of 1000" in err["message"] or "between 0 and 1000" in err["message"], err
    assert kiln.alive()
    # Within the limit, groups are accepted.
    body = job_request("count-groups-ok", ResourceConfig={"InstanceGroups": [group("a", 1), group("b", 1)],
                                                         "VolumeSizeInGB": 10})
    status, out = c.call("SageMaker.CreateTrainingJob", json.dumps(body).encode())
    assert status == 200, out
