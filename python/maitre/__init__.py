"""maitre: a WSGI server with an HTTP engine in Rust, a drop-in for Waitress."""

import logging
import traceback

from .server import create_server

__all__ = ["__version__", "create_server", "serve", "serve_paste"]

# The package's version (pyproject.toml's; a test checks that they agree).
__version__ = "0.1.0"


def serve(app, **kw):
    """Serve the WSGI application ``app`` until interrupted.

    ``kw`` takes the arguments of :class:`maitre.adjustments.Adjustments`.
    ``_server``, ``_quiet`` and ``_profile`` are test hooks, as in Waitress.
    """
    _server = kw.pop("_server", create_server)
    _quiet = kw.pop("_quiet", False)
    _profile = kw.pop("_profile", False)
    if not _quiet:
        # Does nothing when logging is already configured.
        logging.basicConfig()
    server = _server(app, **kw)
    if not _quiet:
        server.print_listen("Serving on http://{}:{}")
    try:
        if _profile:
            _run_profiled(server)
        else:
            server.run()
    except BaseException:
        if _threads_in_app(server):
            # Report it now: the process cannot go through the interpreter's normal exit.
            traceback.print_exc()
            _exit_leaving_threads(server, 1)
        raise
    if _threads_in_app(server):
        _exit_leaving_threads(server, 0)


def _threads_in_app(server):
    # ``_server`` may make a server of another kind (a test double, as with Waitress).
    count = getattr(server, "threads_in_app", None)
    return count() if count is not None else 0


def _exit_leaving_threads(server, status):
    """The server is done; worker threads stuck in the app (past ``shutdown_timeout``) must not
    hold the process up (the bound is a promise) nor meet the interpreter's finalization."""
    from .server import _exit_now

    server.logger.warning(
        "Exiting with %d worker thread(s) still in the application", server.threads_in_app()
    )
    _exit_now(status)


def serve_paste(app, global_conf, **kw):
    """PasteDeploy server runner (``use = egg:maitre#main``)."""
    serve(app, **kw)
    return 0


def _run_profiled(server):
    """Run the server under cProfile and print the statistics when it stops."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    try:
        profiler.runcall(server.run)
    finally:
        stats = pstats.Stats(profiler)
        stats.strip_dirs()
        stats.sort_stats("cumulative", "calls", "time")
        stats.print_stats(0.3)
