"""Fill an IMAP account with a test tree, or dump an account for comparison.

Usage:
  imap_tree.py fill PORT USER PASSWORD [BULK]   plain IMAP on 127.0.0.1: folders (nested, 8-bit
      names, Gmail-style), messages with flags, keywords, varied INTERNALDATEs and 8-bit bytes,
      and BULK more small messages in "Bulk" (default 0).
  imap_tree.py dump PORT USER PASSWORD [--starttls]   prints JSON
      {folder: sorted [[sha256, size, internaldate epoch, sorted flags]]} for every selectable
      folder (names decoded from modified UTF-7, delimiter shown as '/'), \\Recent left out.
"""
import base64
import hashlib
import imaplib
import json
import re
import ssl
import sys
import time
from datetime import datetime


def mutf7_encode(name):
    out, run = [], []

    def flush():
        if run:
            b = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) < 0x7F:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(name):
    def dec(m):
        s = m.group(1)
        if not s:
            return "&"
        s = s.replace(",", "/")
        s += "=" * (-len(s) % 4)
        return base64.b64decode(s).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", dec, name)


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(port, user, password, starttls=False):
    imap = imaplib.IMAP4("127.0.0.1", port)
    if starttls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        imap.starttls(tls)
    typ, _ = imap.login(user, password)
    assert typ == "OK"
    return imap


def message(n, subject, body, extra=b""):
    return (
        b"From: Sender " + str(n).encode() + b" <sender@example.org>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Message-ID: <m" + str(n).encode() + b"@example.org>\r\n"
        + extra
        + b"\r\n" + body
    )


def fill(port, user, password, bulk):
    imap = connect(port, user, password)
    folders = [
        "INBOX",
        "Work",
        "Work/Projects",
        "Work/Projects/Entwürfe",
        "Família & Amigos",
        "[Gmail]/Sent Mail",
        "[Gmail]/All Mail",
        "[Gmail]/Starred",
        "Spam-Ordner",
        "Alles",
    ]
    for f in folders[1:]:
        typ, data = imap.create(quote(mutf7_encode(f)))
        assert typ == "OK", (f, data)
    n = 0
    dates = [
        '"01-Jan-2001 00:00:01 +0000"',
        '"15-Jun-2012 13:45:00 +0200"',
        '" 3-Mar-2019 23:59:59 -0800"',
        '"29-Feb-2024 12:00:00 +0530"',
    ]
    flag_sets = ["()", "(\\Seen)", "(\\Seen \\Flagged)", "(\\Answered $Label1 Work)", "(\\Draft \\Seen)", "(\\Deleted)"]
    for fi, f in enumerate(folders):
        for i in range(3 + fi % 3):
            n += 1
            subject = ("Grüße Nr. %d – ünïcödé" % n).encode("utf-8")  # 8-bit header, unencoded
            body = b"Hello\r\nFrom the middle of a line\r\n" + bytes(range(0x80, 0x100)) + b"\r\n" + b"x" * (n * 37) + b"\r\n"
            raw = message(n, subject, body)
            typ, data = imap.append(
                quote(mutf7_encode(f)), flag_sets[n % len(flag_sets)], dates[n % len(dates)], raw
            )
            assert typ == "OK", (f, data)
    # A bigger one (several literals' worth of buffers).
    n += 1
    big = message(n, b"big", (b"0123456789abcdef" * 64 + b"\r\n") * 3000)
    typ, data = imap.append("Work", "(\\Seen)", '"10-Oct-2010 10:10:10 +1000"', big)
    assert typ == "OK", data
    if bulk:
        typ, data = imap.create("Bulk")
        assert typ == "OK", data
        for i in range(bulk):
            n += 1
            raw = message(n, b"bulk %d" % i, b"y" * 20000 + b"\r\n")
            typ, data = imap.append("Bulk", "(\\Seen)", '"05-May-2005 05:05:05 +0000"', raw)
            assert typ == "OK", data
    imap.logout()


def dump(port, user, password, starttls):
    imap = connect(port, user, password, starttls)
    typ, lines = imap.list('""', "*")
    assert typ == "OK", lines
    out = {}
    for line in lines:
        m = re.match(rb'\(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.*)$', line)
        assert m, line
        attrs = m.group(1).decode().lower().split()
        if "\\noselect" in attrs or "\\nonexistent" in attrs:
            continue
        delim = None if m.group(2) == b"NIL" else m.group(2)[1:-1].decode()
        wire = m.group(3).decode()
        if wire.startswith('"'):
            wire = wire[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        name = mutf7_decode(wire)
        if delim and delim != "/":
            name = "/".join(part.replace("/", "_") for part in name.split(delim))
        typ, data = imap.select(quote(wire), readonly=True)
        assert typ == "OK", (wire, data)
        msgs = []
        if int(data[0]) > 0:
            typ, data = imap.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            assert typ == "OK", data
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta, body = item
                flags = re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode().split()
                flags = sorted(f for f in flags if f.lower() != "\\recent")
                date = re.search(rb'INTERNALDATE "([^"]*)"', meta).group(1).decode().strip()
                epoch = int(datetime.strptime(date, "%d-%b-%Y %H:%M:%S %z").timestamp())
                msgs.append([hashlib.sha256(body).hexdigest(), len(body), epoch, flags])
        out["INBOX" if name.upper() == "INBOX" else name] = sorted(msgs)
    imap.logout()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    cmd, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if cmd == "fill":
        fill(port, user, password, int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    elif cmd == "dump":
        dump(port, user, password, "--starttls" in sys.argv)
    else:
        sys.exit("unknown command " + cmd)
