"""Issue 24 item 8: S3 SigV2 header signatures carry a Date that must be within 15 minutes of the
server's clock (a 30-day-old or 1970 request was accepted), and presigned URLs live at most 7 days
(X-Amz-Expires ≤ 604800, AuthorizationQueryParametersError otherwise, as AWS)."""
import email.utils
import time
import urllib.error
import urllib.request

from botocore.auth import HmacV1Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def http_request(method, url, headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sigv2_get(kiln, key, url, when):
    """A SigV2 header-signed GET as botocore signs it, dated `when` (epoch seconds)."""
    class Dated(HmacV1Auth):
        def _get_date(self):
            return email.utils.formatdate(when, usegmt=True)
    req = AWSRequest(method="GET", url=url)
    Dated(Credentials(key["access_key_id"], key["secret_access_key"])).add_auth(req)
    return http_request("GET", url, dict(req.headers.items()))


def test_sigv2_requests_outside_fifteen_minutes_are_refused(two_accounts):
    kiln, a, _ = two_accounts
    s3 = kiln.client("s3", key=a)
    s3.create_bucket(Bucket="sigv2-dates")
    s3.put_object(Bucket="sigv2-dates", Key="k", Body=b"v2 body")
    url = f"{kiln.endpoint}/sigv2-dates/k"
    status, body = sigv2_get(kiln, a, url, time.time())
    assert (status, body) == (200, b"v2 body")
    for when in (time.time() - 30 * 86400, 0, time.time() + 3600):
        status, body = sigv2_get(kiln, a, url, when)
        assert status == 403 and b"<Code>RequestTimeTooSkewed</Code>" in body, (when, body)
    # boto3's own SigV2 client (signature_version="s3") keeps working.
    assert kiln.client("s3", key=a, signature_version="s3").get_object(Bucket="sigv2-dates", Key="k")["Body"].read() == b"v2 body"


def test_presigned_urls_live_at_most_seven_days(two_accounts):
    kiln, a, _ = two_accounts
    s3 = kiln.client("s3", key=a)
    s3.create_bucket(Bucket="presign-life")
    s3.put_object(Bucket="presign-life", Key="k", Body=b"presigned")
    for version in ("s3v4", "s3"):
        client = kiln.client("s3", key=a, signature_version=version)
        week = client.generate_presigned_url("get_object", Params={"Bucket": "presign-life", "Key": "k"},
                                             ExpiresIn=604800 if version == "s3v4" else 604000)
        assert http_request("GET", week) == (200, b"presigned")
        long = client.generate_presigned_url("get_object", Params={"Bucket": "presign-life", "Key": "k"},
                                             ExpiresIn=136 * 365 * 86400 if version == "s3" else 604801)
        status, body = http_request("GET", long)
        assert status == 400 and b"<Code>AuthorizationQueryParametersError</Code>" in body, (version, body)
