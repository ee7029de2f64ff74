"""Key policies and grants of `envseal kms serve`, evaluated with the IAM policies (issue 17),
through boto3, on testdata/iam/multi-team.toml.

Driven by tests/kms-serve/main.rs with each user's <NAME>_AK / <NAME>_SK, KMS_ENDPOINT and
ACCOUNT. Prints one `ok` line per check; any failure raises.
"""

import json
import os

import boto3
from botocore.config import Config

ENDPOINT = "http://" + os.environ["KMS_ENDPOINT"]
ACCOUNT = os.environ["ACCOUNT"]


def kms(name):
    return boto3.client(
        "kms",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=os.environ[f"{name}_AK"],
        aws_secret_access_key=os.environ[f"{name}_SK"],
        config=Config(retries={"max_attempts": 1}),
    )


def expect_error(call, code, what):
    try:
        call()
    except Exception as e:
        got = getattr(e, "response", {}).get("Error", {}).get("Code")
        if got != code:
            raise AssertionError(f"{what}: expected {code}, got {got!r}: {e}") from e
        print(f"ok {what}: refused with {code}")
        return e
    raise AssertionError(f"{what}: expected {code}, but the call succeeded")


def user(name):
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ACCOUNT_ALL = {"Sid": "Account", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
               "Action": "kms:*", "Resource": "*"}


def main():
    admin, auditor, dana, frank = kms("ADMIN"), kms("AUDITOR"), kms("DANA"), kms("FRANK")
    key = admin.create_key(Description="payments", Tags=[{"TagKey": "team", "TagValue": "payments"}])["KeyMetadata"]["KeyId"]
    default = json.loads(admin.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert default["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{ACCOUNT}:root", default
    assert admin.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]
    dana.generate_data_key(KeyId=key, KeySpec="AES_256")
    expect_error(lambda: auditor.generate_data_key(KeyId=key, KeySpec="AES_256"), "AccessDeniedException",
                 "auditor (read-only) before the key policy names it")

    # The key policy allows the auditor by itself and denies dana whatever her policies say.
    doc = policy(
        ACCOUNT_ALL,
        {"Sid": "AuditorMayUse", "Effect": "Allow", "Principal": {"AWS": user("auditor")},
         "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": "*"},
        {"Sid": "NoDana", "Effect": "Deny", "Principal": {"AWS": user("dana")}, "Action": "kms:*", "Resource": "*"},
    )
    admin.put_key_policy(KeyId=key, PolicyName="default", Policy=doc)
    assert json.loads(admin.get_key_policy(KeyId=key)["Policy"]) == json.loads(doc)
    g = auditor.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "pay"})
    assert auditor.decrypt(CiphertextBlob=g["CiphertextBlob"], EncryptionContext={"app": "pay"})["Plaintext"] == g["Plaintext"]
    print("ok a key policy allows a principal by itself")
    e = expect_error(lambda: dana.generate_data_key(KeyId=key, KeySpec="AES_256"), "AccessDeniedException",
                     "a key-policy Deny beats an identity Allow")
    assert "key policy" in str(e) and "NoDana" in str(e), e
    expect_error(lambda: admin.put_key_policy(KeyId=key, PolicyName="default", Policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'),
                 "MalformedPolicyDocumentException", "a key policy statement without Principal")

    # The lockout safety check, and what bypassing it does.
    locked = admin.create_key(Description="locked")["KeyMetadata"]["KeyId"]
    only_auditor = policy({"Effect": "Allow", "Principal": {"AWS": user("auditor")}, "Action": "kms:*", "Resource": "*"})
    expect_error(lambda: admin.put_key_policy(KeyId=locked, PolicyName="default", Policy=only_auditor),
                 "MalformedPolicyDocumentException", "a policy that would lock the caller out")
    admin.put_key_policy(KeyId=locked, PolicyName="default", Policy=only_auditor, BypassPolicyLockoutSafetyCheck=True)
    expect_error(lambda: admin.describe_key(KeyId=locked), "AccessDeniedException",
                 "the account's identity policies no longer count once the key policy leaves the account out")
    assert auditor.describe_key(KeyId=locked)["KeyMetadata"]["KeyId"] == locked
    print("ok lockout safety check and BypassPolicyLockoutSafetyCheck")

    # Grants: frank (only team=frontend keys by his policies) may decrypt payments data with
    # app=pay once granted, not other contexts; retiring the grant ends it.
    blob = admin.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "pay"})["CiphertextBlob"]
    other = admin.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"app": "ops"})["CiphertextBlob"]
    expect_error(lambda: frank.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "pay"}), "AccessDeniedException",
                 "frank before a grant")
    grant = admin.create_grant(KeyId=key, GranteePrincipal=user("frank"), RetiringPrincipal=user("frank"),
                               Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"app": "pay"}},
                               Name="frank-reads-pay")
    again = admin.create_grant(KeyId=key, GranteePrincipal=user("frank"), RetiringPrincipal=user("frank"),
                               Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"app": "pay"}},
                               Name="frank-reads-pay")
    assert again["GrantId"] == grant["GrantId"], "CreateGrant is idempotent for one name"
    frank.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "pay"}, GrantTokens=[grant["GrantToken"]])
    expect_error(lambda: frank.decrypt(CiphertextBlob=other, EncryptionContext={"app": "ops"}), "AccessDeniedException",
                 "a grant's encryption context constraint")
    listed = admin.list_grants(KeyId=key)["Grants"]
    assert [g["GrantId"] for g in listed] == [grant["GrantId"]] and listed[0]["Operations"] == ["Decrypt"], listed
    assert listed[0]["Constraints"]["EncryptionContextSubset"] == {"app": "pay"}
    retirable = admin.list_retirable_grants(RetiringPrincipal=user("frank"))["Grants"]
    assert [g["GrantId"] for g in retirable] == [grant["GrantId"]], retirable
    expect_error(lambda: auditor.retire_grant(GrantToken=grant["GrantToken"]), "AccessDeniedException",
                 "retiring someone else's grant")
    frank.retire_grant(GrantToken=grant["GrantToken"])
    expect_error(lambda: frank.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "pay"}), "AccessDeniedException",
                 "frank after retiring the grant")
    expect_error(lambda: frank.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "pay"}, GrantTokens=[grant["GrantToken"]]),
                 "InvalidGrantTokenException", "the retired grant's token")
    print("all key policy and grant checks passed")


if __name__ == "__main__":
    main()
