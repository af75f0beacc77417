"""CATENATE (RFC 4469) from Python's imaplib: it has no CATENATE call, so the APPEND goes through
its generic command path (URL parts only: imaplib can send a literal only at the end of a
command). argv: host port user password."""
import imaplib
import re
import sys

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

client = imaplib.IMAP4(host, port)
client.login(user, password)
typ, caps = client.capability()
assert b"CATENATE" in caps[0].split(), caps
source = b"From: a@example.test\r\nSubject: source\r\n\r\nsource body\r\n"
typ, data = client.append("INBOX", None, None, source)
assert typ == "OK", data
uidvalidity, uid = re.search(rb"APPENDUID (\d+) (\d+)", data[0]).groups()
url = '"/INBOX;UIDVALIDITY=%s/;UID=%s"' % (uidvalidity.decode(), uid.decode())
header = '"/INBOX;UIDVALIDITY=%s/;UID=%s/;SECTION=HEADER"' % (uidvalidity.decode(), uid.decode())
typ, data = client._simple_command("APPEND", "INBOX", "CATENATE", "(URL %s URL %s)" % (header, url))
assert typ == "OK", (typ, data)
typ, data = client._simple_command("APPEND", "INBOX", "CATENATE", '(URL "/INBOX;UIDVALIDITY=1/;UID=%s")' % uid.decode())
assert typ == "NO", (typ, data)
assert client.untagged_responses.get("BADURL") or b"BADURL" in (data[0] or b""), (typ, data, client.untagged_responses)
client.select("INBOX")
typ, data = client.fetch("2", "(BODY.PEEK[])")
assert typ == "OK", data
expected = b"From: a@example.test\r\nSubject: source\r\n\r\n" + source
assert data[0][1] == expected, data
client.logout()
print("catenate ok")
