"""Policies and STS of `envseal kms serve` through the official Alibaba Cloud SDKs
(alibabacloud-kms20160120 and alibabacloud-sts20150401), V3 and V2 signatures.

Driven by tests/kms-serve/main.rs with the same IAM file and environment as
governance_boto3.py, plus WEB_KEY and PAY_KEY: the ids of the two team keys created there.
Prints one `ok` line per check; any failure raises (non-zero exit).
"""

import os

from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_sts20150401 import models as sts_models
from alibabacloud_sts20150401.client import Client as StsClient
from alibabacloud_tea_openapi import models as open_api_models

ENDPOINT = os.environ["KMS_ENDPOINT"]
ACCOUNT = os.environ["ACCOUNT"]
WEB = os.environ["WEB_KEY"]
PAY = os.environ["PAY_KEY"]


def config(name=None, ak=None, sk=None, token=None, algorithm=None, region="cn-hangzhou"):
    cfg = open_api_models.Config(
        access_key_id=ak or os.environ[f"{name}_AK"],
        access_key_secret=sk or os.environ[f"{name}_SK"],
        endpoint=ENDPOINT,
        protocol="http",
        region_id=region,
    )
    if token:
        cfg.security_token = token
    if algorithm:
        cfg.signature_algorithm = algorithm
    return cfg


def expect_error(call, code, what):
    try:
        call()
    except Exception as e:
        got = getattr(e, "code", None)
        if got != code:
            raise AssertionError(f"{what}: expected error code {code}, got {got!r}: {e}") from e
        print(f"ok {what}: rejected with {code}")
        return e
    raise AssertionError(f"{what}: expected error code {code}, but the call succeeded")


def gdk(client, key, ctx=None):
    return client.generate_data_key(kms_models.GenerateDataKeyRequest(key_id=key, encryption_context=ctx)).body


def run(algorithm):
    label = algorithm or "v3"
    dev = KmsClient(config("DANA", algorithm=algorithm))
    g = gdk(dev, WEB, {"app": "web"})
    dev.decrypt(kms_models.DecryptRequest(ciphertext_blob=g.ciphertext_blob, encryption_context={"app": "web"}))
    expect_error(
        lambda: dev.schedule_key_deletion(kms_models.ScheduleKeyDeletionRequest(key_id=PAY, pending_window_in_days=7)),
        "Forbidden.RAM",
        f"{label}: developer ScheduleKeyDeletion",
    )
    ro = KmsClient(config("AUDITOR", algorithm=algorithm))
    ro.describe_key(kms_models.DescribeKeyRequest(key_id=WEB))
    expect_error(lambda: gdk(ro, WEB), "Forbidden.RAM", f"{label}: read-only GenerateDataKey")
    fe = KmsClient(config("FRANK", algorithm=algorithm))
    gdk(fe, WEB)
    expect_error(lambda: gdk(fe, PAY), "Forbidden.RAM", f"{label}: ABAC other team's key")

    # STS AssumeRole in Alibaba's shape, then KMS with the temporary credentials.
    sts = StsClient(config("DANA", algorithm=algorithm))
    role = f"acs:ram::{ACCOUNT}:role/ci"
    r = sts.assume_role(sts_models.AssumeRoleRequest(role_arn=role, role_session_name=f"build-{label}", duration_seconds=900)).body
    c = r.credentials
    assert c.access_key_id.startswith("STS.") and c.security_token and c.expiration, c
    assert r.assumed_role_user.arn.endswith(f"role/ci/build-{label}"), r.assumed_role_user.arn
    ci = KmsClient(config(ak=c.access_key_id, sk=c.access_key_secret, token=c.security_token, algorithm=algorithm))
    gdk(ci, WEB, {"stage": "ci"})
    expect_error(lambda: gdk(ci, WEB, {"stage": "prod"}), "Forbidden.RAM", f"{label}: CI role outside its context")
    print(f"ok {label}: AssumeRole and KMS with the session")
    expect_error(
        lambda: StsClient(config("AUDITOR", algorithm=algorithm)).assume_role(
            sts_models.AssumeRoleRequest(role_arn=role, role_session_name="probe")
        ),
        "NoPermission",
        f"{label}: untrusted AssumeRole",
    )
    expect_error(
        lambda: sts.assume_role(sts_models.AssumeRoleRequest(role_arn=role, role_session_name="probe", duration_seconds=60)),
        "InvalidParameter.DurationSeconds",
        f"{label}: DurationSeconds 60",
    )
    expect_error(
        lambda: sts.assume_role(sts_models.AssumeRoleRequest(role_arn=f"acs:ram::{ACCOUNT}:role/nope", role_session_name="probe")),
        "EntityNotExist.Role",
        f"{label}: unknown role",
    )


def main():
    run(None)
    run("v2")
    print("all Alibaba governance checks passed")


if __name__ == "__main__":
    main()
