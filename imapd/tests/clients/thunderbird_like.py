#!/usr/bin/env python3
"""A Thunderbird-like IMAP session with Python's imaplib, against tinydc-imapd.

Usage: thunderbird_like.py HOST PORT USER PASSWORD CAFILE
Exits 0 and prints "ALL OK" when every step behaved; raises otherwise.
"""
import imaplib
import re
import socket
import ssl
import sys
import time

# imaplib does not know these extension commands by name.
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
imaplib.Commands.setdefault("IDLE", ("AUTH", "SELECTED"))

host, port, user, password, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)
    print("ok:", what, flush=True)


def connect():
    ctx = ssl.create_default_context(cafile=cafile)
    m = imaplib.IMAP4(host, port)
    check("STARTTLS" in m.capabilities, "STARTTLS offered")
    m.starttls(ssl_context=ctx)
    typ, _ = m.login(user, password)
    check(typ == "OK", "login after STARTTLS")
    return m


m = connect()
typ, data = m.capability()
caps = data[0].decode().split()
for cap in ["IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE", "ID", "QUOTA", "LITERAL+"]:
    check(cap in caps, "capability " + cap)

# ID and NAMESPACE, as Thunderbird sends them first.
typ, data = m._simple_command("ID", '("name" "imaplib" "version" "3")')
check(typ == "OK", "ID")
typ, data = m.namespace()
check(typ == "OK" and b'(("" "/"))' in data[0], "NAMESPACE")

# LIST with special use.
typ, data = m._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"')
typ, data = m._untagged_response(typ, data, "LIST")
listing = b"\n".join(d for d in data if d)
for use, name in [(b"\\Sent", b"Sent"), (b"\\Trash", b"Trash"), (b"\\Drafts", b"Drafts")]:
    check(use in listing and name in listing, "LIST (SPECIAL-USE) shows " + name.decode())
typ, data = m.list('""', "*")
check(typ == "OK" and any(b'"INBOX"' in d for d in data), "LIST shows INBOX")

typ, data = m.select("INBOX")
count = int(data[0])
check(typ == "OK" and count >= 3, "SELECT INBOX with %d messages" % count)

# Header download, as Thunderbird does it.
typ, data = m.uid(
    "FETCH",
    "1:*",
    "(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
)
headers = [d for d in data if isinstance(d, tuple)]
check(typ == "OK" and len(headers) == count, "UID FETCH headers of every message")
check(all(b"Subject:" in h[1] and b"RFC822.SIZE" in h[0] for h in headers), "headers and sizes present")
check(all(b"\\Seen" not in h[0] for h in headers), "PEEK left messages unseen")
uids = [int(re.search(rb"UID (\d+)", h[0]).group(1)) for h in headers]

# Resync of flags.
typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
check(typ == "OK" and len([d for d in data if d]) == count, "UID FETCH 1:* (FLAGS)")

# Flag changes.
typ, data = m.uid("STORE", str(uids[0]), "+FLAGS", "(\\Seen \\Flagged)")
check(typ == "OK" and b"\\Flagged" in data[0], "UID STORE +FLAGS")
typ, data = m.uid("STORE", str(uids[0]), "-FLAGS", "(\\Flagged)")
check(typ == "OK" and b"\\Flagged" not in data[0], "UID STORE -FLAGS")

# Reading a message sets \Seen.
typ, data = m.uid("FETCH", str(uids[1]), "(BODY[])")
check(typ == "OK" and b"\\Seen" in b" ".join(d[0] if isinstance(d, tuple) else d for d in data), "BODY[] sets \\Seen")

# MOVE to Trash (UIDPLUS tells the new UID).
typ, data = m.uid("MOVE", str(uids[2]), "Trash")
check(typ == "OK", "UID MOVE to Trash")
typ, data = m.status("Trash", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], "Trash holds the moved message")

# APPEND to Sent, as after sending.
sent = (
    b"From: " + user.encode() + b"\r\nTo: bob@example.test\r\nSubject: sent copy\r\n"
    b"Date: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <sent1@example.test>\r\n\r\nHi Bob\r\n"
)
typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()), sent)
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND to Sent with APPENDUID")

# Quota, as the quota meter reads it.
typ, data = m.getquotaroot("INBOX")
check(typ == "OK", "GETQUOTAROOT")

# IDLE, woken by a message another session appends.
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
line = m.readline()
check(line.startswith(b"+"), "IDLE continuation")
other = connect()
other.append("INBOX", None, None, b"Subject: during idle\r\n\r\nwake up\r\n")
other.logout()
m.sock.settimeout(5)
line = m.readline()
check(re.match(rb"\* \d+ EXISTS", line) is not None, "IDLE woken by a new message: " + line.decode().strip())
m.send(b"DONE\r\n")
while True:
    line = m.readline()
    if line.startswith(tag):
        check(b"OK" in line, "IDLE ended with DONE")
        break
m.sock.settimeout(None)

typ, _ = m.close()
check(typ == "OK", "CLOSE")
m.logout()
print("ALL OK")
