#!/usr/bin/env bash
# Builds fuzz/corpus/<target>/ seed corpora from testdata/ (vectors and sample files) plus a
# few hand-written requests. Idempotent: seed files are named by content hash, so running it
# again over a corpus the fuzzer has grown only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 - <<'PY'
import base64, glob, hashlib, json, os

ROOT = os.path.abspath("..")
def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def vectors(kind):
    for p in sorted(glob.glob(f"{ROOT}/testdata/vectors/{kind}/*.json")):
        yield json.load(open(p, encoding="utf-8"))

FIXED = 8 + 1 + 2 + 4 + 32  # magic, version, suite, chunk size, salt (FORMAT.md §4.2)
for v in vectors("container"):
    b = bytes.fromhex(v["sealed"])
    if len(b) > 8192:
        b = b[:4096]  # the 70000-byte case: keep the preamble and the first chunks
    put("container_preamble", b)
    put("container_open", b)
    if len(b) > FIXED:
        put("context_decode", b[FIXED:])
for v in vectors("field"):
    b = bytes.fromhex(v["sealed"])
    put("field_envelope", b)
    put("field_text", "esf1:" + base64.urlsafe_b64encode(b).decode().rstrip("="))
for v in vectors("keyref/value"):
    b = bytes.fromhex(v["sealed"])
    put("keyref", b)
    put("keyref", "esk1:" + base64.urlsafe_b64encode(b).decode().rstrip("="))
for v in vectors("keyref/index"):
    put("keyref", v["definition"])
put("context_decode", b"\x00\x00")
put("context_decode", b"\x00\x02\x00\x05table\x00\x05users\x00\x06tenant\x00\x0bZ\xc3\xbcrich \xe2\x98\x83")

for mode, sel, payload in [(1, 0, b"hunter2"), (3, 13, b"42"), (5, 26, b"true"), (1, 38, b""), (7, 2, "Zürich ☃".encode())]:
    put("sealed_value", bytes([mode, sel]) + payload)
put("sealed_value", b"\x00\x00ENC[v1:s:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA]")

# ESDK messages: the public commitment vectors (testdata/esdk).
for t in json.load(open(f"{ROOT}/testdata/esdk/commitment-test-vectors.json"))["tests"]:
    put("esdk_message", base64.b64decode(t["ciphertext"]))
# sops files (testdata/sops), by format selector; a .sops.yaml; a dotenvx-shaped value.
for sel, ext in [(0, "env"), (1, "json"), (2, "yaml"), (3, "ini")]:
    put("migrate_inputs", bytes([sel]) + open(f"{ROOT}/testdata/sops/app.sops.{ext}", "rb").read())
put("migrate_inputs", b"\x02creation_rules:\n  - path_regex: prod/.*\\.env$\n    kms: arn:aws:kms:us-east-1:1:key/k\n")
put("migrate_inputs", b"\x00encrypted:" + base64.b64encode(b"\x04" + bytes(64) + bytes(48)))

dotenv = [p for p in glob.glob(f"{ROOT}/testdata/dotenv/*.env") if os.path.getsize(p) < 8192]
yaml = glob.glob(f"{ROOT}/testdata/yaml/*.yaml") + glob.glob(f"{ROOT}/testdata/yaml/expected/*.yaml")
meta = {"version": 1, "file_id": base64.urlsafe_b64encode(bytes(32)).decode().rstrip("="),
        "context": {"app": "billing"},
        "keys": [{"backend": "mock", "key_id": "key-1", "key_version": "1", "blob": "AAAA"}],
        "plain_keys": "^PUBLIC_", "commitment": "00" * 32, "mac": "11" * 32,
        "created": "2026-01-01T00:00:00Z"}
for p in dotenv:
    data = open(p, "rb").read()
    put("stores_document", b"\x00" + data)
    put("dotenv_roundtrip", data)
put("stores_document", b"\x00A=1\n#ENVSEAL_version=1\n")
put("stores_document", b"\x01" + json.dumps({"db": {"password": "ENC[v1:s:AAAA]", "port": 5432, "tls": True, "x": None, "hosts": ["a", "b"]}, "envseal": meta}, indent=2).encode())
put("stores_document", b"\x01" + json.dumps({"a": 1.50, "b": [1, {"c": "d"}]}).encode())
for p in yaml:
    put("stores_document", b"\x02" + open(p, "rb").read())
put("stores_document", b"\x02db:\n  password: ENC[v1:s:AAAA]\nenvseal:\n  version: 1\n  file_id: " + meta["file_id"].encode() + b"\n  keys:\n    - backend: mock\n      key_id: key-1\n      key_version: '1'\n      blob: AAAA\n  commitment: '" + meta["commitment"].encode() + b"'\n  mac: '" + meta["mac"].encode() + b"'\n")

for s in ["a%20b+c", "Action=Decrypt&CiphertextBlob=AAAA%3D%3D&EncryptionContext=%7B%22a%22%3A%22b%22%7D",
          "20260101T000000Z", "2026-01-01T00:00:00Z", '{"app":"billing","~envseal:field":"x"}', "%E2%98%83&&=x"]:
    put("kms_util", s)

