"""A missing database driver names the command that installs it, extra included."""

from __future__ import annotations

import sys

import pytest

import resultstore
from resultstore import Backend

DRIVERS = ("psycopg", "psycopg2", "pymysql", "MySQLdb")


@pytest.mark.parametrize(
    ("url", "driver", "command"),
    [
        ("db+postgresql://u:secret@nowhere.invalid/db", "postgresql", "[postgresql]"),
        ("db+mysql://root@nowhere.invalid/db", "mysql", "[mysql]"),
        ("db+mariadb://root@nowhere.invalid/db", "mariadb", "[mysql]"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, driver: str, command: str
) -> None:
    for module in DRIVERS:  # as if none were installed: imports of them fail
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(resultstore.BackendLoadError) as caught:
        Backend(url)
    message = str(caught.value)
    masked = url.replace(":secret@", ":****@")
    assert message.startswith(
        f"the plugin for {masked!r} (resultstore-db 0.1.0) failed to start: "
        f"ModuleNotFoundError: the {driver} driver is not installed ("
    )
    assert message.endswith(f'); install it with: pip install "resultstore-db{command}"')
    assert "secret" not in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
