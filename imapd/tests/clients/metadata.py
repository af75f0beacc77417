"""METADATA (RFC 5464) from Python: imaplib has no METADATA methods, so the commands are
registered in imaplib.Commands and sent raw through _simple_command (imaplib quotes nothing
itself); responses are read back with imaplib's own parser. A value with a line break goes
over imaplib's connection as a synchronizing literal (IMAP4.send/readline), sent only after
the server's "+". Prints "metadata ok" when every check passed."""
import imaplib
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

imaplib.Commands["GETMETADATA"] = ("AUTH", "SELECTED")
imaplib.Commands["SETMETADATA"] = ("AUTH", "SELECTED")

client = imaplib.IMAP4(host, port)
client.login(user, password)
typ, caps = client.capability()
assert b"METADATA" in caps[0].split(), caps


def command(*args):
    typ, data = client._simple_command(*args)
    return typ, data, client.response("METADATA")[1]


# Server entries: /shared/admin names the postmaster.
typ, data, meta = command("GETMETADATA", '""', "/shared/admin")
assert typ == "OK", (typ, data)
assert meta == [b'"" (/shared/admin "mailto:postmaster@example.test")'], meta

# Set two entries, read them back in one command, with DEPTH.
typ, data, _ = command("SETMETADATA", "INBOX", '(/private/comment "first" /private/vendor/py/x "1")')
assert typ == "OK", (typ, data)
typ, data, meta = command("GETMETADATA", "INBOX", "(DEPTH infinity)", "/private")
assert typ == "OK", (typ, data)
assert meta == [b'"INBOX" (/private/comment "first" /private/vendor/py/x "1")'], meta

# MAXSIZE leaves the long one out and says how long it is.
typ, data, meta = command("GETMETADATA", "(MAXSIZE 3)", "INBOX", "(/private/comment /private/vendor/py/x)")
assert typ == "OK", (typ, data)
# imaplib files the tagged line's response code under its first word too.
assert meta == [b'"INBOX" (/private/vendor/py/x "1")', b"LONGENTRIES 5"], meta
assert b"[METADATA LONGENTRIES 5]" in data[0], data

# A bad entry name is BAD (imaplib raises its error).
try:
    command("GETMETADATA", "INBOX", "/private//x")
    raise SystemExit("a bad entry name was accepted")
except imaplib.IMAP4.error as e:
    assert "BAD" in str(e) or "entry" in str(e), e

# A value with a line break, as a synchronizing literal.
value = b"two\r\nlines"
client.send(b"L1 SETMETADATA INBOX (/private/note {%d}\r\n" % len(value))
cont = client.readline()
assert cont.startswith(b"+"), cont
client.send(value + b")\r\n")
answer = client.readline()
assert answer.startswith(b"L1 OK"), answer
typ, data = client._simple_command("GETMETADATA", "INBOX", "/private/note")
assert typ == "OK", (typ, data)
typ, meta = client._untagged_response(typ, data, "METADATA")
# imaplib hands a literal back as a (prefix, bytes) pair.
assert meta[0] == (b'"INBOX" (/private/note {10}', value), meta

# Remove all but one; the test then checks what is charged for it.
typ, data, _ = command(
    "SETMETADATA", "INBOX", '(/private/comment "from python" /private/vendor/py/x NIL /private/note NIL)'
)
assert typ == "OK", (typ, data)
client.logout()
print("metadata ok")
