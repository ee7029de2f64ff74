"""The Python AWS Encryption SDK, driven by tests/interop (ESDK messages both ways).

    esdk_py.py encrypt|decrypt IN OUT --raw NAMESPACE NAME KEYFILE [--suite 0478|0578] [--frame N] [--ctx K=V ...]
    esdk_py.py encrypt|decrypt IN OUT --kms ARN [...]

KMS: boto3's default chain, with AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL pointing at the
emulator. Prints the message's encryption context as JSON on stdout after decrypting.
"""
import argparse
import json
import sys

import aws_encryption_sdk
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKey


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["encrypt", "decrypt"])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--raw", nargs=3, metavar=("NAMESPACE", "NAME", "KEYFILE"))
    p.add_argument("--kms")
    p.add_argument("--suite", default="0578")
    p.add_argument("--frame", type=int, default=4096)
    p.add_argument("--ctx", action="append", default=[])
    a = p.parse_args()
    if a.raw:
        ns, name, keyfile = a.raw
        with open(keyfile, "rb") as f:
            wrapping = WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=f.read(),
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )
        provider = RawMasterKey(provider_id=ns, key_id=name.encode(), wrapping_key=wrapping)
    else:
        provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[a.kms])
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ctx = dict(kv.split("=", 1) for kv in a.ctx)
    with open(a.input, "rb") as src, open(a.output, "wb") as dst:
        if a.mode == "encrypt":
            suite = {
                "0578": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
                "0478": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            }[a.suite]
            with client.stream(
                mode="e", source=src, key_provider=provider, encryption_context=ctx,
                algorithm=suite, frame_length=a.frame,
            ) as s:
                for chunk in s:
                    dst.write(chunk)
        else:
            with client.stream(mode="d", source=src, key_provider=provider) as s:
                for chunk in s:
                    dst.write(chunk)
                header = s.header
            print(json.dumps(dict(header.encryption_context)))


if __name__ == "__main__":
    sys.exit(main())
