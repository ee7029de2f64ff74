"""Policies, STS and the audit trail of `envseal kms serve`, through boto3 (AWS KMS + AWS STS).

Driven by tests/kms-serve/main.rs (`governance_*` tests), which starts the server with the IAM
file testdata/iam/multi-team.toml (users, groups, roles and policies of a small company) and
passes each user's access key as <NAME>_AK / <NAME>_SK, plus:
  KMS_ENDPOINT   host:port of the server
  ACCOUNT        the account id of the IAM file

Prints one `ok` line per check; any failure raises (non-zero exit).
"""

import json
import os

import boto3
from botocore.config import Config

ENDPOINT = "http://" + os.environ["KMS_ENDPOINT"]
ACCOUNT = os.environ["ACCOUNT"]


def client(service, name=None, region="us-east-1", ak=None, sk=None, token=None, validate=True):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=ak or os.environ[f"{name}_AK"],
        aws_secret_access_key=sk or os.environ[f"{name}_SK"],
        aws_session_token=token,
        # validate=False sends what boto3 itself would refuse (the server's own checks).
        config=Config(retries={"max_attempts": 1}, parameter_validation=validate),
    )


def expect_error(call, code, what):
    try:
        call()
    except Exception as e:  # botocore.exceptions.ClientError
        got = getattr(e, "response", {}).get("Error", {}).get("Code")
        if got != code:
            raise AssertionError(f"{what}: expected {code}, got {got!r}: {e}") from e
        print(f"ok {what}: refused with {code}")
        return e
    raise AssertionError(f"{what}: expected {code}, but the call succeeded")


