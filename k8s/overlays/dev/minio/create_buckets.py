"""Create the S3 buckets isnetflow uses, if missing (dev overlay: Job minio-create-buckets).

Idempotent: an existing bucket is left as it is. Bucket names come from ISNETFLOW_BUCKETS (comma-separated),
the endpoint and region from AWS_ENDPOINT_URL / AWS_DEFAULT_REGION (read by boto3 itself), the credentials
from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or from the files named by AWS_ACCESS_KEY_ID_FILE /
AWS_SECRET_ACCESS_KEY_FILE (a mounted Secret), which win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

_MISSING = {"404", "NoSuchBucket", "NotFound"}


def secret(name: str) -> str:
    """``name`` read from the file that ``<name>_FILE`` points to (a mounted Secret), else from ``name``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().rstrip("\r\n")
    return os.environ[name]


def ensure_buckets(s3: Any, names: list[str]) -> dict[str, str]:
    """``{bucket: "created" | "exists"}`` for every name, creating the missing ones."""
    region = s3.meta.region_name
    extra: dict[str, Any] = {}
    if region not in (None, "us-east-1"):  # us-east-1 rejects an explicit location constraint
        extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
    result: dict[str, str] = {}
    for name in names:
        try:
            s3.head_bucket(Bucket=name)
            result[name] = "exists"
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise
            s3.create_bucket(Bucket=name, **extra)
            result[name] = "created"
    return result


def main() -> int:
    names = [n.strip() for n in os.environ.get("ISNETFLOW_BUCKETS", "").split(",") if n.strip()]
    if not names:
        print("ISNETFLOW_BUCKETS is empty", file=sys.stderr)
        return 2
    s3 = boto3.client(
        "s3",
        aws_access_key_id=secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret("AWS_SECRET_ACCESS_KEY"),
    )
    for name, state in ensure_buckets(s3, names).items():
        print(f"bucket {name}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
