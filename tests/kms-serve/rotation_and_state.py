"""Automatic rotation and `--state` of `envseal kms serve` (issue 17), through boto3 and the
Alibaba Cloud SDK.

Driven by tests/kms-serve/main.rs, passing KMS_ENDPOINT, KMS_AK, KMS_SK, KMS_IDS (a file for
what the second run checks) and KMS_PHASE: `rotation` (a server on the in-memory backend with
`--rotation-day 20ms`: a 90-day AWS period is then 1.8 s, a 7-day Alibaba one 140 ms), then
`first` and, after a restart, `second` (a server with `--state DIR`).
"""

import json
import os
import time

import boto3
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from botocore.config import Config

EP = os.environ["KMS_ENDPOINT"]
aws = boto3.client("kms", endpoint_url="http://" + EP, region_name="us-east-1",
                   aws_access_key_id=os.environ["KMS_AK"], aws_secret_access_key=os.environ["KMS_SK"],
                   config=Config(retries={"max_attempts": 1}))
ali = Client(open_api_models.Config(access_key_id=os.environ["KMS_AK"], access_key_secret=os.environ["KMS_SK"],
                                    endpoint=EP, protocol="http", region_id="cn-hangzhou"))
IDS = os.environ["KMS_IDS"]


def rotation():
    key = aws.create_key(Description="rotates")["KeyMetadata"]["KeyId"]
    old = aws.generate_data_key(KeyId=key, KeySpec="AES_256")
    assert old["KeyMaterialId"] == "1"
    aws.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = aws.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90, status
    time.sleep(2.6)
    rotations = aws.list_key_rotations(KeyId=key)["Rotations"]
    assert len(rotations) >= 2, rotations
    assert any(r["RotationType"] == "AUTOMATIC" for r in rotations), rotations
    new = aws.generate_data_key(KeyId=key, KeySpec="AES_256")
    assert new["KeyMaterialId"] != "1", new["KeyMaterialId"]
    assert aws.decrypt(CiphertextBlob=old["CiphertextBlob"])["Plaintext"] == old["Plaintext"]
    aws.disable_key_rotation(KeyId=key)
    n = len(aws.list_key_rotations(KeyId=key)["Rotations"])
    time.sleep(2.0)
    assert len(aws.list_key_rotations(KeyId=key)["Rotations"]) == n, "no rotation once disabled"
    print("ok AWS EnableKeyRotation rotates on schedule, DisableKeyRotation stops it")

    k2 = ali.create_key(models.CreateKeyRequest(enable_automatic_rotation=True, rotation_interval="7d")).body.key_metadata
    time.sleep(1.0)
    versions = ali.list_key_versions(models.ListKeyVersionsRequest(key_id=k2.key_id, page_size=100)).body
    assert versions.total_count >= 2, versions.total_count
    ali.update_rotation_policy(models.UpdateRotationPolicyRequest(key_id=k2.key_id, enable_automatic_rotation=False))
    meta = ali.describe_key(models.DescribeKeyRequest(key_id=k2.key_id)).body.key_metadata
    assert meta.automatic_rotation == "Disabled", meta
    print("ok Alibaba rotation policy rotates on schedule")


def first():
    # What must survive a restart.
    key = aws.create_key(Description="kept")["KeyMetadata"]["KeyId"]
    aws.create_alias(AliasName="alias/kept", TargetKeyId=key)
    doc = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Kept", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}]})
    aws.put_key_policy(KeyId=key, PolicyName="default", Policy=doc)
    grant = aws.create_grant(KeyId=key, GranteePrincipal="arn:aws:iam::111122223333:role/app", Operations=["Decrypt"])
    blob = aws.generate_data_key(KeyId="alias/kept", KeySpec="AES_256", EncryptionContext={"a": "b"})
    with open(IDS, "w") as f:
        json.dump({"key": key, "grant": grant["GrantId"], "token": grant["GrantToken"],
                   "blob": blob["CiphertextBlob"].hex(), "plaintext": blob["Plaintext"].hex()}, f)
    print("first run done")


def second():
    with open(IDS) as f:
        ids = json.load(f)
    key = ids["key"]
    assert aws.describe_key(KeyId="alias/kept")["KeyMetadata"]["KeyId"] == key
    assert json.loads(aws.get_key_policy(KeyId=key)["Policy"])["Statement"][0]["Sid"] == "Kept"
    assert [g["GrantId"] for g in aws.list_grants(KeyId=key)["Grants"]] == [ids["grant"]]
    out = aws.decrypt(CiphertextBlob=bytes.fromhex(ids["blob"]), EncryptionContext={"a": "b"}, GrantTokens=[ids["token"]])
    assert out["Plaintext"].hex() == ids["plaintext"]
    print("ok kept keys, aliases, key policies, grants and the dev key across a restart")


if __name__ == "__main__":
    {"rotation": rotation, "first": first, "second": second}[os.environ["KMS_PHASE"]]()
