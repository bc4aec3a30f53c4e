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


def test_methods_are_the_six_in_any_case_and_extension_methods_as_written() -> None:
    text = "[upstream:dav]\nurl = http://h/\nmethods = get Post, patch M-SEARCH PROPFIND\n"
    assert parse_config(text, "m.ini", env={}).upstreams["dav"].methods == \
        frozenset({"GET", "POST", "PATCH", "M-SEARCH", "PROPFIND"})


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
    pytest.param("[upstream:a]\nurl = http://h/\ntimeout = -1\n", "[upstream:a] timeout", "negative",
                 id="negative-timeout"),
    pytest.param("[upstream:a]\nurl = http://h/\ntimeout = inf\n", "[upstream:a] timeout", "finite",
                 id="infinite-timeout"),
    pytest.param("[cache]\nttl = nan\n", "[cache] ttl", "whole number", id="nan-ttl"),
    pytest.param("[upstream:a]\nurl = http://h/\ntimeout = nan\n", "[upstream:a] timeout", "finite",
                 id="nan-timeout"),
    pytest.param("[server]\nworkers = 0\n", "[server] workers", "at least 1", id="zero-workers"),
    pytest.param("[cors]\nallow_credentials = maybe\n", "[cors] allow_credentials", "true or false",
                 id="bad-bool"),
    pytest.param("[upstream:a]\nurl = http://h/\nheaders = X-Key: ${NOPE}\n", "[upstream:a] headers",
                 "NOPE is not set", id="missing-env"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = GET TRACE\n", "[upstream:a] methods",
                 "TRACE cannot be forwarded", id="unsupported-method"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = GET connect\n", "[upstream:a] methods",
                 "connect cannot be forwarded", id="connect-in-any-case"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = Track\n", "[upstream:a] methods",
                 "Track cannot be forwarded", id="track"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = GET OPTIONS\n", "[upstream:a] methods",
                 "answers OPTIONS itself", id="options-is-the-bridges"),
    pytest.param("[upstream:a]\nurl = http://h/\nmethods = GET M(SEARCH\n", "[upstream:a] methods",
                 "not a method name", id="method-not-a-token"),
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


def test_console_script_is_app_py(tmp_path: Path) -> None:
    """``jsonp-cors-bridge`` (pyproject's [project.scripts]) runs what ``python app.py`` runs."""
    script = Path(sys.executable).with_name("jsonp-cors-bridge")
    assert script.exists(), "make install puts the console script beside the venv's python"
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nworkers = 0\n")
    refused = subprocess.run([str(script), "--config", str(bad), "--check"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "[server] workers" in refused.stderr
    good = subprocess.run([str(script), "--config", "wsgi.ini", "--check"], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "DEMO_URL": "http://h/"})
    assert good.returncode == 0, good.stderr


def test_shipped_wsgi_ini_is_valid() -> None:
    config = load_config("wsgi.ini", env={})
    assert "demo" in config.upstreams


# --- every setting declared once ---


def test_the_typed_sections_are_the_declared_settings() -> None:
    """Each section's dataclass has exactly the declared keys, with the declared defaults."""
    import dataclasses

    from bridge.config import SECTION_TYPES, UpstreamConfig
    from bridge.config.settings import UPSTREAM, in_section, upstream_settings

    for section, kind in SECTION_TYPES.items():
        declared = {s.key: s for s in in_section(section)}
        fields = {f.name: f for f in dataclasses.fields(kind)}
        assert set(fields) == set(declared), section
        for name, field in fields.items():
            if field.default is not dataclasses.MISSING:
                assert declared[name].parse(declared[name].default) == field.default, (section, name)
    upstream_fields = {f.name for f in dataclasses.fields(UpstreamConfig)} - {"name", "cors"}
    assert upstream_fields == {s.key for s in in_section(UPSTREAM)}
    assert {s.key for s in upstream_settings()} - upstream_fields == {
        s.key for s in in_section("cors")}  # the [cors] keys, which an upstream may set for itself


def test_the_readme_table_is_the_declarations() -> None:
    """README's configuration table is what ``python -m bridge.config`` prints: a setting added,
    renamed or documented differently shows up here until the README is regenerated."""
    from pathlib import Path

    from bridge.config.settings import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = "<!-- settings: python -m bridge.config -->\n", "<!-- /settings -->"
    assert start in readme and end in readme
    assert readme.split(start, 1)[1].split(end, 1)[0] == settings_table()


# --- values from the environment: split first, expanded whole, never printed ---


def test_a_secret_holding_a_semicolon_is_one_header_value() -> None:
    config = parse_config("[upstream:a]\nurl = http://h/\nheaders = X-Api-Key: ${SPLIT}\n", "t.ini",
                          env={"SPLIT": "k1; X-Injected: yes"})
    assert config.upstreams["a"].headers == (("X-Api-Key", "k1; X-Injected: yes"),)
    config = parse_config("[upstream:a]\nurl = http://h/\nheaders = X-Api-Key: ${KEY}; X-Other: o\n",
                          "t.ini", env={"KEY": "k3y;tail"})
    assert config.upstreams["a"].headers == (("X-Api-Key", "k3y;tail"), ("X-Other", "o"))


@pytest.mark.parametrize(("text", "secret"), [
    ("[upstream:a]\nurl = ${URL}\n", "ftp://user:hunter2@h/"),
    ("[upstream:a]\nurl = http://h/\ntimeout = ${T}\n", "hunter2-seconds"),
    ("[upstream:a]\nurl = http://h/\nheaders = X-Api-Key: ${KEY}\n", "hunter2\r\nX-Evil: 1"),
    ("[cors]\nallow_origins = ${ORIGINS}\n", "https://ok.example hunter2"),
    ("[cache]\nbackend = ${REDIS}\n", "memcached://:hunter2@cache:11211"),
    ("[limits]\nper_client = ${RATE}\n", "hunter2/fortnight"),
], ids=["url", "timeout", "header-value", "origin-list", "backend", "rate"])
def test_no_error_prints_what_the_environment_gave(text: str, secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.ini", env={"URL": secret, "T": secret, "KEY": secret, "ORIGINS": secret,
                                         "REDIS": secret, "RATE": secret})
    message = str(caught.value)
    assert "hunter2" not in message and "\n" not in message
    assert "${" in message or "control character" in message  # it names the variable, or the fault


def test_a_configured_header_may_not_be_one_the_transport_writes() -> None:
    for name in ("Host", "Content-Length", "transfer-encoding", "Connection", "Upgrade"):
        with pytest.raises(ConfigError) as caught:
            parse_config(f"[upstream:a]\nurl = http://h/\nheaders = {name}: x\n", "t.ini", env={})
        assert "[upstream:a] headers" in str(caught.value)


@pytest.mark.parametrize("token", ["short", "has a space in it!!", "zq\tzqzqzqzqzqzqzqzqzqzq"])
def test_a_weak_admin_token_stops_start_up_without_printing_it(token: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[admin]\ntoken = ${T}\n", source="t.ini", env={"T": token})
    message = str(caught.value)
    assert message.startswith("t.ini: [admin] token:") and "16 printable characters" in message
    assert token not in message and "\n" not in message


def test_the_admin_token_is_never_in_a_repr() -> None:
    config = parse_config("[admin]\ntoken = ${T}\n", source="t.ini",
                          env={"T": "a-long-secret-admin-token-0123"})
    assert config.admin.token == "a-long-secret-admin-token-0123"
    assert "a-long-secret" not in repr(config)
