#!/usr/bin/env python3
"""Signs fixed requests with the OFFICIAL Alibaba Cloud Python SDK and prints what it produced.

Used by tests/sdk_signature.rs: envseal's Rust signer must produce byte-identical canonical
requests, strings to sign and signatures for the same inputs.

Reads a JSON object {"cases": [...]} on stdin and writes {"results": [...]} on stdout, one
result per case, in order. Case kinds:

- "client": a real `alibabacloud_kms20160120.client.Client` call (V3 by default, V2 with
  "signature_algorithm": "v2"), with the SDK's nonce and timestamp pinned and its HTTP layer
  replaced by a recorder, so nothing is sent anywhere. Reports the request the SDK would send
  (method, path, query, headers, body) and the canonical request / string to sign / signature
  its signer computed on the way.
- "sign_v3": the SDK's V3 signer (`Utils.get_authorization`) on a request given in full.
- "sign_v2": the SDK's V2 signer (`Utils.get_rpcsignature`) on parameters given in full.

Exit status 3 means the SDK is not installed (`pip install alibabacloud-kms20160120`).
"""

import json
import sys

try:
    import hmac as _real_hmac

    import alibabacloud_tea_openapi.utils as tea_utils
    from alibabacloud_kms20160120 import models as kms_models
    from alibabacloud_kms20160120.client import Client as KmsClient
    from alibabacloud_tea_openapi import utils_models as open_api_models
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.core import DaraCore
    from darabonba.request import DaraRequest
    from darabonba.runtime import RuntimeOptions
except ImportError as e:  # pragma: no cover - reported to the Rust side
    print(f"Alibaba Cloud SDK not importable: {e}", file=sys.stderr)
    sys.exit(3)


class Recorder:
    """Records what the SDK's signing primitives are given."""

    def __init__(self):
        self.hash_inputs = []
        self.signed_strings = []
        self.hmac_messages = []

    def install(self):
        real_hash = Utils.hash
        real_signature_method = tea_utils.signature_method
        recorder = self

        def hash_wrapper(raw, sign_type):
            recorder.hash_inputs.append(bytes(raw))
            return real_hash(raw, sign_type)

        def signature_method_wrapper(secret, source, sign_type):
            recorder.signed_strings.append(source)
            return real_signature_method(secret, source, sign_type)

        class HmacShim:
            @staticmethod
            def new(key, msg=None, digestmod=None):
                recorder.hmac_messages.append(bytes(msg) if msg is not None else b"")
                return _real_hmac.new(key, msg, digestmod=digestmod)

        Utils.hash = staticmethod(hash_wrapper)
        tea_utils.signature_method = signature_method_wrapper
        tea_utils.hmac = HmacShim

    def canonical_request(self, method):
        prefix = (method + "\n").encode()
        found = [h for h in self.hash_inputs if h.startswith(prefix)]
        return found[-1].decode("utf-8") if found else None


class Captured(Exception):
    pass


def snake(action):
    out = ""
    for i, c in enumerate(action):
        if c.isupper() and i > 0:
            out += "_"
        out += c.lower()
    return out


def run_client(case):
    recorder = Recorder()
    recorder.install()
    Utils.get_nonce = staticmethod(lambda: case["nonce"])
    Utils.get_timestamp = staticmethod(lambda: case["timestamp"])
    captured = {}

    def do_action(request, runtime=None):
        captured["request"] = request
        raise Captured()

    DaraCore.do_action = staticmethod(do_action)

    config = open_api_models.Config(
        access_key_id=case["access_key_id"],
        access_key_secret=case["access_key_secret"],
        security_token=case.get("security_token"),
        region_id=case["region"],
        endpoint=case.get("endpoint"),
        signature_algorithm=case.get("signature_algorithm"),
        protocol="HTTPS",
    )
    client = KmsClient(config)
    request_class = getattr(kms_models, case["action"] + "Request")
    request = request_class(**case["args"])
    method = getattr(client, snake(case["action"]) + "_with_options")
    try:
        method(request, RuntimeOptions())
    except Exception:  # the recorder's Captured, wrapped by the SDK's retry loop
        pass
    if "request" not in captured:
        raise RuntimeError("the SDK sent no request")
    r = captured["request"]
    body = r.body
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    headers = {k: ("" if v is None else str(v)) for k, v in r.headers.items()}
    result = {
        "method": r.method,
        "pathname": r.pathname,
        "query": {k: str(v) for k, v in r.query.items() if v is not None},
        "headers": headers,
        "body": body,
    }
    if case.get("signature_algorithm") == "v2":
        result["string_to_sign"] = recorder.hmac_messages[-1].decode("utf-8")
        result["signature"] = result["query"]["Signature"]
    else:
        result["canonical_request"] = recorder.canonical_request(r.method)
        result["string_to_sign"] = recorder.signed_strings[-1]
        result["authorization"] = headers.get("Authorization")
    return result


def run_sign_v3(case):
    recorder = Recorder()
    recorder.install()
    request = DaraRequest()
    request.method = case["method"]
    request.pathname = case["pathname"]
    request.query = dict(case["query"])
    request.headers = dict(case["headers"])
    authorization = Utils.get_authorization(
        request,
        "ACS3-HMAC-SHA256",
        case["payload_sha256"],
        case["access_key_id"],
        case["access_key_secret"],
    )
    return {
        "canonical_request": recorder.canonical_request(case["method"]),
        "string_to_sign": recorder.signed_strings[-1],
        "authorization": authorization,
    }


def run_sign_v2(case):
    recorder = Recorder()
    recorder.install()
    signature = Utils.get_rpcsignature(dict(case["params"]), case["method"], case["access_key_secret"])
    return {"string_to_sign": recorder.hmac_messages[-1].decode("utf-8"), "signature": signature}


def main():
    cases = json.load(sys.stdin)["cases"]
    runners = {"client": run_client, "sign_v3": run_sign_v3, "sign_v2": run_sign_v2}
    results = [runners[c["kind"]](c) for c in cases]
    json.dump({"results": results}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
