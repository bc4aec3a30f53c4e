"""The bridge's configuration: one INI file read once at start-up into frozen dataclasses.

Every section and key is declared once, in ``SECTIONS`` and ``UPSTREAM_KEYS`` below, with its parser and
default; anything else in the file is an error. A bad value stops start-up with a single line that names
the file, the section and the key (``wsgi.ini: [cors] allow_origins: ...``). ``${VAR}`` in a value reads
the environment, so secrets such as API keys stay out of the file. This module only reads and validates;
it never changes anything after start-up, and it knows nothing about Flask.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .policy.cors import CorsPolicy, OriginPattern, parse_origin_pattern

DEFAULT_EXPOSE_HEADERS = ("ETag", "Cache-Status", "Age", "X-Request-ID", "Retry-After")
MAX_AGE_CAP = 7200  # Chromium caps Access-Control-Max-Age at 2 hours; more is a promise nobody keeps
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
MIB = 1024 * 1024
WILDCARD_WITH_CREDENTIALS = ("allow_origins = * cannot be combined with allow_credentials = true: "
                             "browsers refuse credentials with a wildcard origin; list the origins")


class ConfigError(Exception):
    """A configuration mistake, rendered as one line naming file, section and key."""

    def __init__(self, source: str, section: str | None, key: str | None, message: str) -> None:
        self.source, self.section, self.key, self.message = source, section, key, message
        where = source
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {message}")


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError ---


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _positive_int(raw: str) -> int:
    value = _non_negative_int(raw)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a finite number not below 0, got {raw.strip()}")
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError("must be more than 0")
    return value


_SIZE = re.compile(r"^(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": MIB,
               "gb": 1000**3, "gib": 1024**3}


def _size(raw: str) -> int:
    """A byte count: ``1048576``, ``512 KiB``, ``64 MiB``."""
    match = _SIZE.match(raw.strip())
    if not match:
        if raw.strip().startswith("-"):
            raise ValueError(f"must not be negative, got {raw.strip()}")
        raise ValueError(f"expected a size such as 65536 or 64 MiB, got {raw!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _text(raw: str) -> str:
    return raw.strip()


def _bind(raw: str) -> str:
    value = raw.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8000, got {raw!r}")
    return value


def _header_names(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n for n in re.split(r"[\s,]+", raw.strip()) if n))
    for name in names:
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
    return names


def _methods(raw: str) -> frozenset[str]:
    methods = frozenset(m.upper() for m in re.split(r"[\s,]+", raw.strip()) if m)
    if not methods:
        raise ValueError("list at least one method")
    unknown = sorted(methods - HTTP_METHODS)
    if unknown:
        raise ValueError(f"unsupported method {unknown[0]}; choose from {', '.join(sorted(HTTP_METHODS))}")
    return methods


def _origins(raw: str) -> tuple[OriginPattern, ...] | None:
    """Space-separated origins or ``https://*.example.org`` patterns; ``*`` alone means any (None)."""
    items = raw.split()
    if items == ["*"]:
        return None
    if "*" in items:
        raise ValueError("'*' means every origin and cannot be combined with other origins")
    return tuple(parse_origin_pattern(item) for item in items)


def _callback_param(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value) or value in {"_", "envelope"}:
        raise ValueError(f"expected a query parameter name other than _ and envelope, got {raw!r}")
    return value


def _max_age(raw: str) -> int:
    return min(_non_negative_int(raw), MAX_AGE_CAP)


def _upstream_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"must be an http:// or https:// url, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"names no host: {value!r}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment; it is the base that paths join below")
    if parts.username or parts.password:
        raise ValueError("must not carry user:password; send credentials with the headers key")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"has an invalid port: {value!r}") from None
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _upstream_headers(raw: str) -> tuple[tuple[str, str], ...]:
    """``Name: value`` pairs, one a line (or separated by ``;``), sent to the upstream server-side."""
    headers = []
    for line in re.split(r"[\n;]", raw):
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not HEADER_NAME.match(name):
            raise ValueError(f"expected 'Name: value', got {line!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {name} contains a control character")
        headers.append((name, value))
    return tuple(headers)


def _rate_limit(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^\d+\s*(/|per)\s*\d*\s*[a-z]+(\s*[;,]\s*\d+\s*(/|per)\s*\d*\s*[a-z]+)*$",
                              value, re.IGNORECASE):
        raise ValueError(f"expected a rate such as 600/minute, got {raw!r}")
    if value:
        from limits import parse_many  # the budgets' own parser: what it accepts, we accept

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"expected a rate such as 600/minute (units: second, minute, hour, "
                             f"day, month, year), got {raw!r}") from None
    return value


