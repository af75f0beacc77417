"""Everything a user's IMAP view holds, as JSON on stdout, for the import tests to compare.

Usage: import_dump.py IMAP_PORT USER PASSWORD. STARTTLS with the suite's self-signed certificate.
Output: {"mailboxes": {name: [{"uid", "flags", "internaldate", "size", "sha256", "subject"}]}}
(names as LIST gives them, modified UTF-7).
"""
import hashlib
import imaplib
import json
import re
import ssl
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
imap = imaplib.IMAP4("127.0.0.1", port, timeout=60)
imap.starttls(tls)
imap.login(user, password)

typ, listing = imap.list()
assert typ == "OK", listing
names = []
for line in listing:
    m = re.match(rb'\((.*?)\) (?:"(.)"|NIL) (.*)$', line)
    assert m, line
    name = m.group(3)
    if name.startswith(b'"'):
        name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
    names.append(name.decode())

out = {}
for name in names:
    typ, data = imap.select('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"', readonly=True)
    assert typ == "OK", (name, data)
    messages = []
    if int(data[0]) > 0:
        typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, body = item
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            flags = re.search(rb"FLAGS \((.*?)\)", meta).group(1).decode().split()
            date = re.search(rb'INTERNALDATE "([^"]+)"', meta).group(1).decode()
            size = int(re.search(rb"RFC822.SIZE (\d+)", meta).group(1))
            subject = ""
            head = body.split(b"\r\n\r\n", 1)[0]
            m = re.search(rb"(?im)^Subject: ?(.*)$", head)
            if m:
                subject = m.group(1).rstrip(b"\r").decode("utf-8", "replace")
            messages.append({
                "uid": uid,
                "flags": sorted(flags),
                "internaldate": date.strip(),
                "size": size,
                "body_len": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "subject": subject,
            })
    out[name] = messages
imap.logout()
print(json.dumps({"mailboxes": out}))
