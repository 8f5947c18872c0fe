"""10,000+ malformed or random requests: every answer is a well-formed 4xx AWS error, and the
server stays up."""
import json
import random
import string

from raw_client import RawClient

OPS = ["CreateTrainingJob", "DescribeTrainingJob", "ListTrainingJobs", "StopTrainingJob", "DeleteTrainingJob",
       "UpdateTrainingJob", "AddTags", "ListTags", "DeleteTags"]
MEMBERS = ["TrainingJobName", "RoleArn", "AlgorithmSpecification", "ResourceConfig", "InstanceCount",
           "InputDataConfig", "HyperParameters", "MaxResults", "NextToken", "SortBy", "ResourceArn", "Tags",
           "TagKeys", "StoppingCondition", "OutputDataConfig", "S3OutputPath", "ChannelName", "DataSource"]


def random_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**64, 1e308, -0.5, 3.14])
    if kind == 3:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 40)))
    if kind == 4:
        return rng.choice(["", "a" * 3000, "\u0000", "\ud7ff\u00e9\u4e2d", "s3://", "arn:aws:sagemaker:us-east-1:123456789012:training-job/x"])
    if kind == 5:
        return rng.choice(["File", "Pipe", "ml.m5.large", "Ascending", "Name"])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(MEMBERS): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def random_body(rng):
    k = rng.randrange(6)
    if k == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if k == 1:
        good = json.dumps({rng.choice(MEMBERS): random_value(rng) for _ in range(3)}).encode()
        cut = rng.randrange(len(good) + 1)
        return good[:cut]
    if k == 2:
        return json.dumps(random_value(rng)).encode()
    return json.dumps({rng.choice(MEMBERS): random_value(rng) for _ in range(rng.randrange(1, 8))}).encode()


def check(status, data):
    assert 400 <= status < 500, (status, data[:300])
    err = json.loads(data)
    assert isinstance(err.get("__type"), str) and err["__type"], err
    assert isinstance(err.get("message"), str), err


def test_random_bodies_and_headers(kiln):
    rng = random.Random(20261122)
    c = RawClient(kiln)
    n = 0
    # Signed requests with random bodies reach parsing and validation.
    for _ in range(7000):
        op = rng.choice(OPS)
        body = random_body(rng)
        status, data, _ = c.send(c.signed_headers(f"SageMaker.{op}", body), body)
        if status == 200:
            continue  # a random body can be a valid request (e.g. ListTrainingJobs {})
        check(status, data)
        n += 1
    # Broken authentication and protocol headers.
    for i in range(3500):
        body = random_body(rng)
        headers = c.signed_headers(f"SageMaker.{rng.choice(OPS)}", body)
        k = i % 7
        if k == 0:
            headers.pop("Authorization")
        elif k == 1:
            headers["Authorization"] = "".join(rng.choice(string.printable[:94]) for _ in range(rng.randrange(0, 120)))
        elif k == 2:
            headers["Authorization"] = headers["Authorization"].replace("Signature=", "Signature=0")
        elif k == 3:
            headers["X-Amz-Date"] = rng.choice(["", "garbage", "20991301T000000Z", "19700101T000000Z"])
        elif k == 4:
            headers["X-Amz-Target"] = rng.choice(["", ".", "SageMaker.", "SageMaker", "S3.PutObject", "SageMaker.\u00e9".encode("utf-8").decode("latin-1")])
        elif k == 5:
            headers["Authorization"] = headers["Authorization"].replace("aws4_request", "")
        else:
            body = body + b"x"  # the signature no longer covers the body
        status, data, _ = c.send(headers, body)
        check(status, data)
        n += 1
    assert n >= 10000
    assert kiln.alive()
    status, data = c.call("SageMaker.ListTrainingJobs", b"{}")
    assert status == 200
