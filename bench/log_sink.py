#!/usr/bin/env python3
"""A syslog sink for the benchmark: binds each PATH as a Unix datagram socket
and discards what arrives, so that modules calling syslog(3) (glibc writes to
/dev/log, and to the console when it is absent, which is slow) and mfad's
audit lines cost what they cost on a host with a syslog daemon.

usage: log_sink.py PATH...   (runs until killed; removes its sockets on exit)
"""
import os
import signal
import socket
import sys
import threading


def drain(sock: socket.socket) -> None:
    while True:
        sock.recv(65536)


def main() -> None:
    paths = sys.argv[1:]
    if not paths:
        sys.exit("usage: log_sink.py PATH...")

    def stop(*_):
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for path in paths:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o666)
        # One blocking reader per socket: datagrams are taken as fast as they
        # come (the kernel queues only net.unix.max_dgram_qlen of them).
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
