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
