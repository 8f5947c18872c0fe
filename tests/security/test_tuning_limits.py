"""Issue 24 (bounded counts), for tuning jobs: `MaxNumberOfTrainingJobs` and
`MaxParallelTrainingJobs` of 2^63-1 were accepted (the model only sets a minimum). They are bounded
before use: `ResourceLimitExceeded` naming the limit."""
import pytest
from botocore.exceptions import ClientError

from kilntest import Kiln
from test_tuning_api import tuning_request

BIG = 2**63 - 1


@pytest.fixture(scope="module")
def sm():
    k = Kiln(config='[jobs]\nexecutor = "none"\n').start()
    yield k.client()
    k.stop()


@pytest.mark.parametrize("field, value, words", [
    ("MaxNumberOfTrainingJobs", BIG, "at most 10000 training jobs"),
    ("MaxParallelTrainingJobs", BIG, "at most 1000 training jobs at once"),
])
def test_huge_tuning_limits_are_refused(sm, field, value, words):
    req = tuning_request(f"huge-{field.lower()[:20]}")
    req["HyperParameterTuningJobConfig"]["ResourceLimits"][field] = value
    with pytest.raises(ClientError) as e:
        sm.create_hyper_parameter_tuning_job(**req)
    err = e.value.response["Error"]
    assert err["Code"] == "ResourceLimitExceeded", err
    assert words in err["Message"], err


def test_ordinary_limits_are_accepted(sm):
    sm.create_hyper_parameter_tuning_job(**tuning_request("ordinary-limits"))
    d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="ordinary-limits")
    assert d["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxParallelTrainingJobs"] == 2