AUTH4 = ("AWS4-HMAC-SHA256 Credential=AKFUZZ/20260101/us-east-1/kms/aws4_request, "
         "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64)
put("kms_sigv4", f"POST /\nhost: 127.0.0.1\nx-amz-date: 20260101T000000Z\nx-amz-target: TrentService.Decrypt\n"
                 f"content-type: application/x-amz-json-1.1\nauthorization: {AUTH4}\n\n{{\"CiphertextBlob\":\"AAAA\"}}")
put("kms_sigv4", f"GET /a%20b/c?b=2&a=1&a=0\nhost: h\nx-amz-date: 20260101T000000Z\nx-amz-security-token: t\n"
                 f"x-amz-content-sha256: UNSIGNED-PAYLOAD\nauthorization: {AUTH4}\n\n")
ACS3 = "ACS3-HMAC-SHA256 Credential=AKFUZZ,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=" + "0" * 64
put("kms_acs", f"POST /?Action=Encrypt&KeyId=alias%2Fa\nhost: 127.0.0.1\nx-acs-action: Encrypt\nx-acs-version: 2016-01-20\n"
               f"x-acs-date: 2026-01-01T00:00:00Z\nx-acs-signature-nonce: n1\nx-acs-content-sha256: {hashlib.sha256(b'').hexdigest()}\n"
               f"authorization: {ACS3}\n\n")
put("kms_acs", "POST /\ncontent-type: application/x-www-form-urlencoded\nhost: h\n\n"
               "Action=Decrypt&Version=2016-01-20&AccessKeyId=AKFUZZ&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0"
               "&SignatureNonce=1&Timestamp=2026-01-01T00%3A00%3A00Z&Signature=abc%3D&CiphertextBlob=AAAA")

for target, body in [
    ("TrentService.ListKeys", {}), ("TrentService.CreateKey", {"Description": "d", "Tags": [{"TagKey": "a", "TagValue": "b"}]}),
    ("TrentService.Encrypt", {"KeyId": "alias/fuzz", "Plaintext": "aGVsbG8=", "EncryptionContext": {"a": "b"}}),
    ("TrentService.GenerateDataKey", {"KeyId": "alias/fuzz", "NumberOfBytes": 32}),
    ("TrentService.Decrypt", {"CiphertextBlob": "AAAA", "EncryptionContext": {"a": "b"}}),
    ("TrentService.ReEncrypt", {"CiphertextBlob": "AAAA", "DestinationKeyId": "alias/fuzz"}),
    ("TrentService.CreateAlias", {"AliasName": "alias/fuzz", "TargetKeyId": "x"}),
    ("TrentService.DescribeKey", {"KeyId": "arn:aws:kms:us-east-1:111122223333:key/x"}),
    ("TrentService.ListAliases", {"Limit": 1, "Marker": "1"}),
    ("TrentService.EnableKeyRotation", {"KeyId": "x", "RotationPeriodInDays": 90}),
    ("TrentService.ScheduleKeyDeletion", {"KeyId": "x", "PendingWindowInDays": 7}),
]:
    put("kms_api", b"\x00" + target.encode() + b"\n" + json.dumps(body).encode())
for q in ["Action=ListKeys&PageSize=1&PageNumber=2", "Action=CreateKey&Description=d",
          "Action=Encrypt&KeyId=alias%2Ffuzz&Plaintext=aGVsbG8%3D&EncryptionContext=%7B%22a%22%3A%22b%22%7D",
          "Action=GenerateDataKey&KeyId=x&NumberOfBytes=32", "Action=Decrypt&CiphertextBlob=AAAA",
          "Action=CreateAlias&AliasName=alias%2Ffuzz&KeyId=x", "Action=UpdateRotationPolicy&KeyId=x&EnableAutomaticRotation=true&RotationInterval=30d",
          "Action=DescribeKey&KeyId=acs%3Akms%3Acn-hangzhou%3A1234567890123456%3Akey%2Fx", "Action=ListAliases&DryRun=true",
          "Action=AssumeRole&Version=2015-04-01&RoleArn=acs%3Aram%3A%3A1%3Arole%2Fr&RoleSessionName=s"]:
    put("kms_api", b"\x01" + q.encode())
# Policy documents and IAM files: the example file and each policy in it.
iam = open(f"{ROOT}/testdata/iam/multi-team.toml", encoding="utf-8").read()
put("iam_policy", iam)
for chunk in iam.split("'''")[1::2]:
    put("iam_policy", chunk.strip())
put("iam_policy", '{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":"iam:*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"},"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["a*"]},"IpAddress":{"aws:SourceIp":["10.0.0.0/8","::1/128"]},"DateLessThan":{"aws:CurrentTime":"2030-01-01"},"NumericLessThan":{"x":"3"},"Null":{"y":"true"}}}}')
# Audit logs: the samples in testdata/audit.
for p in sorted(glob.glob(f"{ROOT}/testdata/audit/*.log")):
    put("audit_log", open(p, "rb").read())
for t in ["container_preamble", "container_open", "field_envelope", "field_text", "context_decode", "sealed_value",
          "stores_document", "dotenv_roundtrip", "kms_util", "kms_acs", "kms_sigv4", "kms_api", "iam_policy", "audit_log"]:
    n = len(os.listdir(os.path.join("corpus", t)))
    print(f"{t}: {n} seeds")
PY
