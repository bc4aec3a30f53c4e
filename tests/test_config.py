"""Config: every key declared once; a bad value stops start-up with one line naming file, section, key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config, parse_config

GOOD = """
[server]
bind = 127.0.0.1:9000
workers = 3

[cors]
allow_origins = https://app.example.com https://*.example.org
allow_credentials = true
max_age = 99999

[upstream:weather]
url = https://api.weather.example/v2
methods = GET, POST
headers = X-Api-Key: ${WEATHER_KEY}
timeout = 2.5
ttl = 0
"""


def test_good_config_becomes_typed_values() -> None:
    config = parse_config(GOOD, "good.ini", env={"WEATHER_KEY": "s3cret"})
    assert config.server.bind == "127.0.0.1:9000" and config.server.workers == 3
    weather = config.upstreams["weather"]
    assert weather.url == "https://api.weather.example/v2/"  # a base: paths join below it
    assert weather.methods == frozenset({"GET", "POST"})
    assert weather.headers == (("X-Api-Key", "s3cret"),)
    assert weather.timeout == 2.5 and weather.ttl == 0 and weather.jsonp is True
    assert config.cors.max_age == 7200  # capped as Chromium caps it
    assert config.cors.allow_credentials is True
    assert config.cache.ttl == 60 and config.cache.max_bytes == 64 * 1024 * 1024
    assert config.jsonp.callback_param == "callback" and config.jsonp.max_callback_length == 128


def test_env_default_syntax() -> None:
    text = "[upstream:a]\nurl = ${BASE:-http://127.0.0.1:1/}\n"
    assert parse_config(text, "x.ini", env={}).upstreams["a"].url == "http://127.0.0.1:1/"
    assert parse_config(text, "x.ini", env={"BASE": "http://h/"}).upstreams["a"].url == "http://h/"


def test_apis_public_view_hides_url_and_headers() -> None:
    view = parse_config(GOOD, "good.ini", env={"WEATHER_KEY": "s3cret"}).upstreams["weather"].public_view()
    assert view == {"name": "weather", "methods": ["GET", "POST"], "jsonp": True, "cors": True}


BAD = [
    pytest.param("[srever]\nbind = 1.2.3.4:5\n", "[srever]", "unknown section", id="unknown-section"),
    pytest.param("[cors]\nallow_origin = https://a.com\n", "[cors] allow_origin", "unknown key",
                 id="unknown-key"),
    pytest.param("[upstream:a]\nurl = ftp://example.com/\n", "[upstream:a] url", "http",
                 id="url-not-http"),
    pytest.param("[upstream:a]\nurl = file:///etc/passwd\n", "[upstream:a] url", "http",
                 id="url-file"),
    pytest.param("[upstream:a]\nmethods = GET\n", "[upstream:a] url", "missing", id="url-missing"),
    pytest.param("[cors]\nallow_origins = *\nallow_credentials = true\n",
                 "[cors] allow_credentials", "credentials", id="wildcard-with-credentials"),
    pytest.param("[cors]\nallow_credentials = true\n[upstream:a]\nurl = http://h/\nallow_origins = *\n",
                 "[upstream:a] allow_origins", "credentials", id="upstream-wildcard-with-credentials"),
    pytest.param("[cors]\nallow_origins = https://*example.org\n", "[cors] allow_origins", "whole labels",
                 id="pattern-star-not-a-label"),
    pytest.param("[cors]\nallow_origins = https://a.*.org\n", "[cors] allow_origins", "whole labels",
                 id="pattern-star-in-middle"),
    pytest.param("[cors]\nallow_origins = example.org\n", "[cors] allow_origins", "scheme",
                 id="origin-without-scheme"),
    pytest.param("[cors]\nallow_origins = https://example.org/\n", "[cors] allow_origins", "path",
                 id="origin-with-path"),
    pytest.param("[cors]\nallow_origins = https://*.org\n", "[cors] allow_origins", "top-level",
                 id="pattern-over-tld"),
    pytest.param("[cors]\nallow_origins = * https://a.com\n", "[cors] allow_origins", "combined",
                 id="star-and-list"),
    pytest.param("[cache]\nttl = -5\n", "[cache] ttl", "negative", id="negative-ttl"),
    pytest.param("[cache]\nmax_bytes = -1\n", "[cache] max_bytes", "negative", id="negative-size"),
    pytest.param("[upstream:a]\nurl = http://h/\ntimeout = -1\n", "[upstream:a] timeout", "below 0",
                 id="negative-timeout"),
    pytest.param("[server]\nworkers = 0\n", "[server] workers", "at least 1", id="zero-workers"),
    pytest.param("[cors]\nallow_credentials = maybe\n", "[cors] allow_credentials", "true or false",
                 id="bad-bool"),
    pytest.param("[upstream:a]\nurl = http://h/\nheaders = X-Key: ${NOPE}\n", "[upstream:a] headers",
                 "NOPE is not set", id="missing-env"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = GET TRACE\n", "[upstream:a] methods",
                 "TRACE", id="unsupported-method"),
    pytest.param("[upstream:a b]\nurl = http://h/\n", "[upstream:a b]", "upstream names",
                 id="bad-upstream-name"),
    pytest.param("[upstream:a]\nurl = http://user:pw@h/\n", "[upstream:a] url", "password",
                 id="credentials-in-url"),
    pytest.param("[jsonp]\ncallback_param = _\n", "[jsonp] callback_param", "other than",
                 id="callback-param-is-a-control-param"),
    pytest.param("[cors]\nmax_age = 1\nmax_age = 2\n", "[cors] max_age", "twice", id="duplicate-key"),
]


@pytest.mark.parametrize(("text", "where", "words"), BAD)
def test_bad_config_is_one_line_naming_file_section_and_key(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.ini", env={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"bad.ini: {where}:"), message
    assert words in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.ini: file not found"):
        load_config(tmp_path / "nope.ini")


def test_app_py_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text(textwrap.dedent("""
        [cors]
        allow_origins = *
        allow_credentials = true
    """))
    result = subprocess.run([sys.executable, "app.py", "--config", str(bad), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[cors] allow_credentials" in lines[0] and "credentials" in lines[0]
    assert str(bad) in lines[0]


def test_shipped_wsgi_ini_is_valid() -> None:
    config = load_config("wsgi.ini", env={})
    assert "demo" in config.upstreams
