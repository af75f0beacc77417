"""An IMAP IDLE client (RFC 2177) that must see mail an import adds arrive.

Usage: import_idle.py IMAP_PORT USER PASSWORD. Prints "idling" once the IDLE is accepted, then
"woke N" when the server announces N messages in INBOX (an untagged EXISTS), within 60 s.
"""
import imaplib
import ssl
import sys
import time

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
imap.starttls(tls)
imap.login(user, password)
typ, data = imap.select("INBOX")
assert typ == "OK", data
before = int(data[0])
imap.send(b"i1 IDLE\r\n")
line = imap.readline()
assert line.startswith(b"+"), line
print("idling", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    line = imap.readline()
    assert line, "connection closed"
    parts = line.split()
    if len(parts) == 3 and parts[0] == b"*" and parts[2] == b"EXISTS" and int(parts[1]) > before:
        print("woke", int(parts[1]), flush=True)
        break
else:
    raise SystemExit("no EXISTS within 60 s")
imap.send(b"DONE\r\n")
while not imap.readline().startswith(b"i1 OK"):
    pass
imap.logout()
