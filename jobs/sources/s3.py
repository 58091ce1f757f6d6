"""S3 sources (AWS or any S3-compatible endpoint): lazy paginated listings and bounded object reads.

Credentials come only from boto3's own chain (environment, shared files, profile, instance role); they
never appear in a ref, an error message or a log line.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from aiscan.jobs.errors import ConfigError, FetchError, SourceError, TransientFetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.base import Fetched, SkipCounts
from aiscan.jobs.sources.capped import read_capped
from aiscan.jobs.sources.clients import process_client
from aiscan.jobs.sources.deadline import fetch_deadline, time_left
from aiscan.jobs.sources.urltext import redact_url
from aiscan.model.errors import ErrorKind
from aiscan.model.formats import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_READ_CHUNK = 256 * 1024
_NOT_ARRIVED = "the S3 object did not arrive"
# Errors that say "the service is struggling", not "this object is bad": retry the whole task later.
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
    }
)
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_FORBIDDEN_CODES = frozenset(
    {"AccessDenied", "Forbidden", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key may be empty."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


# -- the client ------------------------------------------------------------------------------------


def s3_client(settings: Settings) -> Any:
    """The process's S3 client for these settings (sessions are not thread-safe, clients are)."""
    key = (
        "s3",
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_profile,
        settings.url_timeout,
        settings.url_retries,
        settings.fetch_concurrency,
    )
    return process_client(key, lambda: _new_client(settings))


def _new_client(settings: Settings) -> Any:
    try:
        session = boto3.session.Session(profile_name=settings.s3_profile)
    except ProfileNotFound:
        raise ConfigError(
            f"AWS profile {settings.s3_profile!r} (AISCAN_S3_PROFILE) is not configured"
        ) from None
    extra = {"s3": {"addressing_style": "path"}} if settings.s3_endpoint_url else {}
    config = Config(
        max_pool_connections=max(10, settings.fetch_concurrency),
        retries={"mode": "standard", "total_max_attempts": settings.url_retries + 1},
        connect_timeout=settings.url_timeout,
        read_timeout=settings.url_timeout,
        **extra,
    )
    return session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config
    )


def _where(settings: Settings) -> str:
    return redact_url(settings.s3_endpoint_url) if settings.s3_endpoint_url else "AWS S3"


def _code_status(exc: ClientError) -> tuple[str, int]:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def _is_busy(code: str, status: int) -> bool:
    return status >= 500 or status == 429 or code in _BUSY_CODES


def _unavailable(settings: Settings, why: str) -> TransientFetchError:
    msg = f"the S3 endpoint {_where(settings)} is unavailable ({why}); the task should be retried"
    log.warning(msg)
    return TransientFetchError(msg)


@contextmanager
def _source_errors(bucket: str, settings: Settings) -> Iterator[None]:
    """Bucket-level failures as SourceError (bad argument) or TransientFetchError (try later)."""
    try:
        yield
    except ClientError as exc:
        code, status = _code_status(exc)
        if _is_busy(code, status):
            raise _unavailable(settings, f"{code or 'HTTP'} {status}") from None
        if status == 404 or code in _MISSING_CODES:
            raise SourceError(f"S3 bucket {bucket!r} does not exist at {_where(settings)}") from None
        if status == 403 or code in _FORBIDDEN_CODES:
            raise SourceError(f"access to S3 bucket {bucket!r} is denied; check the credentials") from None
        if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
            raise SourceError(f"S3 bucket {bucket!r} is in another region; set AISCAN_S3_REGION") from None
        raise SourceError(f"S3 bucket {bucket!r}: {code or 'error'} (HTTP {status})") from None
    except NoCredentialsError:
        raise SourceError(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AISCAN_S3_PROFILE"
        ) from None
    except _UNREACHABLE as exc:
        raise _unavailable(settings, type(exc).__name__) from None


# -- the source ------------------------------------------------------------------------------------