def main():
    admin = client("kms", "ADMIN")
    # Keys of two teams, tagged for attribute-based access.
    web = admin.create_key(Description="frontend", Tags=[{"TagKey": "team", "TagValue": "frontend"}])["KeyMetadata"]
    pay = admin.create_key(Description="payments", Tags=[{"TagKey": "team", "TagValue": "payments"}])["KeyMetadata"]
    admin.create_alias(AliasName="alias/web", TargetKeyId=web["KeyId"])
    print("ok admin creates tagged keys")

    # Region-scoped admin: everything in us-east-1, nothing elsewhere.
    expect_error(
        lambda: client("kms", "ADMIN", region="eu-west-1").describe_key(KeyId=web["KeyId"]),
        "AccessDeniedException",
        "region-scoped admin outside its region",
    )

    # Read-only auditor: Describe/List yes, cryptography and changes no.
    ro = client("kms", "AUDITOR")
    assert ro.describe_key(KeyId=web["KeyId"])["KeyMetadata"]["KeyId"] == web["KeyId"]
    assert len(ro.list_keys()["Keys"]) >= 2
    expect_error(lambda: ro.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256"), "AccessDeniedException", "read-only GenerateDataKey")
    expect_error(lambda: ro.disable_key(KeyId=web["KeyId"]), "AccessDeniedException", "read-only DisableKey")
    print("ok read-only")

    # Developers: broad Allow on KMS plus a targeted Deny of destructive operations.
    dev = client("kms", "DANA")
    g = dev.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256", EncryptionContext={"app": "web"})
    d = dev.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext={"app": "web"})
    assert d["Plaintext"] == g["Plaintext"]
    expect_error(lambda: dev.schedule_key_deletion(KeyId=pay["KeyId"], PendingWindowInDays=7), "AccessDeniedException", "developer ScheduleKeyDeletion")
    expect_error(lambda: dev.disable_key(KeyId=pay["KeyId"]), "AccessDeniedException", "developer DisableKey")
    expect_error(lambda: dev.delete_alias(AliasName="alias/web"), "AccessDeniedException", "developer DeleteAlias")
    print("ok broad allow, targeted deny")

    # Attribute-based access: a principal's team tag must match the key's.
    fe = client("kms", "FRANK")
    fe.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256")
    expect_error(lambda: fe.generate_data_key(KeyId=pay["KeyId"], KeySpec="AES_256"), "AccessDeniedException", "ABAC: other team's key")
    print("ok ABAC")

    # MFA required for everything but setting it up: Olga has no MFA, Oscar has.
    expect_error(lambda: client("kms", "OLGA").generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256"), "AccessDeniedException", "no MFA")
    client("kms", "OSCAR").generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256")
    print("ok MFA required")

    # STS: the CI role, trusted for Dana, usable only with encryption context stage=ci.
    sts = client("sts", "DANA")
    role = f"arn:aws:iam::{ACCOUNT}:role/ci"
    c = sts.assume_role(RoleArn=role, RoleSessionName="build-42", DurationSeconds=900)["Credentials"]
    assert c["AccessKeyId"].startswith("STS.") and c["SessionToken"] and c["SecretAccessKey"]
    ci = client("kms", ak=c["AccessKeyId"], sk=c["SecretAccessKey"], token=c["SessionToken"])
    g = ci.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256", EncryptionContext={"stage": "ci"})
    assert ci.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext={"stage": "ci"})["Plaintext"] == g["Plaintext"]
    expect_error(
        lambda: ci.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256", EncryptionContext={"stage": "prod"}),
        "AccessDeniedException",
        "CI role outside its encryption context",
    )
    print("ok AssumeRole and the role's policy")
    bad = client("kms", ak=c["AccessKeyId"], sk=c["SecretAccessKey"], token=c["SessionToken"][:-2] + "xx")
    expect_error(lambda: bad.list_keys(), "UnrecognizedClientException", "a tampered session token")

    # A session policy narrows the role: GenerateDataKey only.
    narrow = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}]})
    c = sts.assume_role(RoleArn=role, RoleSessionName="narrow", Policy=narrow)["Credentials"]
    n = client("kms", ak=c["AccessKeyId"], sk=c["SecretAccessKey"], token=c["SessionToken"])
    g = n.generate_data_key(KeyId=web["KeyId"], KeySpec="AES_256", EncryptionContext={"stage": "ci"})
    expect_error(lambda: n.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext={"stage": "ci"}), "AccessDeniedException", "session policy narrows the role")

    # Who may assume, and for how long.
    expect_error(lambda: client("sts", "AUDITOR").assume_role(RoleArn=role, RoleSessionName="probe"), "AccessDenied", "untrusted principal AssumeRole")
    raw = client("sts", "DANA", validate=False)
    expect_error(lambda: raw.assume_role(RoleArn=role, RoleSessionName="probe", DurationSeconds=899), "ValidationError", "DurationSeconds 899")
    expect_error(lambda: raw.assume_role(RoleArn=role, RoleSessionName="probe", DurationSeconds=43201), "ValidationError", "DurationSeconds 43201")
    expect_error(lambda: raw.assume_role(RoleArn=role, RoleSessionName="p", DurationSeconds=900), "ValidationError", "RoleSessionName too short")
    expect_error(lambda: sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/nope", RoleSessionName="probe"), "AccessDenied", "unknown role")
    expect_error(lambda: sts.assume_role(RoleArn=role, RoleSessionName="probe", Policy="{not json"), "MalformedPolicyDocument", "malformed session policy")

    # Frontend upload: Frank's browser session gets GenerateDataKey on the web key only.
    up = client("sts", "FRANK").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/frontend-upload", RoleSessionName="browser-1")["Credentials"]
    u = client("kms", ak=up["AccessKeyId"], sk=up["SecretAccessKey"], token=up["SessionToken"])
    u.generate_data_key(KeyId="alias/web", KeySpec="AES_256")
    expect_error(lambda: u.generate_data_key(KeyId=pay["KeyId"], KeySpec="AES_256"), "AccessDeniedException", "upload role on another key")
    expect_error(lambda: u.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext={"stage": "ci"}), "AccessDeniedException", "upload role Decrypt")
    print("ok frontend upload via STS")

    # An inactive access key is refused.
    expect_error(lambda: client("kms", "GONE").list_keys(), "UnrecognizedClientException", "inactive access key")
    print(json.dumps({"web": web["KeyId"], "payments": pay["KeyId"]}))
    print("all governance checks passed")


if __name__ == "__main__":
    main()
