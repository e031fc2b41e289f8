"""The loopback S3 server the capture tests and the loop demo use speaks S3 to boto3."""

from __future__ import annotations

import pytest

from agent.tools.s3.local_server import LocalS3Server


def test_objects_round_trip_and_a_missing_bucket_is_refused(s3_server: LocalS3Server) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="local-s3-round-trip")  # type: ignore[attr-defined]
    client.put_object(Bucket="local-s3-round-trip", Key="a/b.bin",  # type: ignore[attr-defined]
                      Body=b"\x00\x01capture")
    body = client.get_object(Bucket="local-s3-round-trip", Key="a/b.bin")  # type: ignore[attr-defined]
    assert body["Body"].read() == b"\x00\x01capture"
    with pytest.raises(Exception, match="NoSuchBucket"):
        client.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")  # type: ignore[attr-defined]
