"""Hand-built SigV4 requests: for bodies and headers no SDK would send."""
import datetime
import http.client
import json

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class RawClient:
    def __init__(self, kiln, key=None):
        key = key or kiln.key
        self.kiln = kiln
        self.creds = Credentials(key["access_key_id"], key["secret_access_key"])
        self.conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)

    def signed_headers(self, target, body, service="sagemaker", skew=0):
        req = AWSRequest(method="POST", url=self.kiln.endpoint + "/", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
        auth = SigV4Auth(self.creds, service, "us-east-1")
        if skew:
            # botocore reads the clock through datetime; sign as if it were `skew` seconds later.
            real = datetime.datetime
            class Shifted(real):
                @classmethod
                def utcnow(cls):
                    return real.utcnow() + datetime.timedelta(seconds=skew)
                @classmethod
                def now(cls, tz=None):
                    return real.now(tz) + datetime.timedelta(seconds=skew)
            import botocore.auth as ba
            old = ba.datetime.datetime
            ba.datetime.datetime = Shifted
            try:
                auth.add_auth(req)
            finally:
                ba.datetime.datetime = old
        else:
            auth.add_auth(req)
        return dict(req.headers.items())

    def send(self, headers, body):
        try:
            self.conn.request("POST", "/", body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.kiln.port, timeout=30)
            raise
        return r.status, data, dict(r.getheaders())

    def call(self, target, body, skew=0):
        status, data, _ = self.send(self.signed_headers(target, body, skew=skew), body)
        return status, json.loads(data)
