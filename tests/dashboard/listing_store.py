"""A store that several processes share and that lists: the example ``file://`` plugin
with ``kv_scan`` (the key-value helper then lists and counts).

Only until the db plugin lists (SQL listing is built on another branch): the browser
tests use ``db+sqlite://`` as soon as its plugin declares ``listing`` (see
``conftest.shared_store_url``), and this module is no longer used then.
"""

from __future__ import annotations

from urllib.parse import unquote

from resultstore import Capability
from resultstore_file import FileBackend

SCHEME = "dirlist"
TARGET = "tests.dashboard.listing_store:ListingFileBackend"


class ListingFileBackend(FileBackend):
    capabilities = FileBackend.capabilities | {Capability.LISTING}

    def kv_scan(self, prefix: str) -> list[str]:
        keys = (unquote(path.name) for path in self.directory.iterdir())
        return [key for key in keys if not key.startswith(".") and key.startswith(prefix)]
