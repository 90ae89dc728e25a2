# Serves moto (with the fixes above it) the way `moto.server.main` does, on waitress instead of
# werkzeug's development server. Speed, not behaviour: the same WSGI application answers.
#
# werkzeug's server starts a thread per connection, parses HTTP in Python, formats a log line
# through `logging` for every request, and closes each connection after one answer; for a
# plan's ~70 reads in flight that cost more of the single Python process's time than moto's
# own handlers, and each call queued behind it. waitress reads requests on one I/O thread, runs the application on a
# fixed pool and keeps connections open for the SDK's pool: the engine benchmark's emulator
# time per call halves (README, "How deep plan and apply go").
#
# Arguments as moto's own server takes them: -H host -p port.
import argparse
import logging
import os
import resource
import signal
import sys

import moto.moto_server.werkzeug_app as _werkzeug_app
import waitress


def _logged(app):
    """One line per request on stderr (`moto.log`), as moto's own server writes: the request
    line and the status, without werkzeug's per-request formatting."""

    def logged(environ, start_response):
        query = environ.get("QUERY_STRING")
        target = environ.get("PATH_INFO", "") + ("?" + query if query else "")
        line = f'"{environ.get("REQUEST_METHOD")} {target} {environ.get("SERVER_PROTOCOL")}"'

        def start(status, headers, exc_info=None):
            sys.stderr.write(f"{line} {status.split(' ', 1)[0]}\n")
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def _serve(argv):
    parser = argparse.ArgumentParser(prog="moto_serve")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    # moto builds some of its URLs (queue URLs, presigned posts) from the port it serves on.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    # moto makes a boto3 client per service to read its routes, and botocore then looks for
    # credentials down to the EC2 instance metadata endpoint: off EC2 a connect timeout that
    # held one of the pool's threads (and on a burst, several). moto needs no credentials.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # waitress warns on every request that waits for a free thread: with a plan's ~70 reads
    # in flight, dozens of lines per plan in moto.log, each one formatted by `logging`.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    app = _logged(_werkzeug_app.DomainDispatcherApplication(_werkzeug_app.create_backend_app))
    # Every client keeps its connections open for reuse (the SDK's pool holds an idle one for
    # 90 s; waitress closes one after 120 s idle): `up` alone holds dozens, and each plan in
    # another terminal opens ~70 more. At waitress's default limit of 100, new connections
    # were left unaccepted until old ones timed out, and a command stalled for two minutes.
    # So the limit is far above what the clients open, and the process may hold that many.
    connection_limit = 2000
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = connection_limit + 256
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            connection_limit = min(connection_limit, target - 256)
    except (ValueError, OSError):
        pass
    # One Python process serves every request: more threads than this only contend for the GIL.
    # A poll()-based loop has no select()'s limit of 1024 descriptors.
    waitress.serve(
        app,
        host=args.host,
        port=args.port,
        threads=8,
        connection_limit=connection_limit,
        ident="moto",
        asyncore_use_poll=True,
        _quiet=True,
    )


_serve(sys.argv[1:])
