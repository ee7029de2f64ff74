"""`envseal kms serve --tls --throttle ...` (issue 17 §4) through boto3 and the Alibaba Cloud
SDK over HTTPS, trusting only the CA bundle the server printed; its throttling errors as each
SDK sees them (and boto3's retries getting through); /healthz and /metrics.

Driven by tests/kms-serve/main.rs with KMS_ENDPOINT (host:port), KMS_AK, KMS_SK, KMS_CA (the
CA bundle) and the limits it started the server with: 5 GenerateDataKey/s, 40 requests/s.
"""

import json
import os
import ssl
import time
import urllib.request

import boto3
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_util import models as util_models
from botocore.config import Config

EP, CA = os.environ["KMS_ENDPOINT"], os.environ["KMS_CA"]


def aws(retries):
    return boto3.client("kms", endpoint_url="https://" + EP, region_name="us-east-1", verify=CA,
                        aws_access_key_id=os.environ["KMS_AK"], aws_secret_access_key=os.environ["KMS_SK"],
                        config=Config(retries={"total_max_attempts": retries, "mode": "standard"}))


def main():
    # HTTPS, with nothing but the printed CA trusted; plain HTTP on the TLS port fails.
    plain = boto3.client("kms", endpoint_url="http://" + EP, region_name="us-east-1",
                         aws_access_key_id="x", aws_secret_access_key="y", config=Config(retries={"max_attempts": 1}))
    try:
        plain.list_keys()
        raise AssertionError("plain HTTP answered on the TLS port")
    except Exception as e:
        assert "ListKeys" in str(e) or "Connection" in type(e).__name__ or "closed" in str(e).lower(), repr(e)
    c = aws(1)
    key = c.create_key()["KeyMetadata"]["KeyId"]
    print("ok boto3 over HTTPS with the printed CA bundle")

    ali = Client(open_api_models.Config(access_key_id=os.environ["KMS_AK"], access_key_secret=os.environ["KMS_SK"],
                                        endpoint=EP, protocol="https", region_id="cn-hangzhou"))
    runtime = util_models.RuntimeOptions(ca=CA)
    ali.describe_key_with_options(models.DescribeKeyRequest(key_id=key), runtime)
    print("ok Alibaba Cloud SDK over HTTPS")

    # 5 GenerateDataKey per second: a burst of 12 without retries sees ThrottlingException.
    codes = []
    for _ in range(12):
        try:
            c.generate_data_key(KeyId=key, KeySpec="AES_256")
            codes.append("ok")
        except Exception as e:
            codes.append(e.response["Error"]["Code"])
    assert codes.count("ok") <= 6 and "ThrottlingException" in codes, codes
    print(f"ok AWS burst: {codes.count('ok')} admitted, the rest ThrottlingException")
    time.sleep(1.2)
    refused = 0
    for _ in range(12):
        try:
            ali.generate_data_key_with_options(models.GenerateDataKeyRequest(key_id=key), runtime)
        except Exception as e:
            assert getattr(e, "code", None) == "Rejected.Throttling", repr(e)
            assert e.data.get("statusCode", 429) == 429 if isinstance(getattr(e, "data", None), dict) else True
            refused += 1
    assert refused >= 6, refused
    print("ok Alibaba burst: Rejected.Throttling")
    # With its standard retry mode, boto3 gets all 10 through, at about the limit.
    time.sleep(1.2)
    r = aws(10)
    start = time.time()
    for _ in range(10):
        r.generate_data_key(KeyId=key, KeySpec="AES_256")
    print(f"ok boto3 retries get 10 GenerateDataKey through in {time.time() - start:.1f} s at 5/s")

    ctx = ssl.create_default_context(cafile=CA)
    health = json.load(urllib.request.urlopen(f"https://{EP}/healthz", context=ctx))
    assert health["status"] == "ok", health
    metrics = urllib.request.urlopen(f"https://{EP}/metrics", context=ctx).read().decode()
    assert 'envseal_kms_requests_total{api="aws",action="GenerateDataKey",outcome="ThrottlingException"}' in metrics, metrics
    assert 'envseal_kms_requests_total{api="alibaba",action="GenerateDataKey",outcome="Rejected.Throttling"}' in metrics
    assert 'envseal_kms_request_duration_seconds_count{api="aws"}' in metrics
    print("all TLS, throttling and metrics checks passed")


if __name__ == "__main__":
    main()
