"""python imaplib drives LIST-STATUS (RFC 5819) and STATUS=SIZE (RFC 8438): imaplib has no
words for them, so the LIST goes out raw with _simple_command and the untagged LIST and STATUS
responses are read back by name. Usage: list_status.py host port user password. Prints ALL OK
on success."""
import imaplib
import re
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port)
M.login(user, password)
typ, data = M.capability()
caps = data[0].split()
for word in (b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE"):
    assert word in caps, (word, caps)
typ, _ = M.create("Lists/Groceries")
assert typ == "OK", typ
sizes = []
for i in range(3):
    msg = f"From: a@example.test\r\nSubject: item {i}\r\n\r\n{'x' * (100 * i)}\r\n".encode()
    sizes.append(len(msg))
    typ, _ = M.append("Lists/Groceries", "(\\Seen)" if i == 0 else "()", None, msg)
    assert typ == "OK", typ
typ, data = M._simple_command("LIST", '""', '"Lists/*"', "RETURN", "(STATUS (MESSAGES UNSEEN SIZE))")
assert typ == "OK", (typ, data)
typ, lists = M._untagged_response(typ, [None], "LIST")
typ, statuses = M._untagged_response(typ, [None], "STATUS")
assert lists == [b'(\\HasNoChildren) "/" "Lists/Groceries"'] or lists == [
    b'(\\HasChildren) "/" "Lists"',
    b'(\\HasNoChildren) "/" "Lists/Groceries"',
], lists
# RFC 5819 section 2: one STATUS for each selectable mailbox listed.
assert len(statuses) == len(lists), (lists, statuses)
groceries = [s for s in statuses if s.startswith(b'"Lists/Groceries"')]
assert len(groceries) == 1, statuses
m = re.fullmatch(rb'"Lists/Groceries" \(MESSAGES (\d+) UNSEEN (\d+) SIZE (\d+)\)', groceries[0])
assert m, groceries
assert (int(m[1]), int(m[2]), int(m[3])) == (3, 2, sum(sizes)), (groceries, sizes)
# imaplib's own status() with SIZE agrees.
typ, data = M.status("Lists/Groceries", "(SIZE MESSAGES)")
assert typ == "OK" and data == [f'"Lists/Groceries" (SIZE {sum(sizes)} MESSAGES 3)'.encode()], data
M.logout()
print("ALL OK")
