"""The bridge's configuration: one INI file read once at start-up into frozen dataclasses.

The keys, parsers and defaults are ``settings.SETTINGS``; anything else in the file is an error, and a
bad value stops start-up with one line naming the file, the section and the key
(``wsgi.ini: [cors] allow_origins: ...``). ``${VAR}`` (or ``${VAR:-default}``) in a value reads the
environment, so secrets stay out of the file; no error message ever prints what the environment gave
(it names the variable instead). ``load_or_exit`` is the one way the commands read their config. This
package only reads and validates; it never changes anything after start-up and knows nothing of Flask.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..policy.cors import CorsPolicy
from ..policy.jsonp import CallbackPattern
from . import values
from .settings import SECTIONS, UPSTREAM, Setting, in_section, upstream_settings


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


# --- the typed result (tests/test_config.py checks each against settings.SETTINGS) ---


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
    allow_callbacks: tuple[CallbackPattern, ...] | None


@dataclass(frozen=True)
class CacheConfig:
    backend: str
    ttl: int
    heuristic: bool
    max_bytes: int
    stale_if_error: int
    negative_ttl: int
    stale_while_revalidate: int


@dataclass(frozen=True)
class AdminConfig:
    token: str  # "" when purging is off

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"AdminConfig(token={'set' if self.token else 'unset'})"


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
    stale_while_revalidate: int
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
    admin: AdminConfig
    upstreams: Mapping[str, UpstreamConfig] = field(default_factory=dict)


SECTION_TYPES = {"server": ServerConfig, "jsonp": JsonpConfig, "cache": CacheConfig,
                 "limits": LimitsConfig, "admin": AdminConfig}


# --- reading ---

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Expander:
    """``${VAR}`` expansion for one value, remembering what the environment gave so that an error
    message can say ``${VAR}`` where the value would have stood."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.given: dict[str, str] = {}  # variable -> the text it gave

    def __call__(self, raw: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name not in self.env:
                if default is not None:
                    return default
                raise ValueError(f"environment variable {name} is not set")
            self.given[name] = self.env[name]
            return self.env[name]

        return _ENV_REF.sub(substitute, raw)

    def mask(self, message: str) -> str:
        """``message`` with everything the environment gave (the whole value, and each word of it)
        replaced by the variable's name."""
        for name, text in self.given.items():
            pieces = {text, *(p for p in re.split(r"[\s,;:]+", text) if len(p) >= 3)}
            for piece in sorted(pieces, key=len, reverse=True):
                if piece:
                    message = message.replace(piece, f"${{{name}}}")
        return message


def _read(source: str, section: str, setting: Setting, raw: str, env: Mapping[str, str]) -> Any:
    expand = _Expander(env)
    try:
        if setting.parse is values.upstream_headers:  # splits the file's text before expanding
            return setting.parse(raw, expand)
        return setting.parse(expand(raw))
    except ValueError as exc:
        raise ConfigError(source, section, setting.key, expand.mask(str(exc))) from None


def _cors_policy(settings: Mapping[str, Any]) -> CorsPolicy:
    origins = settings["allow_origins"]
    return CorsPolicy(origins=origins if origins is not None else (), allows_any_origin=origins is None,
                      allow_credentials=settings["allow_credentials"],
                      allow_headers=settings["allow_headers"],
                      expose_headers=settings["expose_headers"], max_age=settings["max_age"])


def _ini(text: str, source: str) -> configparser.ConfigParser:
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
    return parser


def _known(source: str, section: str, given: Mapping[str, str], declared: tuple[Setting, ...]) -> None:
    keys = [s.key for s in declared]
    for key in given:
        if key not in keys:
            raise ConfigError(source, section, key, f"unknown key; known keys: {', '.join(keys)}")


def parse_config(text: str, source: str = "<config>", env: Mapping[str, str] | None = None,
                 ) -> Config:
    """Parse INI text into a Config, or raise ConfigError naming source, section and key."""
    env = os.environ if env is None else env
    parser = _ini(text, source)
    for section in parser.sections():
        if not section.startswith("upstream:") and section not in SECTIONS:
            known = ", ".join([*SECTIONS, UPSTREAM])
            raise ConfigError(source, section, None, f"unknown section; known sections: {known}")
    read: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        given = parser[section] if parser.has_section(section) else {}
        _known(source, section, given, in_section(section))
        read[section] = {s.key: _read(source, section, s, given.get(s.key, s.default or ""), env)
                         for s in in_section(section)}
    cors = read.pop("cors")
    if cors["allow_origins"] is None and cors["allow_credentials"]:
        raise ConfigError(source, "cors", "allow_credentials", values.WILDCARD_WITH_CREDENTIALS)
    default_policy = _cors_policy(cors)
    upstreams = {}
    for section in (s for s in parser.sections() if s.startswith("upstream:")):
        upstream = _upstream(source, section, parser[section], env, read["cache"], cors,
                             default_policy)
        upstreams[upstream.name] = upstream
    return Config(source=source, cors=default_policy, upstreams=upstreams,
                  **{section: SECTION_TYPES[section](**read[section]) for section in SECTION_TYPES})


def _upstream(source: str, section: str, given: Mapping[str, str], env: Mapping[str, str],
              cache: Mapping[str, Any], cors: Mapping[str, Any], default_policy: CorsPolicy,
              ) -> UpstreamConfig:
    name = section.partition(":")[2]
    if not values.UPSTREAM_NAME.match(name):
        raise ConfigError(source, section, None,
                          "upstream names use letters, digits, '-' and '_' (at most 63)")
    declared = upstream_settings()
    _known(source, section, given, declared)
    if "url" not in given:
        raise ConfigError(source, section, "url", "missing; every upstream needs a base url")
    read: dict[str, Any] = {
        s.key: _read(source, section, s, given[s.key], env) if s.key in given
        else (s.parse(s.default) if s.default is not None and not s.overridable else None)
        for s in declared}
    overrides = [s.key for s in declared if s.overridable]
    policy = default_policy
    if any(key in given for key in overrides):
        merged = {key: read[key] if key in given else cors[key] for key in overrides}
        if merged["allow_origins"] is None and merged["allow_credentials"]:
            key = "allow_credentials" if "allow_credentials" in given else "allow_origins"
            raise ConfigError(source, section, key, values.WILDCARD_WITH_CREDENTIALS)
        policy = _cors_policy(merged)
    return UpstreamConfig(
        name=name, url=read["url"], methods=read["methods"], timeout=read["timeout"],
        headers=read["headers"], forward_headers=read["forward_headers"], jsonp=read["jsonp"],
        ttl=cache["ttl"] if read["ttl"] is None else read["ttl"],
        stale_while_revalidate=cache["stale_while_revalidate"] if read["stale_while_revalidate"] is None
        else read["stale_while_revalidate"],
        allow_private=read["allow_private"],
        per_client=read["per_client"], cors=policy)


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


def load_or_exit(path: str | os.PathLike[str]) -> Config:
    """The config at ``path``, or the one line that says what is wrong on stderr and exit status 2:
    how every command of the bridge starts."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
