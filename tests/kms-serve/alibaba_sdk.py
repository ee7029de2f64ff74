"""The official Alibaba Cloud KMS Python SDK (alibabacloud-kms20160120, with its tea-openapi
core) against `envseal kms serve`.

Driven by tests/kms-serve/main.rs, which starts the server with an IAM file and passes:
  KMS_ENDPOINT            host:port of the server
  KMS_AK, KMS_SK          a long-term access key
  KMS_STS_AK, KMS_STS_SK, KMS_STS_TOKEN        a valid STS credential
  KMS_EXPIRED_AK, KMS_EXPIRED_SK, KMS_EXPIRED_TOKEN  an expired STS credential

Every check runs twice: with the SDK's default V3 signature (ACS3-HMAC-SHA256) and with the
RPC V2 signature (signature_algorithm='v2', HMAC-SHA1). Prints one `ok` line per check; any
failure raises (non-zero exit).
"""

import base64
import json
import os
import sys

from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi import models as open_api_models

ENDPOINT = os.environ["KMS_ENDPOINT"]


def client(ak, sk, algorithm=None, token=None):
    cfg = open_api_models.Config(
        access_key_id=ak,
        access_key_secret=sk,
        endpoint=ENDPOINT,
        protocol="http",
        region_id="cn-hangzhou",
    )
    if token:
        cfg.security_token = token
    if algorithm:
        cfg.signature_algorithm = algorithm
    return Client(cfg)


def expect_error(call, code, what):
    try:
        call()
    except Exception as e:  # the SDK raises ClientException / ServerException with .code
        got = getattr(e, "code", None)
        if got != code:
            raise AssertionError(f"{what}: expected error code {code}, got {got!r}: {e}") from e
        print(f"ok {what}: rejected with {code}")
        return e
    raise AssertionError(f"{what}: expected error code {code}, but the call succeeded")


def b64(data):
    return base64.b64encode(data).decode()


