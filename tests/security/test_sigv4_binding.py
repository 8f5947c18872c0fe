"""Issue 24 item 7: a SigV4 signature binds the body and the operation. A captured request must not
carry another body (the claimed `x-amz-content-sha256` is compared with the body received), and a
request whose `X-Amz-Target` (or any `x-amz-*` header) was not signed is refused."""
import http.client
import json

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kilntest import job_request


def send(kiln, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def signed(kiln, key, body, headers):
    req = AWSRequest(method="POST", url=kiln.endpoint + "/", data=body, headers=headers)
    SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "sagemaker", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_captured_request_cannot_carry_another_body(two_accounts):
    kiln, a, _ = two_accounts
    sm = kiln.client(key=a)
    sm.create_training_job(**job_request("bound-keep"))
    sm.create_training_job(**job_request("bound-other"))
    body = json.dumps({"TrainingJobName": "bound-other"}).encode()
    # A client that sends the payload hash as a header (S3 clients always do; any client may).
    headers = signed(kiln, a, body, {"Content-Type": "application/x-amz-json-1.1",
                                     "X-Amz-Target": "SageMaker.DescribeTrainingJob",
                                     "X-Amz-Content-SHA256": __import__("hashlib").sha256(body).hexdigest()})
    status, out = send(kiln, headers, body)
    assert status == 200 and out["TrainingJobName"] == "bound-other"
    # The same captured headers with another body: before the fix the claimed hash was trusted.
    forged = json.dumps({"TrainingJobName": "bound-keep"}).encode()
    status, out = send(kiln, headers, forged)
    assert status == 403 and out["__type"] == "InvalidSignatureException", out
    assert "x-amz-content-sha256" in out["message"]


def test_request_signed_for_one_operation_is_refused_for_another(two_accounts):
    kiln, a, _ = two_accounts
    sm = kiln.client(key=a)
    sm.create_training_job(**job_request("bound-victim"))
    body = json.dumps({"TrainingJobName": "bound-victim"}).encode()
    # Signed without X-Amz-Target (as a request whose operation is set after signing), then
    # sent as a StopTrainingJob.
    headers = signed(kiln, a, body, {"Content-Type": "application/x-amz-json-1.1"})
    headers["X-Amz-Target"] = "SageMaker.StopTrainingJob"
    status, out = send(kiln, headers, body)
    assert status in (400, 403), out
    assert out["__type"] in ("IncompleteSignatureException", "InvalidSignatureException")
    assert sm.describe_training_job(TrainingJobName="bound-victim")["TrainingJobStatus"] == "InProgress"
    # Any other x-amz-* header sent unsigned is refused as well.
    headers = signed(kiln, a, body, {"Content-Type": "application/x-amz-json-1.1",
                                     "X-Amz-Target": "SageMaker.DescribeTrainingJob"})
    headers["X-Amz-Meta-Note"] = "unsigned"
    status, out = send(kiln, headers, body)
    assert status == 400 and out["__type"] == "IncompleteSignatureException", out
