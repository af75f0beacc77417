//! LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with CHILDREN (RFC 3348) and SPECIAL-USE
//! (RFC 6154) attributes.

use std::collections::BTreeMap;

use shared::mailstore::DELIMITER;

use crate::session::{CmdResult, Reply, Session};
use crate::wire::response::Response;

/// One name to show: a real mailbox, or a superior name that only exists through its inferiors.
struct Entry {
    real: bool,
    special_use: Option<&'static str>,
    has_children: bool,
}

impl Session {
    pub(crate) async fn cmd_list(
        &mut self,
        reference: &str,
        pattern: &str,
        lsub: bool,
        special_use_only: bool,
        return_special_use: bool,
    ) -> CmdResult {
        let user = self.user()?;
        let verb = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: the hierarchy delimiter and root name.
            let root = self.mailbox_out("");
            self.respond(Response::List {
                lsub,
                attributes: &["\\Noselect"],
                delimiter: DELIMITER,
                name: &root,
            })
            .await?;
            return Ok(Reply::ok(format!("{verb} completed")));
        }
        // A reference or pattern no mailbox name can match (8-bit without UTF8=ACCEPT, bad
        // modified UTF-7): nothing is listed, and LIST still succeeds (as Dovecot answers).
        let (Ok(reference), Ok(pattern)) = (self.mailbox_in(reference), self.mailbox_in(pattern)) else {
            return Ok(Reply::ok(format!("{verb} completed (no name can match)")));
        };
        let full = format!("{reference}{pattern}");
        if lsub {
            return self.lsub(user.id, &full).await;
        }
        let mailboxes = self.ctx.mail.list_mailboxes(user.id).await?;
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for m in &mailboxes {
            entries.insert(
                m.name.clone(),
                Entry {
                    real: true,
                    special_use: m.special_use.map(|u| u.as_imap()),
                    has_children: false,
                },
            );
        }
        for m in &mailboxes {
            let mut parent = m.name.as_str();
            while let Some((up, _)) = parent.rsplit_once(DELIMITER) {
                entries
                    .entry(up.to_string())
                    .or_insert(Entry {
                        real: false,
                        special_use: None,
                        has_children: false,
                    })
                    .has_children = true;
                parent = up;
            }
        }
        let mut out = Vec::new();
        for (name, entry) in &entries {
            if !matches(&full, name) {
                continue;
            }
            if special_use_only && entry.special_use.is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !entry.real {
                attrs.push("\\Noselect");
            }
            if !lsub {
                attrs.push(if entry.has_children {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                });
                // RFC 6154 §2: servers may always include the special-use attributes.
                let _ = return_special_use;
                if let Some(u) = entry.special_use {
                    attrs.push(u);
                }
            }
            Response::List {
                lsub,
                attributes: &attrs,
                delimiter: DELIMITER,
                name: &self.mailbox_out(name),
            }
            .write(&mut out);
        }
        self.conn.send(&out).await?;
        Ok(Reply::ok(format!("{verb} completed")))
    }

    /// LSUB (RFC 3501 §6.3.9): the subscribed names matching `pattern`, whether or not a
    /// mailbox has them now. When `%` stops at a superior of a subscribed name that is not
    /// subscribed itself, that superior is listed with `\Noselect`.
    async fn lsub(&mut self, user_id: i64, pattern: &str) -> CmdResult {
        let subscribed = self.ctx.mail.subscriptions(user_id).await?;
        let mut shown: BTreeMap<&str, bool> = BTreeMap::new();
        for name in &subscribed {
            if matches(pattern, name) {
                shown.insert(name, false);
                continue;
            }
            let mut parent = name.as_str();
            while let Some((up, _)) = parent.rsplit_once(DELIMITER) {
                if matches(pattern, up) {
                    shown.entry(up).or_insert(true);
                }
                parent = up;
            }
        }
        let mut out = Vec::new();
        for (name, noselect) in shown {
            // A superior that is itself subscribed shows as subscribed (`or_insert` above).
            let noselect = noselect && subscribed.binary_search_by(|s| s.as_str().cmp(name)).is_err();
            let attributes: &[&str] = if noselect { &["\\Noselect"] } else { &[] };
            Response::List {
                lsub: true,
                attributes,
                delimiter: DELIMITER,
                name: &self.mailbox_out(name),
            }
            .write(&mut out);
        }
        self.conn.send(&out).await?;
        Ok(Reply::ok("LSUB completed"))
    }
}

/// Whether `name` matches a LIST pattern: `*` matches anything, `%` anything but the
/// delimiter (RFC 3501 §6.3.8). `INBOX` matches case-insensitively.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern = inbox_upper(pattern);
    wildcard(pattern.as_bytes(), name.as_bytes())
}

fn inbox_upper(pattern: &str) -> String {
    if pattern.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("INBOX")) {
        let rest = &pattern[5..];
        if rest.is_empty() || rest.starts_with(DELIMITER) || rest.starts_with(['*', '%']) {
            return format!("INBOX{rest}");
        }
    }
    pattern.to_string()
}

fn wildcard(p: &[u8], n: &[u8]) -> bool {
    // Iterative matching with backtracking over the last star (bounded: O(len(p) * len(n))).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize, bool)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'*' || p[pi] == b'%') {
            star = Some((pi, ni, p[pi] == b'%'));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn, percent)) = star {
            if percent && n[sn] == DELIMITER as u8 {
                return false;
            }
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1, percent));
        } else {
            return false;
        }
    }
    while pi < p.len() && (p[pi] == b'*' || p[pi] == b'%') {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*", "INBOX"));
        assert!(matches("*", "a/b/c"));
        assert!(matches("%", "Sent"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(!matches("a/%", "a/b/c"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("Inbox/*", "INBOX/x"));
        assert!(!matches("sent", "Sent"));
        assert!(matches("S*t", "Sent"));
        assert!(matches("%/%", "a/b"));
        assert!(!matches("abcdé*", "INBOX"));
        assert!(!matches("inbo€", "INBOX"));
    }
}
