"""APPEND with synchronizing literals as python's imaplib sends them (the literal and its
closing CRLF are two writes, Nagle's algorithm on), against the same APPENDs sent as one write
with a LITERAL+ literal (RFC 7888) on a socket with Nagle on too. Prints the extra milliseconds
each synchronizing APPEND took (load on the machine slows both alike)."""
import imaplib
import socket
import sys
import time

host, port, user, password, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
body = ("x" * 70 + "\r\n") * 50


def message(kind, i):
    return f"From: a@example.test\r\nSubject: {kind} {i}\r\n\r\n{body}".encode()


def run_sync():
    client = imaplib.IMAP4(host, port)
    client.login(user, password)
    start = time.monotonic()
    for i in range(count):
        typ, data = client.append("INBOX", None, None, message("sync", i))
        assert typ == "OK", (typ, data)
    elapsed = time.monotonic() - start
    client.logout()
    return elapsed


def run_literal_plus():
    s = socket.create_connection((host, port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
    while not f.readline().startswith(b"a "):
        pass
    start = time.monotonic()
    for i in range(count):
        m = message("plus", i)
        s.sendall(f"b{i} APPEND INBOX {{{len(m)}+}}\r\n".encode() + m + b"\r\n")
        while True:
            line = f.readline()
            assert line, "connection closed"
            if line.startswith(f"b{i} ".encode()):
                assert b" OK " in line, line
                break
    elapsed = time.monotonic() - start
    s.close()
    return elapsed


# Alternate, and keep the best of each, so a burst of load elsewhere does not decide.
sync, plus = [], []
for _ in range(2):
    sync.append(run_sync())
    plus.append(run_literal_plus())
client = imaplib.IMAP4(host, port)
client.login(user, password)
typ, data = client.select("INBOX")
assert typ == "OK" and int(data[0]) == 4 * count, data
client.logout()
print(f"SYNC {min(sync) / count * 1000:.2f} ms, LITERAL+ {min(plus) / count * 1000:.2f} ms per APPEND")
print(f"EXTRA_MS {(min(sync) - min(plus)) / count * 1000:.2f}")
