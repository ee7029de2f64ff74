"""boto3 (botocore's SigV4 signer and JSON 1.1 parser) against `envseal kms serve`.

Driven by tests/kms-serve/main.rs, which passes:
  AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
  KMS_STS_AK, KMS_STS_SK, KMS_STS_TOKEN          a valid STS credential
  KMS_EXPIRED_AK, KMS_EXPIRED_SK, KMS_EXPIRED_TOKEN  an expired one
  KMS_SECOND_RUN=1                              (local keystore) check what the first run left

Prints one `ok` line per check; any failure raises (non-zero exit).
"""

import base64
import os
import sys

import boto3
import botocore.config
import botocore.exceptions

CFG = botocore.config.Config(retries={"max_attempts": 1})


def kms(**kwargs):
    return boto3.client("kms", config=CFG, **kwargs)


def expect_error(call, code, what):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            raise AssertionError(f"{what}: expected {code}, got {got}: {e}") from e
        print(f"ok {what}: rejected with {code}")
        return e
    raise AssertionError(f"{what}: expected {code}, but the call succeeded")


def first_run(c):
    key = c.create_key(Description="boto3", Tags=[{"TagKey": "team", "TagValue": "infra"}])["KeyMetadata"]
    arn, key_id = key["Arn"], key["KeyId"]
    assert arn == f"arn:aws:kms:us-east-1:111122223333:key/{key_id}", arn
    assert key["KeyState"] == "Enabled" and key["Enabled"] and key["KeyUsage"] == "ENCRYPT_DECRYPT"
    print("ok CreateKey", arn)

    c.create_alias(AliasName="alias/boto3", TargetKeyId=key_id)
    described = c.describe_key(KeyId="alias/boto3")["KeyMetadata"]
    assert described["Arn"] == arn
    aliases = c.list_aliases(KeyId=arn)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/boto3"], aliases
    print("ok CreateAlias/DescribeKey/ListAliases")

    ctx = {"app": "billing", "tenant": "t-1"}
    g = c.generate_data_key(KeyId="alias/boto3", KeySpec="AES_256", EncryptionContext=ctx)
    assert g["KeyId"] == arn and len(g["Plaintext"]) == 32
    d = c.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx)
    assert d["Plaintext"] == g["Plaintext"] and d["KeyId"] == arn
    d = c.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx, KeyId=arn)
    assert d["Plaintext"] == g["Plaintext"]
    print("ok GenerateDataKey/Decrypt")

    # The encryption context is bound: any change is refused.
    for wrong in ({}, {"app": "billing"}, {"app": "billing", "tenant": "t-2"}, {**ctx, "extra": "x"}):
        expect_error(
            lambda: c.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=wrong),
            "InvalidCiphertextException",
            f"Decrypt with context {wrong}",
        )
    blob = bytearray(g["CiphertextBlob"])
    blob[-1] ^= 1
    expect_error(
        lambda: c.decrypt(CiphertextBlob=bytes(blob), EncryptionContext=ctx),
        "InvalidCiphertextException",
        "Decrypt of a tampered blob",
    )

    other = c.create_key(Description="destination")["KeyMetadata"]
    expect_error(
        lambda: c.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx, KeyId=other["Arn"]),
        "IncorrectKeyException",
        "Decrypt naming another key",
    )
    r = c.re_encrypt(
        CiphertextBlob=g["CiphertextBlob"],
        SourceEncryptionContext=ctx,
        DestinationKeyId=other["KeyId"],
        DestinationEncryptionContext={"stage": "2"},
    )
    assert r["SourceKeyId"] == arn and r["KeyId"] == other["Arn"]
    d = c.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext={"stage": "2"})
    assert d["Plaintext"] == g["Plaintext"] and d["KeyId"] == other["Arn"]
    expect_error(
        lambda: c.re_encrypt(CiphertextBlob=g["CiphertextBlob"], SourceEncryptionContext={}, DestinationKeyId=arn),
        "InvalidCiphertextException",
        "ReEncrypt with the wrong source context",
    )
    print("ok ReEncrypt")

    e = c.encrypt(KeyId=arn, Plaintext=b"s" * 4096, EncryptionContext=ctx)
    assert c.decrypt(CiphertextBlob=e["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"] == b"s" * 4096
    expect_error(lambda: c.encrypt(KeyId=arn, Plaintext=b"s" * 4097), "ValidationException", "Encrypt above 4 KiB")
    print("ok Encrypt")

    # Rotation: new material, old blobs still open and report their material.
    before = g.get("KeyMaterialId")
    c.rotate_key_on_demand(KeyId=arn)
    g2 = c.generate_data_key(KeyId=arn, NumberOfBytes=32)
    assert g2.get("KeyMaterialId") and g2["KeyMaterialId"] != before
    d = c.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext=ctx)
    assert d["Plaintext"] == g["Plaintext"] and d.get("KeyMaterialId") == before
    rotations = c.list_key_rotations(KeyId=arn)["Rotations"]
    assert len(rotations) == 2, rotations
    print("ok RotateKeyOnDemand/ListKeyRotations")

    c.disable_key(KeyId=arn)
    expect_error(lambda: c.generate_data_key(KeyId=arn, KeySpec="AES_256"), "DisabledException", "disabled key")
    c.enable_key(KeyId=arn)
    s = c.schedule_key_deletion(KeyId=other["KeyId"], PendingWindowInDays=7)
    assert s["KeyState"] == "PendingDeletion" and s["KeyId"] == other["Arn"]
    expect_error(
        lambda: c.encrypt(KeyId=other["KeyId"], Plaintext=b"x"), "KMSInvalidStateException", "key pending deletion"
    )
    c.cancel_key_deletion(KeyId=other["KeyId"])
    assert c.describe_key(KeyId=other["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    print("ok DisableKey/EnableKey/ScheduleKeyDeletion/CancelKeyDeletion")

    expect_error(lambda: c.describe_key(KeyId="alias/missing"), "NotFoundException", "unknown alias")
    keys = c.list_keys(Limit=1)
    assert len(keys["Keys"]) == 1 and keys["Truncated"] and keys["NextMarker"]
    print("ok ListKeys pagination")

    # Credentials.
    wrong = kms(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"] + "x",
    )
    expect_error(lambda: wrong.list_keys(), "InvalidSignatureException", "wrong secret")
    unknown = kms(aws_access_key_id="NOSUCHKEY", aws_secret_access_key="x")
    expect_error(lambda: unknown.list_keys(), "UnrecognizedClientException", "unknown access key")
    sts = kms(
        aws_access_key_id=os.environ["KMS_STS_AK"],
        aws_secret_access_key=os.environ["KMS_STS_SK"],
        aws_session_token=os.environ["KMS_STS_TOKEN"],
    )
    assert sts.generate_data_key(KeyId=arn, KeySpec="AES_256")["KeyId"] == arn
    print("ok STS session token accepted")
    expired = kms(
        aws_access_key_id=os.environ["KMS_EXPIRED_AK"],
        aws_secret_access_key=os.environ["KMS_EXPIRED_SK"],
        aws_session_token=os.environ["KMS_EXPIRED_TOKEN"],
    )
    expect_error(lambda: expired.list_keys(), "ExpiredTokenException", "expired session token")

    with open(os.environ["KMS_STATE_FILE"], "wb") as f:
        f.write(arn.encode() + b"\n" + base64.b64encode(g["CiphertextBlob"]) + b"\n" + base64.b64encode(g["Plaintext"]))


def second_run(c):
    """After a restart on the same local keystore: the key, alias and blob survived."""
    with open(os.environ["KMS_STATE_FILE"], "rb") as f:
        arn, blob, plaintext = f.read().split(b"\n")
    arn = arn.decode()
    assert c.describe_key(KeyId="alias/boto3")["KeyMetadata"]["Arn"] == arn
    d = c.decrypt(CiphertextBlob=base64.b64decode(blob), EncryptionContext={"app": "billing", "tenant": "t-1"})
    assert d["Plaintext"] == base64.b64decode(plaintext) and d["KeyId"] == arn
    print("ok the local keystore kept keys, aliases and blobs across a restart")


def main():
    c = kms()
    if os.environ.get("KMS_SECOND_RUN") == "1":
        second_run(c)
    else:
        first_run(c)
    print("all boto3 checks passed")


if __name__ == "__main__":
    sys.exit(main())
