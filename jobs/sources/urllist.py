"""URL sources: lists of http(s) URLs (text or CSV files, read lazily) and single URLs."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from aiscan.jobs.errors import SourceError
from aiscan.jobs.sources.base import SkipCounts
from aiscan.jobs.sources.urltext import INVALID_PREFIX, has_credentials, is_http_url, redact_url

# Local files with these suffixes are read as URL lists rather than scanned as (non-image) files.
LIST_SUFFIXES = (".txt", ".csv", ".urls", ".lst")


def _as_ref(text: str) -> str:
    text = redact_url(text)
    return text if is_http_url(text) else INVALID_PREFIX + text


class UrlSource(SkipCounts):
    """A single http(s) URL given on the command line."""

    def __init__(self, url: str) -> None:
        url = url.strip()
        if has_credentials(url):
            raise SourceError(
                f"{redact_url(url)}: URLs with user:password@ are not supported "
                "(the password would be stored with the job)"
            )
        super().__init__()
        self.spec = url

    def iter_refs(self) -> Iterator[str]:
        yield self.spec

    def iter_entries(self) -> Iterator[tuple[str, str | None]]:
        yield self.spec, None  # a URL's content cannot be told unchanged without fetching it


class UrlListSource(SkipCounts):
    """A text file with one URL per line, or a CSV file with a ``url`` column, read lazily."""

    def __init__(self, path: str) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SourceError(f"no such URL list file: {path}")
        self.path = Path(os.path.abspath(p))
        self.spec = f"urls:{self.path}"
        super().__init__()
        self._url_column = self._detect_csv()

    def _open(self) -> TextIO:
        # utf-8-sig drops the BOM that spreadsheet exports put before the header
        return open(self.path, encoding="utf-8-sig", errors="replace", newline="")

    def _detect_csv(self) -> int | None:
        """The index of the ``url`` column when the file is a CSV, None for a plain list."""
        header = None
        try:
            with self._open() as fh:
                for line in fh:
                    if line.strip() and not line.lstrip().startswith("#"):
                        header = line
                        break
        except OSError as exc:
            raise SourceError(f"cannot read URL list {self.path}: {exc.strerror or exc}") from None
        fields = [f.strip().lower() for f in next(csv.reader([header]))] if header else []
        if "url" in fields:
            return fields.index("url")
        if self.path.suffix.lower() == ".csv" and header is not None:
            raise SourceError(f"{self.path}: a CSV URL list needs a header line with a 'url' column")
        return None

    def iter_entries(self) -> Iterator[tuple[str, str | None]]:
        """The URLs, never fingerprinted: a scheduled run fetches every one."""
        for ref in self.iter_refs():
            yield ref, None

    def iter_refs(self) -> Iterator[str]:
        """The URLs in file order; non-http(s) entries become refs too, so they end as error rows."""
        with self._open() as fh:
            if self._url_column is None:
                for line in fh:
                    text = line.strip()
                    if not text or text.startswith("#"):
                        continue
                    # URLs hold no whitespace, so "  # ..." after one is a trailing comment
                    text = re.split(r"\s+#", text, maxsplit=1)[0]
                    yield _as_ref(text)
                return
            column, header_seen = self._url_column, False
            for row in csv.reader(fh):
                if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                    continue
                if not header_seen:
                    header_seen = True
                    continue
                cell = row[column].strip() if column < len(row) else ""
                if cell:
                    yield _as_ref(cell)
                else:
                    self.skip("empty_url")
