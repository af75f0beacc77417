"""Writes of 1 MiB on every protocol; prints one line per protocol with what the server said.

Usage: disk_full.py SUBMISSION_PORT IMAP_PORT TAG. Passwords are alice-pw; plaintext is allowed
on loopback. Exits 0 whatever the answers are: the Rust test judges them.
"""
import email.policy
import imaplib
import smtplib
import sys
from email.message import EmailMessage

submission_port, imap_port, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = ("%s %s\n" % (tag, "x" * 1000)) * 1024  # about 1 MiB


def message(subject):
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


# SMTP with SIZE announced (smtplib adds it): refused at RCPT.
s = smtplib.SMTP("127.0.0.1", submission_port, timeout=20)
s.login("alice@example.test", "alice-pw")
try:
    s.sendmail("alice@example.test", ["alice@example.test"], message(tag + "-sized"))
    print("smtp-size 250")
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients["alice@example.test"]
    print("smtp-size %d %s" % (code, text.decode()))
except smtplib.SMTPResponseException as e:
    print("smtp-size %d %s" % (e.smtp_code, e.smtp_error.decode()))
# SMTP without SIZE: RCPT reserves an estimate, the real size meets the disk at end of data.
s.rset()
code, _ = s.docmd("MAIL FROM:<alice@example.test>")
assert code == 250, code
code, text = s.docmd("RCPT TO:<alice@example.test>")
if code == 250:
    code, text = s.data(message(tag + "-unsized"))
print("smtp-data %d %s" % (code, text.decode()))
s.quit()

imap = imaplib.IMAP4("127.0.0.1", imap_port)
imap.login("alice@example.test", "alice-pw")
typ, data = imap.append("INBOX", None, None, message(tag + "-append"))
print("imap-append %s %s" % (typ, data[0].decode()))
imap.logout()
