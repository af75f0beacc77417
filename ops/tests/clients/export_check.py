"""Read a `tinydc export` back with Python's mailbox module (Maildir and mbox) and compare it
with what was stored: bytes, flags, keywords, dates and folders.

usage: export_check.py MAILDIR_DIR MBOX_DIR EXPECTATIONS

EXPECTATIONS has one tab-separated line per message: Maildir folder ('' for INBOX), mbox file
name, hex of the message bytes, Maildir info letters, mbox flags (Status + X-Status letters),
keywords (space-separated), INTERNALDATE as Unix seconds, the From_ line's date."""

import mailbox
import os
import re
import sys

maildir_root, mbox_root, spec = sys.argv[1:4]
expected = []
with open(spec, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            folder, mbox_file, data, letters, mbox_flags, keywords, mtime, from_date = line.rstrip("\n").split("\t")
            expected.append(dict(folder=folder, mbox=mbox_file, data=bytes.fromhex(data), letters=letters,
                                 mbox_flags=mbox_flags, keywords=keywords.split(), mtime=int(mtime),
                                 from_date=from_date))

failures = []


def fail(text):
    failures.append(text)


# Maildir++: INBOX at the root, folders as .Name.Sub, flags after ":2,", keywords as letters
# named in each folder's dovecot-keywords.
md = mailbox.Maildir(maildir_root, factory=None, create=False)
folders = {"": md}
for name in md.list_folders():
    folders[name] = md.get_folder(name)
for e in expected:
    if e["folder"] not in folders:
        fail(f"maildir folder {e['folder']!r} missing; have {sorted(folders)}")
        continue
    box = folders[e["folder"]]
    path = os.path.join(maildir_root, "." + e["folder"]) if e["folder"] else maildir_root
    names = {}
    kw_file = os.path.join(path, "dovecot-keywords")
    if os.path.exists(kw_file):
        with open(kw_file, encoding="utf-8") as f:
            for line in f:
                index, name = line.rstrip("\n").split(" ", 1)
                names[chr(ord("a") + int(index))] = name
    found = [k for k in box.keys() if box.get_bytes(k) == e["data"]]
    if len(found) != 1:
        fail(f"maildir {e['folder']!r}: {len(found)} copies of a message of {len(e['data'])} bytes")
        continue
    msg = box.get_message(found[0])
    if msg.get_subdir() != "cur" or msg.get_flags() != e["letters"]:
        fail(f"maildir {e['folder']!r}: flags {msg.get_flags()!r} in {msg.get_subdir()}, want {e['letters']!r}")
    kws = sorted(names.get(c, "?" + c) for c in msg.get_flags() if c.islower())
    if kws != sorted(e["keywords"]):
        fail(f"maildir {e['folder']!r}: keywords {kws}, want {e['keywords']}")
    if int(msg.get_date()) != e["mtime"]:
        fail(f"maildir {e['folder']!r}: mtime {msg.get_date()}, want {e['mtime']}")
    size = re.search(r",S=(\d+)", found[0])
    if not size or int(size.group(1)) != len(e["data"]):
        fail(f"maildir {e['folder']!r}: name {found[0]!r} lacks S={len(e['data'])}")
for name, box in folders.items():
    # dovecot-uidlist (version 3) names every message by its file name before ":2,".
    path = os.path.join(maildir_root, "." + name) if name else maildir_root
    with open(os.path.join(path, "dovecot-uidlist"), encoding="utf-8") as f:
        header, *entries = f.read().splitlines()
    uids = [int(line.split(" :", 1)[0]) for line in entries]
    listed = {line.split(" :", 1)[1] for line in entries}
    if not re.fullmatch(r"3 V\d+ N\d+", header) or uids != sorted(set(uids)) or listed != set(box.keys()):
        fail(f"maildir {name!r}: dovecot-uidlist {header!r} {sorted(listed)} does not list {sorted(box.keys())}")
    want = sum(1 for e in expected if e["folder"] == name)
    if len(box) != want:
        fail(f"maildir {name!r}: {len(box)} messages, want {want}")

# mbox (mboxrd): unquote ^>+From lines, drop the flag headers the export put first.
ADDED = re.compile(rb"^(Status|X-Status|X-Keywords|X-Mozilla-Status):")
boxes = {}
for e in expected:
    path = os.path.join(mbox_root, e["mbox"])
    if not os.path.exists(path):
        fail(f"mbox file {e['mbox']!r} missing; have {sorted(os.listdir(mbox_root))}")
        continue
    box = boxes.setdefault(e["mbox"], mailbox.mbox(path, create=False))
    matches = []
    for key in box.keys():
        lines = box.get_bytes(key).splitlines(keepends=True)
        headers = {}
        while lines and ADDED.match(lines[0]):
            name, _, value = lines.pop(0).partition(b":")
            headers[name.decode()] = value.strip().decode()
        body = b"".join(line[1:] if re.match(rb"^>+From ", line) else line for line in lines)
        if body == e["data"]:
            matches.append((key, headers))
    if len(matches) != 1:
        fail(f"mbox {e['mbox']!r}: {len(matches)} copies of a message of {len(e['data'])} bytes")
        continue
    key, headers = matches[0]
    msg = box.get_message(key)
    if set(msg.get_flags()) != set(e["mbox_flags"]):
        fail(f"mbox {e['mbox']!r}: flags {msg.get_flags()!r}, want {e['mbox_flags']!r}")
    if headers.get("X-Keywords", "").split() != e["keywords"]:
        fail(f"mbox {e['mbox']!r}: X-Keywords {headers.get('X-Keywords')!r}, want {e['keywords']}")
    if msg.get_from() != "MAILER-DAEMON " + e["from_date"]:
        fail(f"mbox {e['mbox']!r}: From_ line {msg.get_from()!r}, want date {e['from_date']!r}")
for name, box in boxes.items():
    want = sum(1 for e in expected if e["mbox"] == name)
    if len(box) != want:
        fail(f"mbox {name!r}: {len(box)} messages, want {want}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"ok: {len(expected)} messages in Maildir and mbox")
