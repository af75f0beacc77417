"""Wait until a mailbox holds at least N messages (IMAP STATUS, polled), then print its count.

Usage: import_wait.py IMAP_PORT USER PASSWORD MAILBOX N. Exits 1 after 60 s. Logs in again
after a refusal (the database restarting).
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
deadline = time.monotonic() + 60
imap = None
while time.monotonic() < deadline:
    # The database may be restarting (a test kills it): log in again until it answers.
    try:
        if imap is None:
            imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
            imap.starttls(tls)
            imap.login(user, password)
        typ, data = imap.status(mailbox, "(MESSAGES)")
        if typ == "OK":
            count = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
            if count >= want:
                print(count, flush=True)
                imap.logout()
                sys.exit(0)
    except (imaplib.IMAP4.error, OSError) as e:
        print("retrying:", e, file=sys.stderr)
        imap = None
        time.sleep(0.5)
    time.sleep(0.02)
sys.exit(1)
