"""GET /legacy-client.js serves the library file as it is, read once when the app is created."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.site.client_asset import ClientAssetMissing, read_library

LIBRARY = Path(__file__).resolve().parent.parent / "legacy_client" / "legacy-client.js"


def test_serves_the_file_as_javascript(client: FlaskClient) -> None:
    response = client.get("/legacy-client.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.data == LIBRARY.read_bytes()
    assert b"LegacyBridge" in response.data


def test_etag_revalidation_and_head(client: FlaskClient) -> None:
    etag = client.get("/legacy-client.js").headers["ETag"]
    again = client.get("/legacy-client.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get("/legacy-client.js", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    head = client.head("/legacy-client.js")
    assert head.status_code == 200 and head.data == b""
    assert int(head.headers["Content-Length"]) == LIBRARY.stat().st_size


def test_other_methods_are_refused_in_json(client: FlaskClient) -> None:
    response = client.post("/legacy-client.js")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_read_once_at_creation(make_app: Callable[..., Flask], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Found beside the package, whatever the working directory."""
    monkeypatch.chdir(tmp_path)
    app = make_app()
    served = app.test_client().get("/legacy-client.js").data
    assert served == LIBRARY.read_bytes()


def test_found_from_the_repo_root_when_the_package_is_elsewhere(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "legacy_client").mkdir()
    (tmp_path / "legacy_client" / "legacy-client.js").write_bytes(b"/* root copy */")
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere" / "legacy-client.js"
    assert read_library((missing, Path.cwd() / "legacy_client" / "legacy-client.js")) == b"/* root copy */"


def test_missing_library_names_where_it_looked(tmp_path: Path) -> None:
    nowhere = (tmp_path / "a" / "legacy-client.js", tmp_path / "b" / "legacy-client.js")
    with pytest.raises(ClientAssetMissing) as raised:
        read_library(nowhere)
    message = str(raised.value)
    assert "legacy-client.js not found" in message
    assert str(nowhere[0]) in message and str(nowhere[1]) in message
