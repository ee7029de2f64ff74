"""The old Alibaba Cloud Python SDK (aliyun-python-sdk-core with aliyun-python-sdk-kms: RPC
style, HMAC-SHA1 signatures) against `envseal kms serve` (issue 17).

Driven by tests/kms-serve/main.rs with KMS_ENDPOINT (host:port), KMS_AK and KMS_SK. The SDK
reads the `SignatureDoesNotMatch` message as the real service writes it (`...:` then the
server's string to sign): with a wrong secret it must raise its own `InvalidAccessKeySecret`,
not crash with `IndexError`.
"""

import base64
import json
import os
import sys

from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkkms.request.v20160120.CreateKeyRequest import CreateKeyRequest
from aliyunsdkkms.request.v20160120.DecryptRequest import DecryptRequest
from aliyunsdkkms.request.v20160120.DescribeKeyRequest import DescribeKeyRequest
from aliyunsdkkms.request.v20160120.GenerateDataKeyRequest import GenerateDataKeyRequest
from aliyunsdkkms.request.v20160120.ListKeysRequest import ListKeysRequest
from aliyunsdkkms.request.v20160120.TagResourceRequest import TagResourceRequest
from aliyunsdkkms.request.v20160120.UpdateRotationPolicyRequest import UpdateRotationPolicyRequest

ENDPOINT = os.environ["KMS_ENDPOINT"]


def call(client, request):
    request.set_endpoint(ENDPOINT)
    request.set_protocol_type("http")
    request.set_accept_format("JSON")
    return json.loads(client.do_action_with_exception(request))


def main():
    c = AcsClient(os.environ["KMS_AK"], os.environ["KMS_SK"], "cn-hangzhou")
    key_id = call(c, CreateKeyRequest())["KeyMetadata"]["KeyId"]
    print(f"ok CreateKey {key_id}")

    ctx = json.dumps({"app": "legacy", "tenant": "t 1"})
    g = GenerateDataKeyRequest()
    g.set_KeyId(key_id)
    g.set_EncryptionContext(ctx)
    g = call(c, g)
    assert len(base64.b64decode(g["Plaintext"])) == 32
    d = DecryptRequest()
    d.set_CiphertextBlob(g["CiphertextBlob"])
    d.set_EncryptionContext(ctx)
    assert call(c, d)["Plaintext"] == g["Plaintext"]
    print("ok GenerateDataKey/Decrypt with a context")

    t = TagResourceRequest()
    t.set_KeyId(key_id)
    t.set_Tags(json.dumps([{"TagKey": "team", "TagValue": "legacy"}]))
    call(c, t)
    u = UpdateRotationPolicyRequest()
    u.set_KeyId(key_id)
    u.set_EnableAutomaticRotation(True)
    u.set_RotationInterval("30d")
    call(c, u)
    dk = DescribeKeyRequest()
    dk.set_KeyId(key_id)
    meta = call(c, dk)["KeyMetadata"]
    assert meta["AutomaticRotation"] == "Enabled" and meta["RotationInterval"] == "2592000s", meta
    print("ok TagResource/UpdateRotationPolicy/DescribeKey")

    bad = AcsClient(os.environ["KMS_AK"], os.environ["KMS_SK"] + "x", "cn-hangzhou")
    try:
        call(bad, ListKeysRequest())
    except ServerException as e:
        # The SDK found its own string to sign in the message: a wrong secret, said so.
        assert e.get_error_code() == "InvalidAccessKeySecret", (e.get_error_code(), e.get_error_msg())
        print("ok wrong secret: InvalidAccessKeySecret")
    else:
        raise AssertionError("a wrong secret was accepted")
    print("all legacy Alibaba Cloud SDK checks passed")


if __name__ == "__main__":
    sys.exit(main())
