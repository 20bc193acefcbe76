#!/usr/bin/env python3
"""A real SMTP server for the integration tests (aiosmtpd): every message it accepts is written
to a folder as an .eml file. With --cert/--key it offers STARTTLS and requires it."""
import argparse
import logging
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    controller = Controller(
        Sink(args.dir),
        hostname="127.0.0.1",
        port=args.port,
        tls_context=context,
        require_starttls=context is not None,
    )
    controller.start()
    print("ready", flush=True)
    # Runs until the test kills it or closes stdin.
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