def _cache_backend(raw: str) -> str:
    value = raw.strip()
    if value == "memory":
        return value
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"} or not (parts.hostname or parts.path):
        raise ValueError(f"expected memory or redis://host:port/db, got {raw!r}")
    return value


# --- the declaration of every key: section -> key -> (parser, default raw value) ---

Parser = Callable[[str], Any]
SECTIONS: dict[str, dict[str, tuple[Parser, str]]] = {
    "server": {
        "bind": (_bind, "127.0.0.1:8000"),
        "workers": (_positive_int, "2"),
        "threads": (_positive_int, "8"),
        "worker_class": (_text, "gthread"),
        "trusted_proxies": (_non_negative_int, "0"),
        "reuse_port": (_bool, "false"),
        "fair_accept": (_bool, "true"),
    },
    "cors": {
        "allow_origins": (_origins, ""),
        "allow_credentials": (_bool, "false"),
        "allow_headers": (_header_names, "Content-Type"),
        "expose_headers": (_header_names, " ".join(DEFAULT_EXPOSE_HEADERS)),
        "max_age": (_max_age, "600"),
    },
    "jsonp": {
        "callback_param": (_callback_param, "callback"),
        "max_callback_length": (_positive_int, "128"),
    },
    "cache": {
        "backend": (_cache_backend, "memory"),
        "ttl": (_non_negative_int, "60"),
        "max_bytes": (_size, "64 MiB"),
        "stale_if_error": (_non_negative_int, "0"),
        "negative_ttl": (_non_negative_int, "0"),
    },
    "limits": {
        "per_client": (_rate_limit, ""),
        "max_request_body": (_size, "10 MiB"),
        "max_upstream_body": (_size, "10 MiB"),
        "max_url_length": (_positive_int, "8192"),
        "max_query_params": (_positive_int, "100"),
        "max_json_depth": (_positive_int, "64"),
    },
}
UPSTREAM_KEYS: dict[str, tuple[Parser, str | None]] = {
    "url": (_upstream_url, None),
    "methods": (_methods, "GET HEAD"),
    "timeout": (_positive_float, "10"),
    "headers": (_upstream_headers, ""),
    "forward_headers": (_header_names, ""),
    "jsonp": (_bool, "true"),
    "ttl": (_non_negative_int, None),  # None: the [cache] ttl
    "allow_private": (_bool, "false"),
    "per_client": (_rate_limit, ""),
    # per-upstream overrides of the [cors] keys; None: take [cors]'s value
    "allow_origins": (_origins, None),
    "allow_credentials": (_bool, None),
    "allow_headers": (_header_names, None),
    "expose_headers": (_header_names, None),
    "max_age": (_max_age, None),
}
CORS_KEYS = ("allow_origins", "allow_credentials", "allow_headers", "expose_headers", "max_age")


# --- the typed result ---


@dataclass(frozen=True)
class ServerConfig:
    bind: str
    workers: int
    threads: int
    worker_class: str
    trusted_proxies: int
    reuse_port: bool = False
    fair_accept: bool = True


@dataclass(frozen=True)
class JsonpConfig:
    callback_param: str
    max_callback_length: int


@dataclass(frozen=True)
class CacheConfig:
    backend: str
    ttl: int
    max_bytes: int
    stale_if_error: int
    negative_ttl: int


@dataclass(frozen=True)
class LimitsConfig:
    per_client: str
    max_request_body: int
    max_upstream_body: int
    max_url_length: int
    max_query_params: int
    max_json_depth: int


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: str
    methods: frozenset[str]
    timeout: float
    headers: tuple[tuple[str, str], ...]
    forward_headers: tuple[str, ...]
    jsonp: bool
    ttl: int
    allow_private: bool
    per_client: str
    cors: CorsPolicy

    def public_view(self) -> dict[str, Any]:
        """What /apis may tell anyone: never the url (it can hold a secret) nor the injected headers."""
        return {
            "name": self.name,
            "methods": sorted(self.methods),
            "jsonp": self.jsonp,
            "cors": self.cors.allows_any_origin or bool(self.cors.origins),
        }


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    cors: CorsPolicy
    jsonp: JsonpConfig
    cache: CacheConfig
    limits: LimitsConfig
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)


