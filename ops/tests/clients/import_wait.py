"""Wait until a mailbox holds at least N messages (IMAP STATUS, polled), then print its count.

Usage: import_wait.py IMAP_PORT USER PASSWORD MAILBOX N. Exits 1 after 60 s.
"""
import imaplib
import re
import ssl
import sys
import time

port, user, password, mailbox, want = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
imap.starttls(tls)
imap.login(user, password)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    typ, data = imap.status(mailbox, "(MESSAGES)")
    assert typ == "OK", data
    count = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    if count >= want:
        print(count, flush=True)
        imap.logout()
        sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
