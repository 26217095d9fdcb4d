#!/usr/bin/env python3
"""Slow clients for the soak: COUNT connections that each send a request head one byte every
2 s (the server closes them after 10 s) and start again, until SECONDS have passed.

usage: slow_clients.py HOST PORT COUNT SECONDS
"""
import socket
import sys
import time

host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
head = b"GET /healthz HTTP/1.1\r\nHost: soak\r\n\r\n"
end = time.time() + seconds
conns = {}
while time.time() < end:
    for i in range(count):
        if i not in conns:
            try:
                conns[i] = [socket.create_connection((host, port), timeout=1), 0]
            except OSError:
                continue
        sock, sent = conns[i]
        try:
            sock.send(head[sent:sent + 1])
            conns[i][1] = (sent + 1) % len(head)
        except OSError:
            sock.close()
            del conns[i]
    time.sleep(2)
for sock, _ in conns.values():
    sock.close()
