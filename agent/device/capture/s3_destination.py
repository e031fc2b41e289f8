"""Capture batches sent to S3 (or an S3-compatible server) with boto3.

Credentials come from boto3's default chain, never from the agent's configuration: under
Greengrass that is the Token Exchange Service (the nucleus sets
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` for a
component that depends on ``aws.greengrass.TokenExchangeService``, and boto3 renews the
credentials before they expire); elsewhere the usual environment variables, profile or
instance role. Keys are ``<prefix>/<thing>/<batch_id>/<file>``. Every object is sent with
its ``Content-MD5``, so S3 refuses a body that changed on the way (``BadDigest``).

The device's role needs ``s3:PutObject`` on ``<prefix>/<thing>/*``; with ``s3:GetObject``
there and ``s3:ListBucket`` on the bucket too, an upload cut short between a batch's last
file and its local delete is recognised on the next try instead of being sent again.

boto3 is the ``s3`` extra (``pip install 'edge-inference-agent[s3]'``); it is imported
only when a batch is first sent.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from agent.device.capture.batches import BATCH_FILE
from agent.device.capture.destinations import check_names, check_thing, clean_prefix
from agent.device.capture.errors import CaptureUploadError

# S3 error codes after which a new client is made: its credentials may have been fixed.
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                               "InvalidToken", "TokenRefreshRequired", "no_credentials"})
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Destination:
    """``S3Destination(bucket, prefix, thing, region=, endpoint_url=)``;
    ``client_factory`` (no arguments, returns an S3 client) replaces boto3's default
    client, e.g. to reach a server with credentials of its own."""

    def __init__(self, bucket: str, prefix: str, thing: str, *, region: str | None = None,
                 endpoint_url: str | None = None,
                 client_factory: Callable[[], Any] | None = None,
                 connect_timeout_s: float = 10.0, read_timeout_s: float = 60.0) -> None:
        self.bucket = bucket
        self.prefix = clean_prefix(prefix)
        self.thing = check_thing(thing)
        self.region = region
        self.endpoint_url = endpoint_url
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._client_factory = client_factory or self._default_client
        self._client: Any = None
        self.description = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def key(self, batch_id: str, name: str) -> str:
        check_names(batch_id, name)
        return "/".join(part for part in (self.prefix, self.thing, batch_id, name) if part)

    def _default_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as err:
            raise CaptureUploadError(
                "capture upload to S3 needs boto3: install the agent's s3 extra (pip "
                "install 'edge-inference-agent[s3]')", code="boto3_missing",
                retry=False) from err
        config = Config(connect_timeout=self.connect_timeout_s,
                        read_timeout=self.read_timeout_s,
                        retries={"max_attempts": 2, "mode": "standard"})
        return boto3.session.Session().client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config)

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def has_batch(self, batch_id: str) -> bool:
        key = self.key(batch_id, BATCH_FILE)
        try:
            response = self._call(lambda client: client.get_object(Bucket=self.bucket,
                                                                   Key=key), key)
        except CaptureUploadError as err:
            if err.code in _NOT_FOUND:
                return False
            if err.code == "AccessDenied":
                # Without s3:GetObject (and s3:ListBucket, which turns a missing key's
                # answer into NoSuchKey) S3 says AccessDenied whether or not the object
                # is there: send the batch (again); the same keys are overwritten.
                return False
            raise
        response["Body"].close()
        return True

    def begin_batch(self, batch_id: str) -> None:
        pass  # a repeated upload overwrites the same keys

    def put(self, batch_id: str, name: str, data: bytes) -> None:
        key = self.key(batch_id, name)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        content_type = "application/json" if name.endswith((".json", ".jsonl")) else \
            "application/octet-stream"
        self._call(lambda client: client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5,
            ContentLength=len(data), ContentType=content_type), key)

    def _call(self, action: Callable[[Any], Any], key: str) -> Any:
        try:
            return action(self._get_client())
        except CaptureUploadError:
            raise
        except Exception as err:  # botocore's errors, translated below
            translated = translate(err, f"s3://{self.bucket}/{key}")
            if translated.code in _CREDENTIAL_CODES:
                self._client = None  # the next try reads the credential chain again
            raise translated from err

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()


def translate(err: Exception, where: str) -> CaptureUploadError:
    """A botocore (or transport) error as a :class:`CaptureUploadError` whose ``code`` is
    S3's error code (``NoSuchBucket``, ``AccessDenied``, ``InvalidAccessKeyId``, ...), or
    ``connection`` / ``no_credentials`` / ``s3_client`` for errors before S3 answered."""
    try:
        from botocore import exceptions as botocore_errors
    except ImportError:  # pragma: no cover - a client that is not botocore's
        return CaptureUploadError(f"{where}: {err}", code="s3_client")
    if isinstance(err, botocore_errors.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "s3_error")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = error.get("Message") or ""
        return CaptureUploadError(f"S3 refused {where}: {code} (HTTP {status}) {message}"
                                  .rstrip(), code=code)
    connection_errors = (botocore_errors.EndpointConnectionError,
                         botocore_errors.ConnectionClosedError,
                         botocore_errors.ConnectTimeoutError,
                         botocore_errors.ReadTimeoutError,
                         botocore_errors.ProxyConnectionError,
                         botocore_errors.HTTPClientError)
    if isinstance(err, (*connection_errors, ConnectionError)):
        return CaptureUploadError(f"cannot reach S3 for {where}: {err}", code="connection")
    if isinstance(err, (botocore_errors.NoCredentialsError,
                        botocore_errors.PartialCredentialsError,
                        botocore_errors.CredentialRetrievalError)):
        return CaptureUploadError(f"no AWS credentials for {where}: {err} (under Greengrass "
                                  "the component needs aws.greengrass.TokenExchangeService)",
                                  code="no_credentials")
    return CaptureUploadError(f"S3 client error for {where}: {err!r}", code="s3_client")
