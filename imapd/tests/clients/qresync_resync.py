"""A caching client resyncing with QRESYNC (RFC 7162 §3.2.5), driven by python's imaplib.

1. A second session fills INBOX with 10,000 messages (one APPEND, then the mailbox copied into
   itself, the surplus expunged).
2. The caching client enables QRESYNC, selects INBOX and caches every UID with its flags, the
   UIDVALIDITY and the HIGHESTMODSEQ, and logs out.
3. The other session flags some messages, expunges some and appends new ones.
4. The caching client reconnects and sends one SELECT INBOX (QRESYNC (uidvalidity modseq)):
   the VANISHED (EARLIER) and FETCH responses must bring its cache exactly to what a full
   fetch shows, naming exactly the changed and expunged messages and nothing else.
5. A SELECT with a wrong UIDVALIDITY gets neither (the client must resync in full).
Prints ALL OK at the end; any mismatch raises."""
import imaplib
import re
import sys
import time

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TOTAL = 10_000
FETCH_RE = re.compile(rb"^(\d+) \(UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)\)$")


def connect():
    client = imaplib.IMAP4(host, port)
    typ, _ = client.login(user, password)
    assert typ == "OK"
    return client


def check(typ, data, what):
    assert typ == "OK", (what, typ, data)
    return data


def code_number(client, name):
    """The number of an `OK [NAME n]` response code among the untagged OKs."""
    for line in client.untagged_responses.get("OK", []):
        m = re.match(rb"\[" + name.encode() + rb" (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no {name} in {client.untagged_responses}")


def flags_of(text):
    return frozenset(f for f in text.decode().split() if f != "\\Recent")


def uid_set(text):
    """`1:3,7` -> {1, 2, 3, 7}"""
    out = set()
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        lo, hi = int(lo), int(hi or lo)
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out


def all_flags(client):
    """{uid: flags} from a full UID FETCH (the truth to compare the cache with)."""
    data = check(*client.uid("FETCH", "1:*", "(FLAGS)"), "UID FETCH 1:*")
    out = {}
    for item in data:
        m = re.match(rb"^\d+ \((?:UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+))", item)
        assert m, item
        if m.group(1):
            out[int(m.group(1))] = flags_of(m.group(2))
        else:
            out[int(m.group(4))] = flags_of(m.group(3))
    return out


def qresync_select(client, params):
    """SELECT INBOX with a QRESYNC parameter, imaplib having no word for it: the untagged
    responses of this one command, by type."""
    client.untagged_responses = {}
    typ, data = client._simple_command("SELECT", "INBOX", params)
    check(typ, data, "SELECT (QRESYNC)")
    client.state = "SELECTED"
    return client.untagged_responses


# 1. 10,000 messages.
setup = connect()
check(*setup.select("INBOX"), "SELECT")
body = "From: a@example.test\r\nSubject: cached\r\n\r\nhello\r\n"
check(*setup.append("INBOX", None, None, body.encode()), "APPEND")
while True:
    count = int(check(*setup.select("INBOX"), "SELECT")[0])
    if count >= TOTAL:
        break
    check(*setup.uid("COPY", "1:*", "INBOX"), "UID COPY")
check(*setup.store(f"{TOTAL + 1}:*", "+FLAGS.SILENT", "(\\Deleted)"), "STORE surplus")
check(*setup.expunge(), "EXPUNGE")
count = int(check(*setup.select("INBOX"), "SELECT")[0])
assert count == TOTAL, count

# 2. The cache.
cacher = connect()
check(*cacher.enable("QRESYNC"), "ENABLE QRESYNC")
check(*cacher.select("INBOX"), "SELECT")
uidvalidity = code_number(cacher, "UIDVALIDITY")
modseq = code_number(cacher, "HIGHESTMODSEQ")
cache = all_flags(cacher)
assert len(cache) == TOTAL, len(cache)
cacher.logout()

# 3. Changes while the cacher is away.
uids = sorted(cache)
flagged = uids[::997]  # 11 messages
seen = uids[5000:5010]
doomed = [uids[0], uids[123], uids[4567], uids[-1]] + uids[200:211]
check(*setup.uid("STORE", ",".join(map(str, flagged)), "+FLAGS", "(\\Flagged $Work)"), "flag")
check(*setup.uid("STORE", ",".join(map(str, seen)), "+FLAGS", "(\\Seen)"), "seen")
check(*setup.uid("STORE", ",".join(map(str, doomed)), "+FLAGS", "(\\Deleted)"), "delete")
check(*setup.expunge(), "EXPUNGE")
for i in range(3):
    check(*setup.append("INBOX", "(\\Answered)", None, body.encode()), "APPEND new")
setup.logout()
expected_vanished = set(doomed)
expected_changed = (set(flagged) | set(seen)) - expected_vanished

# 4. One SELECT resyncs.
cacher = connect()
check(*cacher.enable("QRESYNC"), "ENABLE QRESYNC")
start = time.monotonic()
responses = qresync_select(cacher, f"(QRESYNC ({uidvalidity} {modseq}))")
elapsed = time.monotonic() - start
vanished = set()
for line in responses.get("VANISHED", []):
    m = re.match(rb"^\(EARLIER\) ([\d:,]+)$", line)
    assert m, line
    vanished |= uid_set(m.group(1).decode())
assert vanished == expected_vanished, (sorted(vanished), sorted(expected_vanished))
fetched = {}
for line in responses.get("FETCH", []):
    m = FETCH_RE.match(line)
    assert m, line
    assert int(m.group(4)) > modseq, line
    fetched[int(m.group(2))] = flags_of(m.group(3))
new_uids = set(fetched) - set(cache)
assert len(new_uids) == 3, sorted(new_uids)
assert set(fetched) - new_uids == expected_changed, (sorted(fetched), sorted(expected_changed))
for uid in vanished:
    cache.pop(uid, None)
cache.update(fetched)
truth = all_flags(cacher)
assert cache == truth, "cache differs from the mailbox after the resync"
assert len(truth) == TOTAL - len(expected_vanished) + 3
print(f"resync SELECT: {len(vanished)} vanished, {len(fetched)} fetched, {elapsed * 1000:.0f} ms")

# 5. UIDVALIDITY mismatch: a plain SELECT.
responses = qresync_select(cacher, f"(QRESYNC ({uidvalidity + 1} {modseq}))")
assert "VANISHED" not in responses and "FETCH" not in responses, responses.keys()
cacher.logout()
print("ALL OK")
