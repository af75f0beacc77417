"""MULTIAPPEND (RFC 3502) from Python: imaplib logs in and checks the result; the APPEND itself
goes over imaplib's own connection (IMAP4.send/readline), since imaplib cannot send several
messages in one APPEND. Synchronizing literals: each is sent only after the server's "+"."""
import imaplib
import re
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def message(i):
    return f"From: a@example.test\r\nSubject: multi {i}\r\n\r\nbody {i}\r\n".encode()


client = imaplib.IMAP4(host, port)
typ, caps = client.capability()
client.login(user, password)
typ, caps = client.capability()
assert b"MULTIAPPEND" in caps[0].split(), caps

messages = [message(i) for i in range(3)]
line = b"M1 APPEND INBOX"
for i, m in enumerate(messages):
    flags = b" (\\Seen)" if i == 1 else b""
    client.send(line + flags + b" {%d}\r\n" % len(m))
    cont = client.readline()
    assert cont.startswith(b"+"), cont
    line = m
client.send(line + b"\r\n")
while True:
    reply = client.readline()
    if reply.startswith(b"M1 "):
        break
assert reply.startswith(b"M1 OK [APPENDUID "), reply
uidvalidity, uids = re.match(rb"M1 OK \[APPENDUID (\d+) ([0-9:,]+)\]", reply).groups()
assert uids == b"1:3", reply

typ, data = client.select("INBOX")
assert typ == "OK" and data[0] == b"3", data
typ, data = client.response("UIDVALIDITY")
assert data[0] == uidvalidity, (data, uidvalidity)
typ, data = client.uid("FETCH", "1:3", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
fetched = b" ".join(part[0] + part[1] if isinstance(part, tuple) else part for part in data)
for i in range(3):
    assert b"Subject: multi %d" % i in fetched, fetched
assert re.search(rb"UID 2 FLAGS \([^)]*\\Seen", fetched), fetched
client.logout()
print("ALL OK")
