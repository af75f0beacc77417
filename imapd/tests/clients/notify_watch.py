"""NOTIFY (RFC 5465) from Python: one imaplib connection asks to be told, another makes changes.
The notifications arrive on the watcher's socket before it sends anything (checked with
select), and imaplib reads them as untagged responses (EXISTS, FETCH with the asked-for header,
STATUS, LIST) at its next command."""
import imaplib
import select
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

imaplib.Commands["NOTIFY"] = ("AUTH", "SELECTED")

watcher = imaplib.IMAP4(host, port)
watcher.login(user, password)
typ, caps = watcher.capability()
assert b"NOTIFY" in caps[0].split(), caps
other = imaplib.IMAP4(host, port)
other.login(user, password)
assert other.create("Projects")[0] == "OK"

watcher.select("INBOX")
typ, data = watcher._simple_command(
    "NOTIFY",
    "SET",
    "STATUS",
    "(selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge))",
    "(personal (MessageNew MessageExpunge MailboxName))",
)
assert typ == "OK", (typ, data)
typ, status = watcher._untagged_response(typ, data, "STATUS")
assert any(b"Projects" in s and b"MESSAGES 0" in s for s in status if s), status

msg = b"From: a@example.test\r\nSubject: pushed\r\n\r\nbody\r\n"
assert other.append("INBOX", None, None, msg)[0] == "OK"
assert other.append("Projects", None, None, msg)[0] == "OK"
assert other.create("Later")[0] == "OK"

# Told without a command: the socket becomes readable on its own.
readable, _, _ = select.select([watcher.sock], [], [], 10)
assert readable, "no notification arrived unasked"
time.sleep(1)

typ, data = watcher.noop()
assert typ == "OK", data
exists = watcher.untagged_responses.get("EXISTS", [])
assert b"1" in exists, watcher.untagged_responses
fetch = watcher.untagged_responses.get("FETCH", [])
assert any(isinstance(f, tuple) and b"Subject: pushed" in f[1] for f in fetch), fetch
status = watcher.untagged_responses.get("STATUS", [])
assert any(b"Projects" in s and b"MESSAGES 1" in s for s in status), status
listed = watcher.untagged_responses.get("LIST", [])
assert any(b'"Later"' in s for s in listed), listed

# NOTIFY NONE: nothing more comes.
assert watcher._simple_command("NOTIFY", "NONE")[0] == "OK"
assert other.create("Quiet")[0] == "OK"
readable, _, _ = select.select([watcher.sock], [], [], 1)
assert not readable, "a notification after NOTIFY NONE"

watcher.logout()
other.logout()
print("ALL OK")
