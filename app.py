"""Entry point: ``python app.py [--config F] [--bind H:P] [--workers N]`` serves the bridge under gunicorn.

``gunicorn app:app`` works too: the ``app`` attribute is built on first access from the config file
named by ``BRIDGE_CONFIG`` (default ``wsgi.ini``), so importing this module reads nothing. A bad config
stops start-up with one line naming file, section and key, and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from bridge import create_app
from bridge.config import Config, load_or_exit

DEFAULT_CONFIG = "wsgi.ini"


def gunicorn_options(config: Config, bind: str | None, workers: int | None) -> dict[str, Any]:
    slowest = max((u.timeout for u in config.upstreams.values()), default=10.0)
    server = config.server
    reuse_port = server.reuse_port and server.worker_class != "sync"
    return {
        "bind": bind or server.bind,
        "workers": workers or server.workers,
        "threads": server.threads,
        "worker_class": worker_class(config, workers or server.workers, reuse_port),
        # A worker is only killed as stuck well after the slowest upstream's own deadline.
        "timeout": int(slowest * 2 + 30),
        "graceful_timeout": 10,
        "keepalive": 5,
        "preload_app": True,
        # [server] reuse_port: each worker listens on its own SO_REUSEPORT socket and the kernel
        # spreads connections over them (on one shared socket, a burst of connections can all go
        # to one worker). Never for sync workers: one the kernel hands a connection while it is
        # busy would hold it until its request ends, while another worker idles.
        "reuse_port": reuse_port,
        # The request-line and header limits: see README "Limits".
        "limit_request_line": min(config.limits.max_url_length, 8190),
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        # Metrics: each worker counts into its own files; a dead worker's live gauges are dropped.
        "child_exit": _mark_worker_dead,
    }


def worker_class(config: Config, workers: int, reuse_port: bool) -> Any:
    """gunicorn's worker class for ``[server]``, the bridge's own (bridge/ops/workers.py): refusals in
    JSON, and for gthread a fair share of a burst of connections unless ``fair_accept = false`` or each
    worker has its own socket (``reuse_port``), where the kernel spreads them. The table the workers
    share is made here, in the master, before they fork. Other worker types are gunicorn's own."""
    from bridge.ops.workers import BridgeSyncWorker, BridgeThreadWorker, FairThreadWorker, WorkerTable

    kind = config.server.worker_class
    if kind == "sync" and config.server.threads > 1:
        kind = "gthread"  # as gunicorn itself reads sync with threads
    if kind == "sync":
        return BridgeSyncWorker
    if kind != "gthread":
        return kind
    if not config.server.fair_accept or reuse_port:
        return BridgeThreadWorker
    FairThreadWorker.table = WorkerTable(rows=2 * workers + 2)  # room for replacements
    return FairThreadWorker


def _mark_worker_dead(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    from bridge.ops.workers import worker_exited

    multiprocess.mark_process_dead(worker.pid)
    worker_exited(worker.pid)


def fresh_metrics_dir() -> str:
    """A new, empty PROMETHEUS_MULTIPROC_DIR for this server's workers, set before any metric exists.

    prometheus-client chooses its multiprocess mode when first imported, so this runs before the app
    is built; a fresh directory keeps counts from an earlier run out of this one's.
    """
    path = tempfile.mkdtemp(prefix="bridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def address_in_use(bind: str) -> bool:
    """Whether something already listens on HOST:PORT. With ``reuse_port`` gunicorn's workers bind
    with SO_REUSEPORT, which would let a second bridge on the same port start and silently share
    its traffic; a plain bind (no SO_REUSEPORT) fails on any listener, so this asks first."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return False  # gunicorn reports an address it cannot use in its own words
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: TIME_WAIT is fine
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("BRIDGE_CONFIG", DEFAULT_CONFIG),
                        help="the INI file (default: $BRIDGE_CONFIG or wsgi.ini)")
    parser.add_argument("--bind", help="HOST:PORT, overrides [server] bind")
    parser.add_argument("--workers", type=int, help="overrides [server] workers")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)
    config = load_or_exit(args.config)
    if args.check:
        print(f"{args.config}: ok, {len(config.upstreams)} upstream(s)")
        return
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    bind = args.bind or config.server.bind
    if gunicorn_options(config, bind, None)["reuse_port"] and address_in_use(bind):
        sys.exit(f"error: {bind} is already in use (another bridge?); stop it or choose another "
                 "--bind or [server] bind")

    from gunicorn.app.base import BaseApplication

    metrics_dir = fresh_metrics_dir()
    class BridgeServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(config, args.bind, args.workers).items():
                self.cfg.set(key, value)
            # on_exit runs in the master only (workers leave through SystemExit too, so a
            # try/finally here would delete the directory under the surviving workers).
            self.cfg.set("on_exit", lambda server: shutil.rmtree(metrics_dir, ignore_errors=True))

        def load(self) -> Any:
            # The app's own WSGI callable (the proxy road mounted in front of Flask's routes): all
            # that Flask.__call__ would do is call it.
            return create_app(config).wsgi_app

    BridgeServer().run()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("explain", "probe", "purge"):
        from bridge.site.cli import main as cli_main

        raise SystemExit(cli_main(argv))
    serve(argv)


def __getattr__(name: str) -> Any:
    """``gunicorn app:app``: build the app on first access, not at import."""
    if name == "app":
        application = create_app(load_or_exit(os.environ.get("BRIDGE_CONFIG", DEFAULT_CONFIG)))
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
