"""A producer/consumer pipeline: threads download pages, processes parse them, memory bounded.

Runs offline: a local HTTP server (in a thread of this script) serves generated pages from a
temporary directory. A thread pool downloads each page, a process pool parses it, and the parse
job takes the download's future as its argument (see docs/pipelines.md): it waits for its page
on no worker, and a page that fails to download fails its parse with DependencyError.

Memory stays bounded: the parsers' ``map`` reads the generator of downloads only a window ahead
(``buffersize`` chunks of ``chunksize`` pages), so at most that many pages are downloaded and
not yet parsed, however many URLs there are. The script counts the pages downloaded and not yet
handed to it (the window, plus the chunk being handed out) and checks that bound.
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

from jobpool import DependencyError, Pool

PAGES = 120
CHUNK, WINDOW = 4, 3  # at most CHUNK * WINDOW pages downloaded and not yet parsed


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the stdlib names it format
        pass


def serve(directory: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(Quiet, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


class Downloads:
    """Downloads pages (in the thread pool) and counts those not yet handed to the script."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.unparsed = 0
        self.most_unparsed = 0

    def get(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=30) as response:
            page = response.read().decode()
        with self._lock:
            self.unparsed += 1
            self.most_unparsed = max(self.most_unparsed, self.unparsed)
        return page

    def parsed(self) -> None:
        with self._lock:
            self.unparsed -= 1


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += tag == "a"


def parse(page: str) -> int:
    """The CPU-bound stage, in a worker process: how many links the page has."""
    parser = Links()
    parser.feed(page)
    return parser.links


def write_pages(directory: Path) -> None:
    for n in range(PAGES):
        links = "".join(f'<a href="/{m}.html">{m}</a> ' for m in range(n % 10))
        (directory / f"{n}.html").write_text(f"<html><body><p>page {n}</p>{links}</body></html>")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        write_pages(Path(directory))
        server, base = serve(directory)
        downloads = Downloads()
        try:
            with Pool(8) as fetchers, Pool(2, backend="process") as parsers:
                # One page on its own: the parse waits for the download, on no worker.
                first = parsers.submit(parse, fetchers.submit(downloads.get, f"{base}/9.html"))
                assert first.result() == 9
                downloads.parsed()

                # A missing page fails its parse, which never runs.
                missing = parsers.submit(parse, fetchers.submit(downloads.get, f"{base}/x.html"))
                try:
                    missing.result()
                except DependencyError as exc:
                    print(f"missing page: {exc.path} failed with {exc.__cause__!r}")

                # Every page, memory bounded by the parsers' map window.
                pages = (fetchers.submit(downloads.get, f"{base}/{n}.html") for n in range(PAGES))
                total = 0
                for links in parsers.map(parse, pages, chunksize=CHUNK, buffersize=WINDOW):
                    total += links
                    downloads.parsed()

        finally:
            server.shutdown()
            server.server_close()

    assert total == sum(n % 10 for n in range(PAGES)), total
    print(f"{PAGES} pages, {total} links; at most {downloads.most_unparsed} pages held at once")
    assert downloads.most_unparsed <= CHUNK * (WINDOW + 1), downloads.most_unparsed
