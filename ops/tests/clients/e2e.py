"""Across the suite: an IMAP IDLE of alice wakes when bob sends her mail through submission.

Usage: e2e.py SUBMISSION_PORT IMAP_PORT. Both servers use a self-signed certificate.
"""
import imaplib
import smtplib
import ssl
import sys
import time
from email.message import EmailMessage

submission_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE

imap = imaplib.IMAP4("127.0.0.1", imap_port)
imap.starttls(tls)
imap.login("alice@example.test", "alice-pw")
typ, data = imap.select("INBOX")
assert typ == "OK" and data == [b"0"], (typ, data)

# IDLE (RFC 2177) by hand: python 3.11's imaplib has no idle().
imap.send(b"i1 IDLE\r\n")
line = imap.readline()
assert line.startswith(b"+"), line

msg = EmailMessage()
msg["From"] = "bob@example.test"
msg["To"] = "alice@example.test"
msg["Subject"] = "across the suite"
msg.set_content("Sent by smtpd, seen by imapd.\n")
with smtplib.SMTP("127.0.0.1", submission_port, timeout=30) as smtp:
    smtp.starttls(context=tls)
    smtp.login("bob@example.test", "bob-pw")
    smtp.send_message(msg)
sent = time.monotonic()

# The delivery must wake the IDLE through PostgreSQL LISTEN/NOTIFY, not a poll.
imap.sock.settimeout(10)
line = imap.readline()
woke = time.monotonic() - sent
assert line.strip() == b"* 1 EXISTS", line
imap.send(b"DONE\r\n")
while not imap.readline().startswith(b"i1 OK"):
    pass
typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
assert typ == "OK", (typ, data)
assert b"across the suite" in data[0][1], data
assert b"Sent by smtpd, seen by imapd." in data[1][1], data
imap.logout()
print(f"IDLE woke {woke * 1000:.0f} ms after the 250")
