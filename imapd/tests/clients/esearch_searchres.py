"""python imaplib drives WITHIN (RFC 5032), ESEARCH (RFC 4731) and SEARCHRES (RFC 5182):
imaplib passes criteria strings through, so RETURN options and `$` go on the wire as written.
Usage: esearch_searchres.py host port user password. Prints ALL OK on success."""
import imaplib
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port)
M.login(user, password)
typ, data = M.capability()
caps = data[0].split()
for word in (b"WITHIN", b"ESEARCH", b"SEARCHRES"):
    assert word in caps, (word, caps)
for i in range(1, 7):
    msg = f"From: a@example.test\r\nSubject: s{i}\r\n\r\nbody {i}\r\n".encode()
    flags = "(\\Flagged)" if i % 2 == 0 else "()"
    typ, _ = M.append("INBOX", flags, None, msg)
    assert typ == "OK", typ
typ, _ = M.select("INBOX")
assert typ == "OK"
typ, data = M.search(None, "YOUNGER", "3600")
assert typ == "OK" and data == [b"1 2 3 4 5 6"], data
typ, data = M.search(None, "OLDER", "3600")
assert typ == "OK" and data == [b""], data
# imaplib files `* ESEARCH` under its own name.
typ, _ = M._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "FLAGGED")
assert typ == "OK", typ
typ, data = M._untagged_response(typ, [None], "ESEARCH")
assert len(data) == 1 and data[0].endswith(b" MIN 2 MAX 6 COUNT 3 ALL 2,4,6"), data
typ, data = M.uid("SEARCH", "RETURN", "(SAVE)", "FLAGGED")
assert typ == "OK", typ
typ, data = M.uid("FETCH", "$", "(FLAGS)")
assert typ == "OK" and len([d for d in data if d]) == 3, data
typ, _ = M.store("$", "+FLAGS", "(\\Seen)")
assert typ == "OK", typ
typ, data = M.search(None, "SEEN")
assert data == [b"2 4 6"], data
M.logout()
print("ALL OK")
