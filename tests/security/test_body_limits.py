"""Issue 24 item 5: request bodies are read only after the request is authenticated, and with a limit.
An unauthenticated request (SageMaker JSON or the agent API) is answered on its headers alone, without
the server waiting for (and buffering) its body; a signed body over the limit gets 413 in the JSON
protocol's envelope before it is read."""
import json
import socket
import time


def headers_only(kiln, request_line, headers, declared):
    """Sends a request's headers declaring `declared` body bytes, and a first 64 KiB of the body;
    returns (status, body) of the answer, which must come before the rest of the body is sent."""
    s = socket.create_connection(("127.0.0.1", kiln.port), timeout=10)
    try:
        head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {declared}\r\n\r\n"
        s.sendall(head.encode() + b"x" * 65536)
        t = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        print(f"answered in {time.monotonic() - t:.3f} s")
        return status, json.loads(rest or b"{}")
    finally:
        s.close()


def test_unauthenticated_json_request_is_refused_before_its_body(two_accounts):
    kiln, _, _ = two_accounts
    status, err = headers_only(kiln, "POST / HTTP/1.1", {
        "Host": f"127.0.0.1:{kiln.port}", "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "SageMaker.ListTrainingJobs",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIANOSUCHKEY0000000/20240101/us-east-1/sagemaker/aws4_request, "
                         "SignedHeaders=host;x-amz-date;x-amz-target, Signature=00"}, 3 * 1024 * 1024)
    assert status == 403 and err["__type"] == "UnrecognizedClientException", err
    # No Authorization at all.
    status, err = headers_only(kiln, "POST / HTTP/1.1", {
        "Host": f"127.0.0.1:{kiln.port}", "X-Amz-Target": "SageMaker.ListTrainingJobs"}, 3 * 1024 * 1024)
    assert status == 403 and err["__type"] == "MissingAuthenticationTokenException", err


def test_agent_call_without_a_valid_token_is_refused_before_its_body(two_accounts):
    kiln, a, _ = two_accounts
    kiln.client(key=a).create_training_job(**__import__("kilntest").job_request("body-agent"))
    account = kiln.client(key=a).describe_training_job(TrainingJobName="body-agent")["TrainingJobArn"].split(":")[4]
    for token in ("", "Bearer wrong-token"):
        headers = {"Host": f"127.0.0.1:{kiln.port}", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        status, err = headers_only(kiln, f"POST /_kiln/agent/v1/jobs/{account}/body-agent/hosts/algo-1/logs HTTP/1.1",
                                   headers, 60 * 1024 * 1024)
        assert status == 403 and err["error"] == "AccessDenied", err


def test_signed_body_over_the_limit_is_413(two_accounts):
    kiln, a, _ = two_accounts
    import raw_client
    c = raw_client.RawClient(kiln, key=a)
    body = b'{"NameContains": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    # The whole body is sent (as clients do before they read the answer); the server reads it
    # without keeping it and answers in the JSON protocol's envelope.
    status, err = c.call("SageMaker.ListTrainingJobs", body)
    assert status == 413 and err["__type"] == "RequestEntityTooLargeException", err
    assert "4194304" in err["message"]
    # Chunked, without a Content-Length: the limit holds as the body is read.
    headers = c.signed_headers("SageMaker.ListTrainingJobs", body)
    headers.pop("Content-Length", None)
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
    conn.request("POST", "/", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                 headers=headers, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["__type"] == "RequestEntityTooLargeException"
    assert kiln.alive()
