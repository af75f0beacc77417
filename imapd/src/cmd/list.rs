//! LIST and LSUB (RFC 3501 §6.3.8, §6.3.9), LIST-EXTENDED (RFC 5258: selection and return
//! options, several patterns, `\NonExistent`, `\Subscribed`, CHILDINFO) with CHILDREN
//! (RFC 3348) and SPECIAL-USE (RFC 6154) attributes, and LIST-STATUS (RFC 5819).

use std::collections::{BTreeMap, BTreeSet};

use shared::mailstore::{DELIMITER, MailboxStatus};

use crate::session::{CmdResult, Reply, Session};
use crate::wire::parse::{ListOptions, StatusItem};
use crate::wire::response::Response;

/// One name LIST may show: a mailbox, a superior name that only exists through its inferiors,
/// or a subscribed name (RFC 5258 §3.1: subscriptions may outlive their mailbox).
#[derive(Default)]
struct Entry {
    exists: bool,
    special_use: Option<&'static str>,
    /// An existing mailbox lies below it (RFC 5258 §4 `\HasChildren`).
    has_children: bool,
    subscribed: bool,
}

impl Session {
    pub(crate) async fn cmd_list(&mut self, reference: &str, patterns: &[String], options: &ListOptions) -> CmdResult {
        let user = self.user()?;
        if let [pattern] = patterns
            && pattern.is_empty()
        {
            // RFC 3501 §6.3.8 (RFC 5258 §3 keeps it): the hierarchy delimiter and root name.
            let root = self.mailbox_out("");
            self.respond(Response::List {
                lsub: false,
                attributes: &["\\Noselect"],
                delimiter: DELIMITER,
                name: &root,
                childinfo: &[],
            })
            .await?;
            return Ok(Reply::ok("LIST completed"));
        }
        // A reference or pattern no mailbox name can match (8-bit without UTF8=ACCEPT, bad
        // modified UTF-7): nothing is listed for it, and LIST still succeeds (as Dovecot answers).
        let Ok(reference) = self.mailbox_in(reference) else {
            return Ok(Reply::ok("LIST completed (no name can match)"));
        };
        let patterns: Vec<String> = patterns
            .iter()
            .filter_map(|p| self.mailbox_in(p).ok())
            .map(|p| format!("{reference}{p}"))
            .collect();
        let matches_any = |name: &str| patterns.iter().any(|p| matches(p, name));

        let mailboxes = self.ctx.mail.list_mailboxes(user.id).await?;
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for m in &mailboxes {
            let entry = entries.entry(m.name.clone()).or_default();
            entry.exists = true;
            entry.special_use = m.special_use.map(|u| u.as_imap());
            let mut parent = m.name.as_str();
            while let Some((up, _)) = parent.rsplit_once(DELIMITER) {
                entries.entry(up.to_string()).or_default().has_children = true;
                parent = up;
            }
        }
        if options.subscribed || options.return_subscribed {
            for name in self.ctx.mail.subscriptions(user.id).await? {
                // Its superiors too, for RECURSIVEMATCH (they are listed only with CHILDINFO).
                let mut parent = name.as_str();
                while let Some((up, _)) = parent.rsplit_once(DELIMITER) {
                    entries.entry(up.to_string()).or_default();
                    parent = up;
                }
                entries.entry(name).or_default().subscribed = true;
            }
        }
        // RFC 5258 §3.1: which names the selection options pick. Without any, every name
        // that exists or has existing inferiors (shown `\Noselect` as RFC 3501 §6.3.8 does).
        let selected = |e: &Entry| {
            if options.subscribed {
                e.subscribed && (!options.special_use || e.special_use.is_some())
            } else if options.special_use {
                e.exists && e.special_use.is_some()
            } else {
                e.exists || e.has_children
            }
        };
        // RFC 5258 §3.5: with RECURSIVEMATCH, the names having a descendant that the selection
        // picks but the patterns do not reach get CHILDINFO (the superiors of every name are in
        // `entries`: both loops above add them).
        let mut childinfo: BTreeSet<&str> = BTreeSet::new();
        if options.recursive_match && options.subscribed {
            for (name, entry) in &entries {
                if !selected(entry) || matches_any(name) {
                    continue;
                }
                let mut parent = name.as_str();
                while let Some((up, _)) = parent.rsplit_once(DELIMITER) {
                    childinfo.insert(up);
                    parent = up;
                }
            }
        }
        // RFC 7162 §3.1: HIGHESTMODSEQ enables CONDSTORE (BAD when it is not offered): done
        // before the first line, so a refusal comes alone.
        if options
            .status
            .as_ref()
            .is_some_and(|items| items.contains(&StatusItem::HighestModSeq))
        {
            self.enable_condstore().await?;
        }
        // LIST-STATUS: every mailbox's counts in one statement, read before the first line.
        let statuses: BTreeMap<String, MailboxStatus> = match options.status {
            Some(_) => self
                .ctx
                .mail
                .mailbox_statuses(user.id)
                .await?
                .into_iter()
                .map(|s| (s.mailbox.name.clone(), s))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut listed = 0usize;
        for (name, entry) in &entries {
            let has_childinfo = childinfo.contains(name.as_str());
            if !matches_any(name) || !(selected(entry) || has_childinfo) {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !entry.exists {
                // RFC 5258 §3: `\NonExistent` "MUST be accurately computed"; `\Noselect` too,
                // for clients of RFC 3501.
                attrs.extend(["\\Noselect", "\\NonExistent"]);
            }
            if options.return_subscribed && entry.subscribed {
                attrs.push("\\Subscribed");
            }
            // RFC 5258 §4 (CHILDREN) and RFC 6154 §2: given whether asked for or not.
            attrs.push(if entry.has_children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            if let Some(u) = entry.special_use {
                attrs.push(u);
            }
            let shown = self.mailbox_out(name);
            let mut out = Vec::new();
            Response::List {
                lsub: false,
                attributes: &attrs,
                delimiter: DELIMITER,
                name: &shown,
                childinfo: if has_childinfo { &["SUBSCRIBED"] } else { &[] },
            }
            .write(&mut out);
            self.conn.send(&out).await?;
            // RFC 5819 §2: the STATUS of each listed mailbox that can be selected, right after
            // its LIST line; none for a \NoSelect or \NonExistent name, nor for one listed only
            // for its children's sake (RECURSIVEMATCH, not picked by the selection itself).
            if let Some(items) = &options.status
                && entry.exists
                && selected(entry)
                && let Some(status) = statuses.get(name)
            {
                self.send_status(status, items).await?;
            }
            listed += 1;
        }
        tracing::debug!(peer = %self.peer, listed, "LIST");
        Ok(Reply::ok("LIST completed"))
    }

    /// RFC 9051 §6.3.2: the LIST response an IMAP4rev2 SELECT or EXAMINE gives for the
    /// mailbox, its attributes as LIST would show them. (OLDNAME is for a name the server
    /// normalized to another form (RFC 9051 §6.3.2); tinydc stores names as sent, so none.)
    pub(crate) async fn select_list_line(
        &self,
        user_id: i64,
        mailbox: &shared::mailstore::Mailbox,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::session::Failure> {
        let below = format!("{}{DELIMITER}", mailbox.name);
        let has_children = self
            .ctx
            .mail
            .list_mailboxes(user_id)
            .await?
            .iter()
            .any(|m| m.name.starts_with(&below));
        let mut attrs = vec![if has_children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        }];
        if let Some(u) = mailbox.special_use {
            attrs.push(u.as_imap());
        }
        Response::List {
            lsub: false,
            attributes: &attrs,
            delimiter: DELIMITER,
            name: &self.mailbox_out(&mailbox.name),
            childinfo: &[],
        }
        .write(out);
        Ok(())
    }

    /// LSUB (RFC 3501 §6.3.9): the subscribed names matching `pattern`, whether or not a
    /// mailbox has them now. When `%` stops at a superior of a subscribed name that is not
    /// subscribed itself, that superior is listed with `\Noselect`.
    pub(crate) async fn cmd_lsub(&mut self, reference: &str, pattern: &str) -> CmdResult {
        let user_id = self.user()?.id;
        if pattern.is_empty() {
            // RFC 3501 §6.3.9 refers to LIST's special case: the delimiter and root.
            let root = self.mailbox_out("");
            self.respond(Response::List {
                lsub: true,
                attributes: &["\\Noselect"],
                delimiter: DELIMITER,
                name: &root,
                childinfo: &[],
            })
            .await?;
            return Ok(Reply::ok("LSUB completed"));
        }
        let (Ok(reference), Ok(pattern)) = (self.mailbox_in(reference), self.mailbox_in(pattern)) else {
            return Ok(Reply::ok("LSUB completed (no name can match)"));
        };
        let pattern = format!("{reference}{pattern}");
        let pattern = pattern.as_str();
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
                childinfo: &[],
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
