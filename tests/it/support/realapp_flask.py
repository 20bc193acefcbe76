#!/usr/bin/env python3
"""Real Python app servers for the integration tests (tests/it/realapps.rs), on 127.0.0.1:PORT.

Default: a Flask app on werkzeug's own threaded server, with the login styles real apps have:
  /login           form POST, flash-and-redirect: a wrong or missing password flashes a message
                   (so Flask sets its `session` cookie on the failure too) and redirects to /login;
                   the right one stores the user in the session and redirects to /.
  /login-get       GET with ?username=&password= in the query: logs in and redirects to /.
  /login-override  method override, the way the classic Flask middleware snippet does it:
                   X-HTTP-Method-Override on ANY request rewrites the method (a body-less target
                   method empties the body); `_method` in a POSTed form does the same. The GET
                   handler logs in from the query string, the POST handler from request.values
                   (query and form together).
  /                needs a login; "Hello <user>".
  /whoami          JSON: the user the app's session names and the proxy's X-Twofa-User header.
  /logout          clears the session.
Account names are looked up folded the Django way (NFKC, then casefold) after trimming, and a
`;parameters` tail is dropped (RFC 5092's `user;AUTH=...`), so `ａｌｉｃｅ`, `ALICE` and `alice;x=1`
all sign in as alice. Cookies are read by werkzeug itself (names trimmed, first of two wins).

--hypercorn: a bare ASGI app on hypercorn (h2c upgrade on, as hypercorn has by default) that
answers every request with JSON of the method, path, HTTP version and headers it received, and
lists all of them at GET /__seen.

Prints "ready" once listening; exits when stdin closes (the test process went away) or on kill.
"""
import argparse
import os
import sys
import threading
import unicodedata

ACCOUNTS = {"alice": "wonderland", "mallory": "mallory", "carol": "singer"}


def fold(name):
    """The account a typed name reaches in this app."""
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    return folded.split(";", 1)[0].strip()


def check(name, password):
    """The account name if the password is right, else None."""
    if name is None or password is None:
        return None
    account = fold(name)
    expected = ACCOUNTS.get(account)
    if expected is not None and password == expected:
        return account
    return None


def flask_app():
    from flask import Flask, flash, jsonify, redirect, request, session

    app = Flask(__name__)
    app.secret_key = os.urandom(32)

    login_form = (
        '<form method="post" action="/login">'
        '<input name="username"><input name="password" type="password">'
        '<button>Sign in</button></form>'
    )

    def identity():
        """The proxy's X-Twofa-User (WSGI hands headers over as Latin-1; the proxy sends UTF-8)."""
        raw = request.headers.get("X-Twofa-User")
        return None if raw is None else raw.encode("latin1").decode("utf-8", "replace")

    def logged_in(account):
        session.clear()
        session["user"] = account
        return redirect("/")

    @app.get("/login")
    def login_page():
        from flask import get_flashed_messages

        notes = "".join(f"<p>{m}</p>" for m in get_flashed_messages())
        return f"<h1>Sign in</h1>{notes}{login_form}"

    @app.post("/login")
    def login():
        account = check(request.form.get("username"), request.form.get("password"))
        if account is None:
            flash("Wrong name or password.")
            return redirect("/login")
        return logged_in(account)

    @app.post("/login-next")
    def login_next():
        """The Flask-Login tutorial's login: on success, back to the same-site `next`."""
        from urllib.parse import urlsplit

        if session.get("user") is not None and request.form.get("username") is None:
            return redirect("/")
        account = check(request.form.get("username"), request.form.get("password"))
        if account is None:
            flash("Wrong name or password.")
            return redirect("/login")
        session.clear()
        session["user"] = account
        target = request.args.get("next")
        if not target or urlsplit(target).netloc != "":
            target = "/"
        return redirect(target)

    @app.get("/login-get")
    def login_get():
        account = check(request.args.get("username"), request.args.get("password"))
        if account is None:
            flash("Wrong name or password.")
            return redirect("/login")
        return logged_in(account)

    @app.route("/login-override", methods=["GET", "POST"])
    def login_override():
        if request.method == "POST" and request.form.get("_method", "").upper() == "GET":
            source = request.args
        elif request.method == "GET":
            source = request.args
        else:
            source = request.values
        account = check(source.get("username"), source.get("password"))
        if account is None:
            flash("Wrong name or password.")
            return redirect("/login")
        return logged_in(account)

    @app.get("/")
    def home():
        user = session.get("user")
        if user is None:
            return redirect("/login")
        return f"<h1>Hello {user}</h1><p>proxy identity: {identity() or ''}</p>"

    @app.get("/whoami")
    def whoami():
        body = {"user": session.get("user"), "identity": identity()}
        return jsonify(body), (200 if body["user"] else 401)

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        session.clear()
        return redirect("/login")

    app.wsgi_app = MethodOverride(app.wsgi_app)
    return app


class MethodOverride:
    """X-HTTP-Method-Override, as the widely copied Flask snippet does it: honoured on any
    request, and a body-less target method drops the body."""

    allowed = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    bodyless = {"GET", "HEAD", "OPTIONS", "DELETE"}

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if method in self.allowed:
            environ["REQUEST_METHOD"] = method
        if method in self.bodyless:
            environ["CONTENT_LENGTH"] = "0"
        return self.app(environ, start_response)


SEEN = []


async def echo_app(scope, receive, send):
    """ASGI: every request answered with what the server handed the app, and remembered;
    GET /__seen lists every request seen so far."""
    import json

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    if scope["path"] == "/__seen":
        body = json.dumps(SEEN).encode()
    else:
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "http_version": scope["http_version"],
            "headers": [[k.decode("latin1"), v.decode("latin1")] for k, v in scope["headers"]],
        }
        SEEN.append(seen)
        body = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def exit_when_stdin_closes():
    def watch():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve_flask(port):
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", port, flask_app(), threaded=True)
    print("ready", flush=True)
    server.serve_forever()


def serve_hypercorn(port):
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(serve(echo_app, config, shutdown_trigger=stop.wait))
        # hypercorn binds inside serve(): say ready once the port answers.
        for _ in range(400):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.025)
        print("ready", flush=True)
        await task

    asyncio.run(main())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hypercorn", action="store_true", help="the ASGI echo app on hypercorn")
    args = parser.parse_args()
    exit_when_stdin_closes()
    if args.hypercorn:
        serve_hypercorn(args.port)
    else:
        serve_flask(args.port)


if __name__ == "__main__":
    main()
