"""APPEND with synchronizing literals, as python's imaplib sends them: the literal and its
closing CRLF are two writes with Nagle's algorithm on. Prints the seconds N appends took."""
import imaplib
import sys
import time

host, port, user, password, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
client = imaplib.IMAP4(host, port)
client.login(user, password)
body = ("x" * 70 + "\r\n") * 50
start = time.monotonic()
for i in range(count):
    message = f"From: a@example.test\r\nSubject: sync {i}\r\n\r\n{body}".encode()
    typ, data = client.append("INBOX", None, None, message)
    assert typ == "OK", (typ, data)
elapsed = time.monotonic() - start
typ, data = client.select("INBOX")
assert typ == "OK" and int(data[0]) == count, data
client.logout()
print(f"ELAPSED {elapsed:.3f}")
