#!/usr/bin/env python3
"""SMTP sink for certkeep's notification tests (Debian python3-aiosmtpd).

Listens on 127.0.0.1:PORT and writes each accepted message to DIR/<n>.eml, prefixed with an
`X-Envelope-To:` line naming the envelope recipients. With --fail-first the first message is
answered `451` (a transient refusal) and not written. Runs until killed.
"""
import argparse
import os
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out, fail_first):
        self.out = out
        self.fail_first = fail_first
        self.seen = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.seen += 1
            n = self.seen
        if self.fail_first and n == 1:
            return "451 4.3.0 try again later"
        path = os.path.join(self.out, f"{n}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 OK queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--fail-first", action="store_true")
    a = p.parse_args()
    controller = Controller(Sink(a.dir, a.fail_first), hostname="127.0.0.1", port=a.port)
    controller.start()
    print("READY", flush=True)
    try:
        threading.Event().wait()  # until the test kills us
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
