"""Start a peer server that has no command line of its own (run by bench/run.py).

    python serve_peer.py SERVER PORT MODULE:CALLABLE THREADS

SERVER is one of bjoern, meinheld, pyruvate, cheroot. Each is configured as its documentation
shows for one process; the choices are listed in docs/benchmarks.md ("How each server runs").
"""

import importlib
import sys


def load(target):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main():
    server, port, target, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    app = load(target)
    host = "127.0.0.1"
    if server == "bjoern":
        import bjoern

        bjoern.run(app, host, port)  # single-threaded libev loop, keep-alive on
    elif server == "meinheld":
        from meinheld import server as mh

        mh.listen((host, port))
        mh.set_access_logger(None)
        mh.set_keepalive(30)  # keep-alive is off unless a timeout is set
        mh.set_backlog(1024)
        mh.run(app)
    elif server == "pyruvate":
        import pyruvate

        # Its defaults, as its documentation shows: keep-alive off (max_reuse_count=0) and no
        # chunked responses. In 1.6.1 a connection kept alive (max_reuse_count > 0) never gets
        # an answer to its second request, and chunked_transfer=True appends "0\r\n\r\n" after
        # responses that have a Content-Length, so neither can be measured.
        pyruvate.serve(app, f"{host}:{port}", threads)
    elif server == "cheroot":
        from cheroot import wsgi

        srv = wsgi.Server((host, port), app, numthreads=threads, request_queue_size=1024)
        try:
            srv.start()
        except KeyboardInterrupt:
            srv.stop()
    else:
        sys.exit(f"unknown server {server!r}")


if __name__ == "__main__":
    main()
