"""The Python AWS Encryption SDK, driven by tests/interop (ESDK messages both ways).

    esdk_py.py encrypt|decrypt IN OUT [--raw NAMESPACE NAME KEYFILE]... [--kms ARN]...
               [--suite 0478|0578|0378] [--frame N] [--ctx K=V]...

--suite 0378 writes a message without key commitment (commitment policy
FORBID_ENCRYPT_ALLOW_DECRYPT), to check that envseal refuses it. KMS: boto3's default chain,
AWS_ENDPOINT_URL pointing at the emulator. After decrypting, prints the message's encryption
context as JSON on stdout.
"""
import argparse
import json
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider


def raw_provider(namespace, keys):
    """A raw AES master key provider for one namespace, over {name: key bytes}."""

    class Provider(RawMasterKeyProvider):
        provider_id = namespace

        def __init__(self, **kwargs):  # pylint: disable=unused-argument
            self._keys = keys

        def _get_raw_key(self, key_id):
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=self._keys[key_id.decode() if isinstance(key_id, bytes) else key_id],
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

    p = Provider()
    for name in keys:
        p.add_master_key(name.encode())
    return p


def provider(raws, arns):
    providers = []
    if arns:
        providers.append(aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=arns))
    by_namespace = {}
    for ns, name, keyfile in raws:
        with open(keyfile, "rb") as f:
            by_namespace.setdefault(ns, {})[name] = f.read()
    for ns, keys in by_namespace.items():
        providers.append(raw_provider(ns, keys))
    first = providers[0]
    for p in providers[1:]:
        first.add_master_key_provider(p)
    return first


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["encrypt", "decrypt"])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--raw", nargs=3, action="append", default=[], metavar=("NAMESPACE", "NAME", "KEYFILE"))
    p.add_argument("--kms", action="append", default=[])
    p.add_argument("--suite", default="0578")
    p.add_argument("--frame", type=int, default=4096)
    p.add_argument("--ctx", action="append", default=[])
    a = p.parse_args()
    key_provider = provider(a.raw, a.kms)
    policy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    if a.suite == "0378":
        policy = CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy)
    ctx = dict(kv.split("=", 1) for kv in a.ctx)
    with open(a.input, "rb") as src, open(a.output, "wb") as dst:
        if a.mode == "encrypt":
            suite = {
                "0578": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
                "0478": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                "0378": Algorithm.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384,
            }[a.suite]
            with client.stream(
                mode="e", source=src, key_provider=key_provider, encryption_context=ctx,
                algorithm=suite, frame_length=a.frame,
            ) as s:
                for chunk in s:
                    dst.write(chunk)
        else:
            with client.stream(mode="d", source=src, key_provider=key_provider) as s:
                for chunk in s:
                    dst.write(chunk)
                header = s.header
            print(json.dumps(dict(header.encryption_context)))


if __name__ == "__main__":
    sys.exit(main())
