"""Clients for ops/tests/backup.rs: make mail and files, run a load, read back everything.

Usage:
  backup.py make SUBMISSION IMAP HTTPS       mail in several folders with flags, files with dead properties
  backup.py load SUBMISSION HTTPS STOPFILE   deliveries and PUTs in a loop until STOPFILE exists;
                                             prints "done N" after each round
  backup.py change SUBMISSION HTTPS          one more message and one more file (1000 bytes)
  backup.py checkload FOLDER                 every load file in FOLDER is whole; prints how many
  backup.py state IMAP HTTPS                 JSON of every folder (UIDVALIDITY, UIDNEXT, UIDs, flags,
                                             dates, sha256 of each message), file (sha256, size,
                                             the OC-Checksum davd offers) and dead property of alice
                                             and bob

All servers use a self-signed certificate.
"""
import base64
import hashlib
import http.client
import imaplib
import json
import os
import re
import smtplib
import ssl
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from email.message import EmailMessage

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE
USERS = {"alice@example.test": "alice-pw", "bob@example.test": "bob-pw"}
NS = "urn:example:backup-test"


def send(port, sender, to, subject, body):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=TLS)
        smtp.login(sender, USERS[sender])
        smtp.send_message(msg)


def dav(port, user, method, path, body=None, headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=TLS, timeout=30)
    auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    h = {"Authorization": f"Basic {auth}"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def get_with_checksum(port, user, path):
    """GET: status, body and the OC-Checksum header (davd's content hash), checked against
    the body it came with."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=TLS, timeout=30)
    auth = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    conn.request("GET", path, headers={"Authorization": f"Basic {auth}"})
    resp = conn.getresponse()
    data = resp.read()
    checksum = resp.getheader("OC-Checksum")
    conn.close()
    if checksum is not None:
        assert checksum == "SHA1:" + hashlib.sha1(data).hexdigest(), (path, checksum)
    return resp.status, data, checksum


def must(status, data, *ok):
    assert status in ok, (status, data[:500])


def proppatch(port, user, path, props):
    sets = "".join(f"<t:{name}>{value}</t:{name}>" for name, value in props)
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:t="{NS}">'
        f"<D:set><D:prop>{sets}</D:prop></D:set></D:propertyupdate>"
    )
    status, data = dav(port, user, "PROPPATCH", path, body.encode(), {"Content-Type": "application/xml"})
    must(status, data, 207)
    assert b"200" in data, data


def imap_login(port, user):
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.starttls(TLS)
    imap.login(user, USERS[user])
    return imap


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def make(sub, imap_port, https):
    alice, bob = "alice@example.test", "bob@example.test"
    for i in range(3):
        send(sub, bob, alice, f"inbox {i}", f"Message {i} to alice's INBOX.\n")
    send(sub, alice, bob, "to bob", "One for bob.\n")
    imap = imap_login(imap_port, alice)
    for folder in ["Work", "Work/Reports", "Family"]:
        ok(imap.create(folder))
    date = imaplib.Time2Internaldate(time.mktime((2024, 3, 1, 12, 0, 0, 0, 0, -1)))
    for folder, flags in [
        ("Work", r"(\Seen)"),
        ("Work", r"(\Flagged $Important)"),
        ("Work/Reports", r"(\Seen \Answered)"),
        ("Family", "()"),
        ("Archive", r"(\Seen \Draft)"),
    ]:
        body = f"From: alice@example.test\r\nSubject: {folder} {flags}\r\n\r\nKept in {folder}.\r\n"
        ok(imap.append(folder, flags, date, body.encode()))
    ok(imap.select("INBOX"))
    ok(imap.uid("STORE", "1", "+FLAGS", r"(\Seen $Label1)"))
    # A gap in the UIDs: the restored INBOX must keep UIDs and UIDNEXT, not renumber.
    ok(imap.uid("STORE", "2", "+FLAGS", r"(\Deleted)"))
    ok(imap.expunge())
    imap.logout()

    must(*dav(https, alice, "MKCOL", "/docs/"), 201)
    must(*dav(https, alice, "MKCOL", "/docs/empty/"), 201)
    must(*dav(https, alice, "PUT", "/docs/a.txt", b"alice's notes\n"), 201)
    must(*dav(https, alice, "PUT", "/docs/b.bin", os.urandom(200_000)), 201)
    must(*dav(https, alice, "PUT", "/top%20level.txt", b"spaces in the name\n"), 201)
    must(*dav(https, alice, "PUT", "/gone.txt", b"deleted later\n"), 201)
    proppatch(https, alice, "/docs/a.txt", [("color", "blue"), ("note", "backup-test-value")])
    proppatch(https, alice, "/docs/", [("color", "green")])
    proppatch(https, alice, "/gone.txt", [("color", "red")])
    must(*dav(https, alice, "DELETE", "/gone.txt"), 204)
    must(*dav(https, bob, "PUT", "/bob.txt", b"bob's file\n"), 201)
    proppatch(https, bob, "/bob.txt", [("owner", "bob")])


def load_content(n):
    """The bytes of /load-N.bin: 50000 + n bytes anyone can check without the server."""
    block = hashlib.sha256(str(n).encode()).digest()
    size = 50_000 + n
    return (block * (size // len(block) + 1))[:size]


def load(sub, https, stopfile):
    n = 0
    while not os.path.exists(stopfile):
        send(sub, "bob@example.test", "alice@example.test", f"load {n}", f"Load message {n}.\n" * 50)
        must(*dav(https, "alice@example.test", "PUT", f"/load-{n}.bin", load_content(n)), 201)
        n += 1
        print(f"done {n}", flush=True)


def check_load(folder):
    """Every load file in FOLDER is whole (its exact bytes); prints how many there are."""
    names = [f for f in os.listdir(folder) if f.startswith("load-")]
    for name in names:
        n = int(name[len("load-"):-len(".bin")])
        with open(os.path.join(folder, name), "rb") as f:
            assert f.read() == load_content(n), f"{name} is not whole"
    assert not [f for f in os.listdir(folder) if f.startswith(".tinydc-")], os.listdir(folder)
    print(len(names))


def change(sub, https):
    send(sub, "bob@example.test", "alice@example.test", "after", "After the second backup.\n")
    must(*dav(https, "alice@example.test", "PUT", "/docs/changed.bin", b"c" * 1000), 201)


def mailbox_state(imap, name):
    typ, data = imap.select(f'"{name}"', readonly=True)
    assert typ == "OK", (name, typ, data)
    exists = int(data[0])
    state = {
        "uidvalidity": imap.response("UIDVALIDITY")[1][0].decode(),
        "uidnext": imap.response("UIDNEXT")[1][0].decode(),
        "exists": exists,
        "messages": {},
    }
    if exists == 0:
        return state
    for line in ok(imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE)")):
        text = line.decode() if isinstance(line, bytes) else line[0].decode()
        uid = re.search(r"UID (\d+)", text).group(1)
        flags = sorted(f for f in re.search(r"FLAGS \(([^)]*)\)", text).group(1).split() if f != "\\Recent")
        date = re.search(r'INTERNALDATE "([^"]*)"', text).group(1)
        size = re.search(r"RFC822.SIZE (\d+)", text).group(1)
        state["messages"][uid] = {"flags": flags, "date": date, "size": size}
    for item in ok(imap.uid("FETCH", "1:*", "(BODY.PEEK[])")):
        if isinstance(item, tuple):
            uid = re.search(rb"UID (\d+)", item[0]).group(1).decode()
            state["messages"][uid]["sha256"] = hashlib.sha256(item[1]).hexdigest()
    return state


def mail_state(imap_port, user):
    imap = imap_login(imap_port, user)
    names = []
    for line in ok(imap.list()):
        m = re.match(rb'\((.*?)\) (?:"(.)"|NIL) (.*)', line)
        name = m.group(3).decode()
        if name.startswith('"'):
            name = name[1:-1]
        names.append((name, m.group(1).decode()))
    out = {}
    for name, attrs in sorted(names):
        if "\\Noselect" in attrs or "\\NonExistent" in attrs:
            out[name] = {"attributes": attrs}
            continue
        out[name] = mailbox_state(imap, name)
        out[name]["attributes"] = attrs
    imap.logout()
    return out


def file_state(https, user):
    out = {}
    todo = ["/"]
    body = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    while todo:
        path = todo.pop()
        status, data = dav(https, user, "PROPFIND", path, body, {"Depth": "1", "Content-Type": "application/xml"})
        must(status, data, 207)
        root = ET.fromstring(data)
        for resp in root.findall("{DAV:}response"):
            href = urllib.parse.unquote(urllib.parse.urlparse(resp.find("{DAV:}href").text).path)
            entry = {"dead": {}}
            for propstat in resp.findall("{DAV:}propstat"):
                if "200" not in propstat.find("{DAV:}status").text:
                    continue
                for prop in propstat.find("{DAV:}prop"):
                    if prop.tag == "{DAV:}resourcetype":
                        entry["collection"] = prop.find("{DAV:}collection") is not None
                    elif prop.tag == "{DAV:}getcontentlength":
                        entry["length"] = prop.text
                    elif not prop.tag.startswith("{DAV:}"):
                        entry["dead"][prop.tag] = prop.text
            if href.rstrip("/") == urllib.parse.unquote(path).rstrip("/"):
                out[href] = entry
                continue
            if entry.get("collection"):
                todo.append(urllib.parse.quote(href))
            else:
                status, content, checksum = get_with_checksum(https, user, urllib.parse.quote(href))
                must(status, content, 200)
                entry["sha256"] = hashlib.sha256(content).hexdigest()
                entry["oc_checksum"] = checksum
                out[href] = entry
    return out


def state(imap_port, https):
    out = {user: {"mail": mail_state(imap_port, user), "files": file_state(https, user)} for user in USERS}
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    cmd, args = sys.argv[1], [a for a in sys.argv[2:]]
    if cmd == "make":
        make(int(args[0]), int(args[1]), int(args[2]))
    elif cmd == "load":
        load(int(args[0]), int(args[1]), args[2])
    elif cmd == "change":
        change(int(args[0]), int(args[1]))
    elif cmd == "checkload":
        check_load(args[0])
    elif cmd == "state":
        state(int(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown command {cmd}")