# --- reading ---

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(raw: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name not in env:
            if default is not None:
                return default
            raise ValueError(f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(substitute, raw)


def _cors_policy(values: Mapping[str, Any]) -> CorsPolicy:
    origins = values["allow_origins"]
    return CorsPolicy(
        origins=origins if origins is not None else (),
        allows_any_origin=origins is None,
        allow_credentials=values["allow_credentials"],
        allow_headers=values["allow_headers"],
        expose_headers=values["expose_headers"],
        max_age=values["max_age"],
    )


def parse_config(text: str, source: str = "<config>", env: Mapping[str, str] | None = None,
                 ) -> Config:
    """Parse INI text into a Config, or raise ConfigError naming source, section and key."""
    env = os.environ if env is None else env
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=source)
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(source, exc.section, None, "section appears twice") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(source, exc.section, exc.option, "key appears twice") from None
    except configparser.Error as exc:
        message = str(exc).splitlines()[0]
        raise ConfigError(source, None, None, f"not a valid INI file: {message}") from None

    def read(section: str, key: str, parse: Parser, raw: str) -> Any:
        try:
            return parse(_expand_env(raw, env))
        except ValueError as exc:
            raise ConfigError(source, section, key, str(exc)) from None

    values: dict[str, dict[str, Any]] = {}
    upstream_sections = []
    for section in parser.sections():
        if section.startswith("upstream:"):
            upstream_sections.append(section)
            continue
        if section not in SECTIONS:
            known = ", ".join([*SECTIONS, "upstream:NAME"])
            raise ConfigError(source, section, None, f"unknown section; known sections: {known}")
        for key in parser[section]:
            if key not in SECTIONS[section]:
                known = ", ".join(SECTIONS[section])
                raise ConfigError(source, section, key, f"unknown key; known keys: {known}")
    for section, keys in SECTIONS.items():
        given = parser[section] if parser.has_section(section) else {}
        values[section] = {
            key: read(section, key, parse, given.get(key, default))
            for key, (parse, default) in keys.items()
        }

    cors = values["cors"]
    if cors["allow_origins"] is None and cors["allow_credentials"]:
        raise ConfigError(source, "cors", "allow_credentials", WILDCARD_WITH_CREDENTIALS)
    default_policy = _cors_policy(cors)

    upstreams: dict[str, UpstreamConfig] = {}
    for section in upstream_sections:
        name = section.partition(":")[2]
        if not UPSTREAM_NAME.match(name):
            raise ConfigError(source, section, None,
                              "upstream names use letters, digits, '-' and '_' (at most 63)")
        given = parser[section]
        for key in given:
            if key not in UPSTREAM_KEYS:
                known = ", ".join(UPSTREAM_KEYS)
                raise ConfigError(source, section, key, f"unknown key; known keys: {known}")
        if "url" not in given:
            raise ConfigError(source, section, "url", "missing; every upstream needs a base url")
        up: dict[str, Any] = {key: (read(section, key, parse, given[key]) if key in given
                    else (parse(default) if default is not None else None))
              for key, (parse, default) in UPSTREAM_KEYS.items()}
        merged_cors = {key: (up[key] if key in given else cors[key]) for key in CORS_KEYS}
        if merged_cors["allow_origins"] is None and merged_cors["allow_credentials"]:
            key = "allow_credentials" if "allow_credentials" in given else "allow_origins"
            raise ConfigError(source, section, key, WILDCARD_WITH_CREDENTIALS)
        upstreams[name] = UpstreamConfig(
            name=name,
            url=up["url"],
            methods=up["methods"],
            timeout=up["timeout"],
            headers=up["headers"],
            forward_headers=up["forward_headers"],
            jsonp=up["jsonp"],
            ttl=values["cache"]["ttl"] if up["ttl"] is None else up["ttl"],
            allow_private=up["allow_private"],
            per_client=up["per_client"],
            cors=_cors_policy(merged_cors) if any(k in given for k in CORS_KEYS)
            else default_policy,
        )

    return Config(
        source=source,
        server=ServerConfig(**values["server"]),
        cors=default_policy,
        jsonp=JsonpConfig(**values["jsonp"]),
        cache=CacheConfig(**values["cache"]),
        limits=LimitsConfig(**values["limits"]),
        upstreams=upstreams,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, None, f"cannot read: {exc}") from None
    return parse_config(text, source=source, env=env)
