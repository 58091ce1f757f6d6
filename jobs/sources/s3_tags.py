"""Writing a scan's verdict onto the S3 object itself, as object tags beside the owner's own tags.

S3 replaces an object's whole tag set on every PutObjectTagging, so the existing tags are read first and
ours merged over them. Messages carry the S3 error code only: never credentials, never the endpoint's query.
"""

from __future__ import annotations

import re

from botocore.exceptions import ClientError, NoCredentialsError

from aiscan.jobs.errors import TagError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.s3 import _UNREACHABLE, _code_status, parse_s3_uri, s3_client

# S3's own limits on an object's tags.
MAX_TAGS = 10
MAX_KEY = 128
MAX_VALUE = 256
# The characters S3 accepts in a tag value; anything else (a model name may hold more) becomes "_".
_NOT_ALLOWED = re.compile(r"[^\w +\-=.:/@]", re.ASCII)
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled"})


def tag_value(text: str) -> str:
    """``text`` as a value S3 takes: allowed characters only, at most MAX_VALUE of them."""
    return _NOT_ALLOWED.sub("_", text)[:MAX_VALUE]


def tag_object(ref: str, tags: dict[str, str], settings: Settings) -> None:
    """Set ``tags`` on the object ``s3://bucket/key``, keeping its other tags; TagError on failure."""
    bucket, key = parse_s3_uri(ref)
    if not bucket or not key:
        raise TagError("only an s3://bucket/key object can be tagged")
    client = s3_client(settings)
    try:
        existing = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        merged = {tag["Key"]: tag["Value"] for tag in existing}
        # No conditional tagging exists in S3: a tag another writer adds between our read and write is lost.
        merged.update(tags)
        if len(merged) > MAX_TAGS:
            others = len(merged) - len(tags)
            raise TagError(
                f"the object already has {others} other tags and S3 allows {MAX_TAGS}: adding aiscan's "
                f"{len(tags)} would exceed it; remove some of its tags or scan without tagging"
            )
        tag_set = [{"Key": k, "Value": v} for k, v in merged.items()]
        client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set})
    except ClientError as exc:
        raise _client_error(exc) from None
    except NoCredentialsError:
        raise TagError("no S3 credentials found on this worker") from None
    except _UNREACHABLE as exc:
        raise TagError(f"the S3 endpoint was unreachable while tagging ({type(exc).__name__})") from None


def _client_error(exc: ClientError) -> TagError:
    code, status = _code_status(exc)
    if status == 404 or code in _MISSING:
        return TagError(f"the S3 object no longer exists ({code or status})")
    if status == 403 or code in _DENIED:
        return TagError(
            f"tagging the S3 object is denied ({code or status}): the credentials need "
            "s3:GetObjectTagging and s3:PutObjectTagging"
        )
    return TagError(f"S3 refused the tags: {code or 'error'} (HTTP {status})")