class S3Source(SkipCounts):
    """Objects under ``s3://bucket/prefix`` whose keys have an image extension, listed page by page."""

    def __init__(self, spec: str, settings: Settings, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        bucket, prefix = parse_s3_uri(spec.strip())
        if not _BUCKET.match(bucket):
            raise SourceError("not a valid S3 source: give s3://bucket or s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix
        self.spec = f"s3://{bucket}/{prefix}"
        super().__init__()
        self.pages = 0  # listing pages fetched so far
        self.page_size = page_size
        self._settings = settings
        with _source_errors(bucket, settings):
            s3_client(settings).head_bucket(Bucket=bucket)

    def iter_refs(self) -> Iterator[str]:
        """``s3://bucket/key`` refs in key order; keys without an image extension count as skipped."""
        for ref, _fingerprint in self.iter_entries():
            yield ref

    def iter_entries(self) -> Iterator[tuple[str, str | None]]:
        """The refs of ``iter_refs`` with ``etag:ETAG`` from the listing: an overwrite changes the ETag."""
        paginator = s3_client(self._settings).get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size}
            )
        )
        while True:
            with _source_errors(self.bucket, self._settings):
                page = next(pages, None)
            if page is None:
                return
            self.pages += 1
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):  # a "folder" marker, not an object anyone scans
                    continue
                if posixpath.splitext(key)[1].lower() in IMAGE_EXTENSIONS:
                    etag = str(obj.get("ETag") or "").strip('"')
                    yield f"s3://{self.bucket}/{key}", f"etag:{etag}" if etag else None
                else:
                    self.skip("not_an_image")


# -- fetching --------------------------------------------------------------------------------------


def _object_error(exc: ClientError, settings: Settings) -> Exception:
    code, status = _code_status(exc)
    if _is_busy(code, status):
        return _unavailable(settings, f"{code or 'HTTP'} {status} after {settings.url_retries + 1} attempts")
    if code == "NoSuchBucket":
        return FetchError(ErrorKind.MISSING, "the S3 bucket no longer exists")
    if status == 404 or code in _MISSING_CODES:
        return FetchError(ErrorKind.MISSING, "the S3 object does not exist")
    if status == 403 or code in _FORBIDDEN_CODES:
        return FetchError(ErrorKind.FORBIDDEN, f"access to the S3 object is denied ({code or status})")
    return FetchError(ErrorKind.S3_ERROR, f"S3 error {code or 'unknown'} (HTTP {status})")


def fetch_s3(ref: str, settings: Settings) -> Fetched:
    """The bytes of ``s3://bucket/key`` and its ETag (without quotes), within one deadline of
    ``deadline.FETCH_TIME_FACTOR`` URL timeouts for every body read (botocore bounds each request itself)."""
    bucket, key = parse_s3_uri(ref)
    if not bucket or not key:
        raise FetchError(ErrorKind.BAD_URL, "an S3 ref needs the form s3://bucket/key")
    client = s3_client(settings)
    limit = settings.max_image_bytes
    deadline = fetch_deadline(settings)
    why = ""
    # botocore retries the request itself, not a body that breaks off while streaming: retry that here
    for _ in range(settings.url_retries + 1):
        time_left(deadline, settings, _NOT_ARRIVED)
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise _object_error(exc, settings) from None
        except NoCredentialsError:
            raise FetchError(ErrorKind.S3_ERROR, "no S3 credentials found on this worker") from None
        except _UNREACHABLE as exc:
            raise _unavailable(settings, type(exc).__name__) from None
        body = resp["Body"]
        try:
            size = resp.get("ContentLength")
            if size is not None and size > limit:
                raise FetchError(ErrorKind.TOO_LARGE, f"the object is {size} bytes, the limit is {limit}")
            data = read_capped(_body_reads(body, settings, deadline), limit, "the object")
            if size is not None and len(data) != size:
                why = "the object's body broke off"
                continue
        except (*_UNREACHABLE, Urllib3HTTPError) as exc:
            why = f"{type(exc).__name__} while reading an object"
            continue
        finally:
            body.close()
        etag = resp.get("ETag")
        return Fetched(data, etag.strip('"') if etag else None)
    raise _unavailable(settings, why)


def _body_reads(body: Any, settings: Settings, deadline: float) -> Iterator[bytes]:
    """The body as each network read brings it; the deadline is checked after every read, so a body
    that trickles in is cut off (botocore's read timeout, one URL timeout, bounds each read)."""
    # StreamingBody.read(n) waits for all n bytes; its urllib3 stream's read1 returns what one read got
    raw = body._raw_stream
    while True:
        chunk = raw.read1(_READ_CHUNK)
        if not chunk:
            return
        time_left(deadline, settings, _NOT_ARRIVED)
        yield chunk
