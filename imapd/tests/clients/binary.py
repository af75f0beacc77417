"""BINARY (RFC 3516) from Python's imaplib: the decoded base64 part (holding NUL, so sent as a
literal8 `~{n}`, which imaplib's literal reader takes) and BINARY.SIZE. argv: host port user
password, then the expected decoded part as hex."""
import imaplib
import sys

host, port, user, password, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
expected = bytes.fromhex(expected)

client = imaplib.IMAP4(host, port)
client.login(user, password)
typ, caps = client.capability()
assert b"BINARY" in caps[0].split(), caps
typ, data = client.select("INBOX")
assert typ == "OK", data
typ, data = client.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
assert typ == "OK", (typ, data)
head, part = data[0]
assert b"BINARY[2] ~{%d}" % len(expected) in head, head
assert part == expected, part
assert b"BINARY.SIZE[2] %d" % len(expected) in data[1], data
typ, data = client.fetch("1", "(BINARY.PEEK[3])")
assert typ == "NO" and data[0].startswith(b"[UNKNOWN-CTE]"), (typ, data)
client.logout()
print("binary ok")
