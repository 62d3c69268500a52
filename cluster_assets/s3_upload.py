"""Writing one S3 object whole or not at all: boto3's multipart upload, aborted on any error.

pyarrow's S3 output stream completes its upload even when the writer raises, publishing
a truncated object over the good one, and has no abort; a staging object moved into
place needs a server-side copy, which S3 refuses above 5 GB. So an S3 write streams
its bytes as the parts of one multipart upload of the final key: the object appears
only at ``complete_multipart_upload``, and any error aborts the upload, leaving the
previous object as it was. A killed process leaves an incomplete upload that no reader
sees; an S3 lifecycle rule (``AbortIncompleteMultipartUpload``, see the README) removes it.
"""

from __future__ import annotations

import io
import os

PART_SIZE = 16 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last


def s3_client():
    import boto3

    # boto3 reads AWS_ENDPOINT_URL(_S3), the region and the credentials from the environment itself
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("s3", region_name=region)


class MultipartUpload(io.RawIOBase):
    """A writable stream whose bytes become ``s3://bucket/key`` only when ``complete`` is called."""

    def __init__(self, bucket: str, key: str, client=None, part_size: int = PART_SIZE):
        super().__init__()
        self.bucket, self.key = bucket, key
        self.client = client or s3_client()
        self.part_size = part_size
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            self._upload_part(self.part_size)
        return len(data)

    def _upload_part(self, size: int) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        response = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                           PartNumber=number, Body=bytes(self.buffer[:size]))
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})
        del self.buffer[:size]

    def complete(self) -> None:
        if self.upload_id is None:  # small: one PUT, atomic by itself
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
        else:
            if self.buffer:
                self._upload_part(len(self.buffer))
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.buffer.clear()

    def abort(self) -> None:
        self.buffer.clear()
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None
