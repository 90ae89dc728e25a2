# Fixes applied to the moto server xtask starts, before it serves a request.
#
# This is the one place where the local emulator's differences from AWS are patched; nothing
# in the providers knows about them. Each fix says what moto does and what AWS does.
import sys

import moto.s3.responses as _s3


def _get_bucket_versioning(self):
    # moto 5.2 answers GetBucketVersioning with a <GetBucketVersioningResponse> root element;
    # AWS (and the AWS SDK for Rust, which checks it) uses <VersioningConfiguration>.
    status = self.backend.get_bucket_versioning(self.bucket_name)
    inner = f"<Status>{status}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{inner}</VersioningConfiguration>"
    )
    return 200, {}, body


_s3.S3Response.get_bucket_versioning = _get_bucket_versioning


import moto.apigateway.models as _apigw

_usage_plan_patch = _apigw.UsagePlan.apply_patch_operations


def _apply_usage_plan_patch(self, patch_operations):
    # moto 5.2 stores patched quota limits as the strings a patch carries and throttle rates
    # through int(), so `"20.5"` fails and GetUsagePlan answers `"limit": "5000"`, which the
    # AWS SDK for Rust rejects (AWS answers numbers: an integer limit, a double rate).
    _usage_plan_patch(
        self,
        [op for op in patch_operations if op.get("path") != "/throttle/rateLimit"],
    )
    for op in patch_operations:
        if op.get("op") in ("add", "replace"):
            if op.get("path") == "/throttle/rateLimit":
                self.throttle["rateLimit"] = float(op["value"])
            elif op.get("path") == "/quota/limit":
                self.quota["limit"] = int(op["value"])


_apigw.UsagePlan.apply_patch_operations = _apply_usage_plan_patch
