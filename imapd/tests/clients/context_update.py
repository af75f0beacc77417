"""python imaplib drives CONTEXT=SEARCH (RFC 5267 §4.3): imaplib passes criteria strings
through, so RETURN (UPDATE ALL) and CANCELUPDATE go on the wire as written, and it files the
unsolicited `* ESEARCH` updates among its untagged responses. A second connection appends and
flags. Usage: context_update.py host port user password. Prints ALL OK on success."""
import imaplib
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# imaplib knows the commands of RFC 3501 and a few more; CANCELUPDATE is sent as it stands.
imaplib.Commands.setdefault("CANCELUPDATE", ("SELECTED",))
watcher = imaplib.IMAP4(host, port)
watcher.login(user, password)
typ, data = watcher.capability()
caps = data[0].split()
for word in (b"ESORT", b"CONTEXT=SEARCH", b"CONTEXT=SORT"):
    assert word in caps, (word, caps)
other = imaplib.IMAP4(host, port)
other.login(user, password)
for i in range(1, 4):
    msg = f"From: a@example.test\r\nSubject: s{i}\r\n\r\nbody {i}\r\n".encode()
    typ, _ = other.append("INBOX", "(\\Flagged)" if i == 2 else "()", None, msg)
    assert typ == "OK", typ
typ, _ = watcher.select("INBOX")
assert typ == "OK", typ
other.select("INBOX")

# imaplib's tag for the next command is its tag prefix and counter.
tag = watcher._new_tag().decode()
watcher.tagnum -= 1
typ, _ = watcher._simple_command("UID", "SEARCH", "RETURN", "(UPDATE ALL)", "UNFLAGGED")
assert typ == "OK", typ
typ, data = watcher._untagged_response(typ, [None], "ESEARCH")
assert data == [f'(TAG "{tag}") UID ALL 1,3'.encode()], data

msg = b"From: a@example.test\r\nSubject: s4\r\n\r\nbody 4\r\n"
typ, _ = other.append("INBOX", "()", None, msg)
assert typ == "OK", typ
typ, _ = other.store("1", "+FLAGS", "(\\Flagged)")
assert typ == "OK", typ
typ, _ = watcher.noop()
assert typ == "OK", typ
typ, data = watcher._untagged_response(typ, [None], "ESEARCH")
assert data == [f'(TAG "{tag}") UID REMOVEFROM (0 1) ADDTO (0 4)'.encode()], data

typ, data = watcher._simple_command("CANCELUPDATE", f'"{tag}"')
assert typ == "OK", (typ, data)
other.store("3", "+FLAGS", "(\\Flagged)")
typ, _ = watcher.noop()
typ, data = watcher._untagged_response(typ, [None], "ESEARCH")
assert data == [None], data

# ESORT through the same client: ALL in sort order.
typ, _ = watcher._simple_command("UID", "SORT", "RETURN", "(ALL)", "(REVERSE SUBJECT)", "UTF-8", "ALL")
assert typ == "OK", typ
typ, data = watcher._untagged_response(typ, [None], "ESEARCH")
assert len(data) == 1 and data[0].endswith(b" UID ALL 4,3,2,1"), data
watcher.logout()
other.logout()
print("ALL OK")