def run(algorithm):
    label = algorithm or "v3"
    c = client(os.environ["KMS_AK"], os.environ["KMS_SK"], algorithm)

    # CreateKey, with the HSM protection level and a rotation policy.
    created = c.create_key(
        models.CreateKeyRequest(
            description=f"sdk {label}",
            protection_level="HSM",
            enable_automatic_rotation=True,
            rotation_interval="30d",
        )
    ).body
    meta = created.key_metadata
    key_id = meta.key_id
    assert meta.protection_level == "HSM", meta.protection_level
    assert meta.key_state == "Enabled", meta.key_state
    assert meta.arn.endswith(f":key/{key_id}"), meta.arn
    assert meta.automatic_rotation == "Enabled", meta.automatic_rotation
    assert meta.rotation_interval == "2592000s", meta.rotation_interval
    assert created.request_id, "RequestId"
    print(f"ok {label}: CreateKey {key_id}")

    alias = f"alias/sdk-{label}"
    c.create_alias(models.CreateAliasRequest(alias_name=alias, key_id=key_id))
    aliases = c.list_aliases(models.ListAliasesRequest(page_size=100)).body
    assert any(a.alias_name == alias and a.key_id == key_id for a in aliases.aliases.alias), aliases
    print(f"ok {label}: CreateAlias/ListAliases")

    # GenerateDataKey with an encryption context (sent as a JSON string by the SDK), Decrypt.
    ctx = {"app": "billing", "tenant": "a b&c=d/é"}
    g = c.generate_data_key(models.GenerateDataKeyRequest(key_id=alias, encryption_context=ctx)).body
    assert g.key_id == key_id, (g.key_id, key_id)
    assert g.key_version_id, "KeyVersionId"
    assert len(base64.b64decode(g.plaintext)) == 32
    d = c.decrypt(models.DecryptRequest(ciphertext_blob=g.ciphertext_blob, encryption_context=ctx)).body
    assert d.plaintext == g.plaintext and d.key_id == key_id and d.key_version_id == g.key_version_id
    print(f"ok {label}: GenerateDataKey/Decrypt")
    g16 = c.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, key_spec="AES_128")).body
    assert len(base64.b64decode(g16.plaintext)) == 16
    g7 = c.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, number_of_bytes=7)).body
    assert len(base64.b64decode(g7.plaintext)) == 7
    print(f"ok {label}: GenerateDataKey KeySpec/NumberOfBytes")

    expect_error(
        lambda: c.decrypt(
            models.DecryptRequest(ciphertext_blob=g.ciphertext_blob, encryption_context={"app": "other"})
        ),
        "InvalidParameter.EncryptionContext",
        f"{label}: Decrypt with the wrong context",
    )

    # Encrypt (the 6 KiB limit), ReEncrypt to another key and context.
    secret = os.urandom(6 * 1024)
    e = c.encrypt(models.EncryptRequest(key_id=key_id, plaintext=b64(secret), encryption_context=ctx)).body
    assert e.key_id == key_id and e.key_version_id
    expect_error(
        lambda: c.encrypt(models.EncryptRequest(key_id=key_id, plaintext=b64(secret + b"x"))),
        "InvalidParameter",
        f"{label}: Encrypt above 6 KiB",
    )
    other = c.create_key(models.CreateKeyRequest(description="destination")).body.key_metadata.key_id
    r = c.re_encrypt(
        models.ReEncryptRequest(
            ciphertext_blob=e.ciphertext_blob,
            source_encryption_context=ctx,
            destination_key_id=other,
            destination_encryption_context={"stage": "2"},
        )
    ).body
    assert r.key_id == other and r.key_version_id
    d = c.decrypt(models.DecryptRequest(ciphertext_blob=r.ciphertext_blob, encryption_context={"stage": "2"})).body
    assert base64.b64decode(d.plaintext) == secret and d.key_id == other
    print(f"ok {label}: Encrypt/ReEncrypt")

    # Versions and rotation policy.
    v = c.create_key_version(models.CreateKeyVersionRequest(key_id=key_id)).body.key_version
    assert v.key_id == key_id and v.key_version_id != g.key_version_id
    versions = c.list_key_versions(models.ListKeyVersionsRequest(key_id=key_id)).body
    assert versions.total_count == 2, versions.total_count
    d = c.decrypt(models.DecryptRequest(ciphertext_blob=g.ciphertext_blob, encryption_context=ctx)).body
    assert d.key_version_id == g.key_version_id, "old version still decrypts"
    g2 = c.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id)).body
    assert g2.key_version_id == v.key_version_id, "new wraps use the new version"
    c.update_rotation_policy(
        models.UpdateRotationPolicyRequest(key_id=key_id, enable_automatic_rotation=True, rotation_interval="90d")
    )
    meta = c.describe_key(models.DescribeKeyRequest(key_id=key_id)).body.key_metadata
    assert meta.rotation_interval == "7776000s" and meta.primary_key_version == v.key_version_id, meta
    print(f"ok {label}: CreateKeyVersion/ListKeyVersions/UpdateRotationPolicy/DescribeKey")

    keys = c.list_keys(models.ListKeysRequest(page_size=100)).body
    assert any(k.key_id == key_id for k in keys.keys.key) and keys.total_count >= 2
    print(f"ok {label}: ListKeys")

    # ListKeys Filters, the TagResources family, SetKeyPolicy / GetKeyPolicy.
    enabled = c.list_keys(
        models.ListKeysRequest(page_size=100, filters='[{"Key":"KeyState","Values":["Enabled"]}]')
    ).body
    assert any(k.key_id == key_id for k in enabled.keys.key), "an enabled key passes KeyState=Enabled"
    none = c.list_keys(
        models.ListKeysRequest(page_size=100, filters='[{"Key":"KeyState","Values":["PendingDeletion"]}]')
    ).body
    assert all(k.key_id != key_id for k in none.keys.key), "an enabled key fails KeyState=PendingDeletion"
    expect_error(
        lambda: c.list_keys(models.ListKeysRequest(filters='[{"Key":"Colour","Values":["red"]}]')),
        "InvalidParameter",
        f"{label}: ListKeys with an unknown filter key",
    )
    c.tag_resources(
        models.TagResourcesRequest(
            resource_type="key",
            resource_id=[key_id],
            tag=[models.TagResourcesRequestTag(key="team", value="pay"), models.TagResourcesRequestTag(key="tier", value="1")],
        )
    )
    c.untag_resources(models.UntagResourcesRequest(resource_type="key", resource_id=[key_id], tag_key=["tier"]))
    listed = c.list_tag_resources(models.ListTagResourcesRequest(resource_type="key", resource_id=[key_id])).body
    pairs = sorted((t.tag_key, t.tag_value) for t in listed.tag_resources.tag_resource)
    assert ("team", "pay") in pairs and all(k != "tier" for k, _ in pairs), pairs
    print(f"ok {label}: ListKeys Filters, TagResources/UntagResources/ListTagResources")

    policy = json.loads(c.get_key_policy(models.GetKeyPolicyRequest(key_id=key_id, policy_name="default")).body.policy)
    policy["Statement"].append(
        {"Sid": "NoIntern", "Effect": "Deny", "Principal": {"RAM": ["acs:ram::1:user/intern"]}, "Action": ["kms:*"], "Resource": ["*"]}
    )
    c.set_key_policy(models.SetKeyPolicyRequest(key_id=key_id, policy_name="default", policy=json.dumps(policy)))
    got = json.loads(c.get_key_policy(models.GetKeyPolicyRequest(key_id=key_id, policy_name="default")).body.policy)
    assert any(st.get("Sid") == "NoIntern" for st in got["Statement"]), got
    expect_error(
        lambda: c.set_key_policy(models.SetKeyPolicyRequest(key_id=key_id, policy_name="default", policy="{not json")),
        "InvalidParameter.Policy",
        f"{label}: SetKeyPolicy with a malformed policy",
    )
    print(f"ok {label}: SetKeyPolicy/GetKeyPolicy")

    # States: disabled keys refuse, deletion scheduling.
    c.disable_key(models.DisableKeyRequest(key_id=key_id))
    expect_error(
        lambda: c.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id)),
        "Rejected.Disabled",
        f"{label}: GenerateDataKey on a disabled key",
    )
    c.enable_key(models.EnableKeyRequest(key_id=key_id))
    c.schedule_key_deletion(models.ScheduleKeyDeletionRequest(key_id=other, pending_window_in_days=7))
    meta = c.describe_key(models.DescribeKeyRequest(key_id=other)).body.key_metadata
    assert meta.key_state == "PendingDeletion" and meta.delete_date, meta
    c.cancel_key_deletion(models.CancelKeyDeletionRequest(key_id=other))
    print(f"ok {label}: DisableKey/EnableKey/ScheduleKeyDeletion/CancelKeyDeletion")

    expect_error(
        lambda: c.describe_key(models.DescribeKeyRequest(key_id="00000000-0000-4000-8000-000000000000")),
        "Forbidden.KeyNotFound",
        f"{label}: DescribeKey of an unknown key",
    )

    # Credentials: a wrong secret, an unknown access key, STS tokens.
    bad = client(os.environ["KMS_AK"], os.environ["KMS_SK"] + "x", algorithm)
    expect_error(
        lambda: bad.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id)),
        "SignatureDoesNotMatch",
        f"{label}: wrong secret",
    )
    unknown = client("NOSUCHKEY", "x", algorithm)
    expect_error(
        lambda: unknown.list_keys(models.ListKeysRequest()),
        "InvalidAccessKeyId.NotFound",
        f"{label}: unknown access key",
    )
    sts = client(os.environ["KMS_STS_AK"], os.environ["KMS_STS_SK"], algorithm, os.environ["KMS_STS_TOKEN"])
    g = sts.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id)).body
    assert g.key_id == key_id
    print(f"ok {label}: STS security token accepted")
    forged = client(os.environ["KMS_STS_AK"], os.environ["KMS_STS_SK"], algorithm, "forged-token")
    expect_error(
        lambda: forged.list_keys(models.ListKeysRequest()),
        "InvalidSecurityToken.MismatchWithAccessKey",
        f"{label}: wrong STS token",
    )
    expired = client(
        os.environ["KMS_EXPIRED_AK"], os.environ["KMS_EXPIRED_SK"], algorithm, os.environ["KMS_EXPIRED_TOKEN"]
    )
    expect_error(
        lambda: expired.list_keys(models.ListKeysRequest()),
        "InvalidSecurityToken.Expired",
        f"{label}: expired STS token",
    )


def main():
    for algorithm in (None, "v2"):
        run(algorithm)
    print("all Alibaba Cloud SDK checks passed")


if __name__ == "__main__":
    sys.exit(main())
