"""Replay of recorded HTTP responses for the network adapters (the only fake allowed).

A ``requests`` transport adapter that answers from JSON files under
``tests/fixtures/recorded/<name>/``, keyed by URL path and (optionally) the
``startTime`` query parameter, and fails loudly on any request it has no
recording for, so a test cannot reach the network by accident.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from requests.adapters import BaseAdapter

FIXTURES = Path(__file__).parent / "fixtures" / "recorded"


class RecordedAdapter(BaseAdapter):
    def __init__(self, name: str, fail_first: int = 0):
        super().__init__()
        self.dir = FIXTURES / name
        self.requests: list[str] = []
        self.fail_first = fail_first  # simulate transient outages: the first N requests time out

    def send(self, request, **kwargs):
        self.requests.append(request.url)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise requests.exceptions.ConnectTimeout(f"recorded outage for {request.url}")
        url = urlparse(request.url)
        q = parse_qs(url.query)
        key = url.path.strip("/").replace("/", "_")
        candidates = [f"{key}@{q['startTime'][0]}.json"] if "startTime" in q else []
        candidates.append(f"{key}.json")
        for name in candidates:
            path = self.dir / name
            if path.exists():
                resp = requests.Response()
                resp.status_code = 200
                resp._content = path.read_bytes()
                resp.headers["Content-Type"] = "application/json"
                resp.url = request.url
                resp.request = request
                resp.encoding = "utf-8"
                return resp
        raise AssertionError(f"no recording for {request.url} (looked for {candidates} in {self.dir})")

    def close(self):
        pass


def session(name: str, fail_first: int = 0) -> tuple[requests.Session, RecordedAdapter]:
    s = requests.Session()
    adapter = RecordedAdapter(name, fail_first)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s, adapter


def load(name: str, file: str):
    return json.loads((FIXTURES / name / file).read_text())
