"""A minimal AWS Signature V4 client for the test S3 server: create and list buckets through its S3 API."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.error
import urllib.request
from urllib.parse import urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signed_request(method: str, url: str, *, key: str, secret: str, region: str) -> urllib.request.Request:
    """An S3 request with an empty body, signed with SigV4 (path-style URL, no query string)."""
    parts = urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, parts.path or "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, EMPTY_SHA256]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    credential = f"Credential={key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    headers["authorization"] = f"AWS4-HMAC-SHA256 {credential}"
    return urllib.request.Request(url, method=method, headers=headers)


def create_bucket(endpoint: str, bucket: str, *, key: str, secret: str, region: str) -> None:
    """PUT /<bucket> on the server (raises urllib.error.HTTPError unless it answers 2xx)."""
    request = signed_request("PUT", f"{endpoint.rstrip('/')}/{bucket}", key=key, secret=secret, region=region)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def list_buckets(endpoint: str, *, key: str, secret: str, region: str) -> str:
    """GET / : the ListAllMyBuckets XML."""
    request = signed_request("GET", endpoint.rstrip("/") + "/", key=key, secret=secret, region=region)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"S3 list buckets: {error.code} {error.read()[:300]!r}") from error
