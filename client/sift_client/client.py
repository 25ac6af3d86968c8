"""``Client`` and ``SiftError``: every call of CONTRACT.md's Python client, over ``requests``.

Uploads and downloads stream through temporary files, never whole in memory twice: a file path is sent from disk
(``_MultipartFile`` reads it as the request body is written), and an export is saved to disk before pandas reads it.
Lists that the server pages (``Link: <...>; rel="next"``) are followed to the end, so a call returns every row.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests

_CHUNK = 1024 * 1024
# Items are sent in their file's own format; the server tells them apart by the name (and gzip by its magic).
_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq")
_RESERVED = ("external_id", "text", "label")


class SiftError(Exception):
    """A failed call: ``status`` is the HTTP status (0: no answer from the server), ``detail`` the server's message."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail
        self.body = body  # the whole JSON answer, when there was one (an import's summary rides on a 400/413)


class Client:
    """A session with one Sift server, authenticated by an API token or by a username and password."""

    def __init__(self, url: str, token: str | None = None, *, username: str | None = None,
                 password: str | None = None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token is None:
            if username is None or password is None:
                raise ValueError("give a token, or a username and a password")
            token = str(self._request("POST", "/api/auth/token/", json={"username": username, "password": password},
                                      authenticated=False).json()["token"])
        self._session.headers["Authorization"] = f"Token {token}"

    # --- projects ---------------------------------------------------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        """The projects you are a member of, as ``GET /api/projects/`` (every page)."""
        return self._list("/api/projects/")

    def project(self, slug: str) -> dict[str, Any]:
        """One project, as ``GET /api/projects/{slug}/``."""
        return self._json("GET", f"/api/projects/{slug}/")  # type: ignore[no-any-return]

    def create_project(self, slug: str, name: str, taxonomy: Mapping[str, Any], overlap: int = 1,
                       strategy: str | None = None, embedder: str | None = None) -> dict[str, Any]:
        """Create a project (you become its admin); ``taxonomy`` is the contract's taxonomy JSON as a dict.
        ``strategy`` and ``embedder`` left as None take the server's defaults."""
        body: dict[str, Any] = {"slug": slug, "name": name, "taxonomy": dict(taxonomy), "overlap": overlap}
        if strategy is not None:
            body["strategy"] = strategy
        if embedder is not None:
            body["embedder"] = embedder
        return self._json("POST", "/api/projects/", json=body)  # type: ignore[no-any-return]

    # --- items ------------------------------------------------------------------------------------------------

    def import_items(self, slug: str, data: pd.DataFrame | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
                     gold: bool = False, atomic: bool = False) -> dict[str, Any]:
        """Import items; returns the summary ``{"created", "updated", "unchanged", "errors": [{"line", "error"}]}``.

        ``data``: a DataFrame (``external_id``, ``text``, other columns into meta; sent as Parquet), a list of dicts
        (sent as JSON Lines), or a file path (.jsonl, .csv, .parquet, maybe .gz; sent as it is). Bad rows are
        reported in the summary, not raised; with ``atomic`` nothing is imported if any row is bad, and the call
        raises ``SiftError`` (400) whose ``body`` holds the summary.
        """
        params = {"gold": "1" if gold else "0", "atomic": "1" if atomic else "0"}
        path = f"/api/projects/{slug}/items/import"
        if isinstance(data, str | os.PathLike):
            file_path = Path(data)
            if not file_path.is_file():
                raise FileNotFoundError(f"{file_path}: no such file")
            with file_path.open("rb") as handle:
                return self._upload(path, params, file_path.name, handle)
        with tempfile.TemporaryFile() as spool:
            if isinstance(data, pd.DataFrame):
                _write_parquet(data, spool)
                name = "items.parquet"
            else:
                _write_jsonl(data, spool)
                name = "items.jsonl"
            spool.seek(0)
            return self._upload(path, params, name, spool)

    # --- export, stats, models --------------------------------------------------------------------------------

    def export(self, slug: str, format: str = "parquet", **params: Any) -> pd.DataFrame:
        """The project's export as a DataFrame: the same rows as ``GET /api/projects/{slug}/export``.

        ``params`` are the endpoint's query parameters (``split="0.8,0.1,0.1"``, ``seed=7``,
        ``aggregation="dawid_skene"``, ``raw=True``...); lists (e.g. ``labels``) and booleans are spelled for you.
        """
        query = {"format": format, **{key: _query_value(value) for key, value in params.items()}}
        with tempfile.TemporaryFile() as spool:
            response = self._request("GET", f"/api/projects/{slug}/export", params=query, stream=True)
            with response:
                for chunk in response.iter_content(_CHUNK):
                    spool.write(chunk)
            spool.seek(0)
            if format == "parquet":
                return pq.read_table(spool).to_pandas()
            if format == "jsonl":
                if not spool.read(1):
                    return pd.DataFrame()
                spool.seek(0)
                return pd.read_json(spool, lines=True, dtype=False)
            if format == "csv":
                return pd.read_csv(spool, dtype=str, keep_default_na=False)
            raise ValueError(f"format must be parquet, jsonl or csv, not {format!r}")

    def stats(self, slug: str) -> dict[str, Any]:
        """Progress, agreement and prevalence figures, as ``GET /api/projects/{slug}/stats/``."""
        return self._json("GET", f"/api/projects/{slug}/stats/")  # type: ignore[no-any-return]

    def models(self, slug: str) -> list[dict[str, Any]]:
        """Model versions, newest first, as ``GET /api/projects/{slug}/models/`` (every page)."""
        return self._list(f"/api/projects/{slug}/models/")

    # --- HTTP -------------------------------------------------------------------------------------------------

    def _upload(self, path: str, params: dict[str, str], name: str, handle: IO[bytes]) -> dict[str, Any]:
        body = _MultipartFile("file", name, handle)
        return self._json("POST", path, params=params, data=body,  # type: ignore[no-any-return]
                          headers={"Content-Type": body.content_type, "Content-Length": str(len(body))})

    def _list(self, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        url: str | None = self.url + path
        while url is not None:
            response = self._request("GET", url)
            rows.extend(response.json())
            url = response.links.get("next", {}).get("url")
        return rows

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _request(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.url + path
        session = self._session if authenticated else requests
        try:
            response = session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise SiftError(0, f"could not reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response


def _error(response: requests.Response) -> SiftError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = str(body["detail"])
    elif body is not None:
        detail = json.dumps(body)
    else:
        detail = response.text.strip()[:500] or response.reason or "error"
    return SiftError(response.status_code, detail, body)


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def _write_parquet(frame: pd.DataFrame, out: IO[bytes]) -> None:
    missing = [name for name in ("external_id", "text") if name not in frame.columns]
    if missing:
        raise ValueError(f"the DataFrame needs the columns external_id and text (missing: {', '.join(missing)})")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, out)


def _write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[bytes]) -> None:
    """Rows as JSON Lines: ``external_id``, ``text``, ``label`` as given; ``meta`` as given, or the other keys."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=True)
    for row in rows:
        record = {key: row[key] for key in _RESERVED if key in row}
        extra = {key: value for key, value in row.items() if key not in (*_RESERVED, "meta")}
        meta = row.get("meta")
        if meta is not None or extra:
            record["meta"] = {**extra, **(meta or {})} if isinstance(meta, Mapping) or meta is None else meta
        text.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    text.detach()  # leave ``out`` open for the caller


class _MultipartFile:
    """A multipart/form-data body of one file field, read from ``handle`` as it is sent (known length, no copy)."""

    def __init__(self, field: str, filename: str, handle: IO[bytes]) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        self._head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n").encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        start = handle.tell()
        handle.seek(0, io.SEEK_END)
        self._size = handle.tell() - start
        handle.seek(start)
        self._handle = handle
        self._parts: list[bytes | None] = [self._head, None, self._tail]  # None: the file's bytes

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self._parts and (size < 0 or len(out) < size):
            want = -1 if size < 0 else size - len(out)
            part = self._parts[0]
            if part is None:
                chunk = self._handle.read(want if want >= 0 else -1)
                if not chunk:
                    self._parts.pop(0)
                    continue
                out += chunk
            else:
                take = part if want < 0 else part[:want]
                out += take
                rest = part[len(take):]
                if rest:
                    self._parts[0] = rest
                else:
                    self._parts.pop(0)
        return out
