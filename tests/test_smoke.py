"""The bridge answers through the factory-built app against a real upstream."""

from flask.testing import FlaskClient

from tests.upstream_server import UpstreamServer


def test_cors_index_reaches_the_upstream(client: FlaskClient, upstream: UpstreamServer) -> None:
    response = client.get("/cors/api/")
    assert response.status_code == 200
    assert response.get_json() == {"index": True}
    assert upstream.last().headers["x-api-key"] == "secret-key"


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
