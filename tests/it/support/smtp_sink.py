#!/usr/bin/env python3
"""A real SMTP server for the integration tests (aiosmtpd): every message it accepts is written
to a folder as an .eml file. With --cert/--key it offers STARTTLS and requires it."""
import argparse
import logging
import os
import ssl
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.folder, f"{time.time_ns()}-{self.count}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


def main():
    # Refused TLS handshakes are part of the tests; keep their tracebacks out of the output.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    # AUTH without TLS is allowed on purpose for the plain-relay tests.
    warnings.filterwarnings("ignore", message="Requiring AUTH")
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--implicit", action="store_true", help="TLS from the first byte (port 465 style)")
    parser.add_argument("--auth", help="require AUTH with user:password")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    options = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
            return AuthResult(success=ok)

        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if args.implicit:
        options.update(ssl_context=context)
    else:
        options.update(tls_context=context, require_starttls=context is not None)
    controller = Controller(Sink(args.dir), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    print("ready", flush=True)
    # Runs until the test kills it or closes stdin.
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
