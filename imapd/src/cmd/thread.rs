//! THREAD and UID THREAD (RFC 5256 §3, §4): ORDEREDSUBJECT and REFERENCES. The messages are
//! chosen by the SEARCH evaluator and read as for SORT (`sort.rs`: base subject, sent date);
//! threading runs on the blocking pool, bounded in time by the limits below.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use shared::mailstore::StoredMessage;

use crate::cmd::search::refuse_charset;
use crate::cmd::sort::{Keyed, sent_date, subject_key};
use crate::fetch::mime;
use crate::session::{CmdResult, Failure, Reply, Session};
use crate::wire::parse::{SearchKey, ThreadAlgorithm};
use crate::wire::response::{Response, ThreadNode, Threads};

/// The last references of a message that are linked (RFC 5256 §4 REFERENCES step 1B); older
/// ones in a longer References field are left out.
const MAX_REFERENCES: usize = 64;

/// How far up the tree a new link is checked for a loop (step 1B/1C: "do not create a link
/// if that link would introduce a loop"); a parent deeper than this is not linked, which keeps
/// each link's cost bounded.
const MAX_LINK_DEPTH: usize = 512;

/// What threading needs of a message.
pub(crate) struct Info {
    subject: String,
    /// The Subject said it is a reply or forward (RFC 5256 §2.1).
    reply: bool,
    date: i64,
    message_id: Option<String>,
    /// Message-IDs of the References field (or In-Reply-To's first), oldest first.
    references: Vec<String>,
}

/// The `<...>` message identifiers of a field value (RFC 5322 §3.6.4), in order.
fn message_ids(value: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find(['>', '<']) else {
            break;
        };
        let id = after[..end].trim();
        if after.as_bytes()[end] == b'>' && !id.is_empty() && !id.contains(char::is_whitespace) {
            ids.push(id.to_string());
        }
        rest = &after[end..];
    }
    ids
}

fn info_of(stored: &StoredMessage) -> Info {
    let (subject, reply) = subject_key(stored);
    let first = |name: &str| mime::header_values(&stored.header, name).into_iter().next();
    let message_id = first("Message-ID").and_then(|v| message_ids(&v).into_iter().next());
    // Step 1B: the References field, or else the first message-id of In-Reply-To.
    let mut references = first("References").map(|v| message_ids(&v)).unwrap_or_default();
    if references.is_empty() {
        references = first("In-Reply-To")
            .and_then(|v| message_ids(&v).into_iter().next())
            .into_iter()
            .collect();
    }
    if references.len() > MAX_REFERENCES {
        references.drain(..references.len() - MAX_REFERENCES);
    }
    Info {
        subject,
        reply,
        date: sent_date(stored),
        message_id,
        references,
    }
}

/// The (sent date, sequence number) order of RFC 5256 §4: earlier first, ties by sequence.
fn by_date(messages: &[Keyed<Info>], a: usize, b: usize) -> Ordering {
    let (a, b) = (&messages[a], &messages[b]);
    (a.keys.date, a.seq).cmp(&(b.keys.date, b.seq))
}

/// ORDEREDSUBJECT (RFC 5256 §4): messages sorted by base subject then sent date; each run of
/// one subject is a thread whose first message is the parent of the others; threads ordered by
/// their first message's sent date.
fn ordered_subject(messages: &[Keyed<Info>], uid: bool) -> Threads {
    let number = |i: usize| if uid { messages[i].uid } else { messages[i].seq };
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|&a, &b| {
        messages[a]
            .keys
            .subject
            .cmp(&messages[b].keys.subject)
            .then_with(|| by_date(messages, a, b))
    });
    let mut threads = Threads::default();
    let mut first_of_run: Vec<usize> = Vec::new();
    for (position, &i) in order.iter().enumerate() {
        let node = threads.nodes.len();
        threads.nodes.push(ThreadNode {
            number: Some(number(i)),
            children: Vec::new(),
        });
        let same = position > 0 && messages[order[position - 1]].keys.subject == messages[i].keys.subject;
        match (same, threads.roots.last()) {
            (true, Some(&root)) => threads.nodes[root].children.push(node),
            _ => {
                threads.roots.push(node);
                first_of_run.push(i);
            }
        }
    }
    let mut roots: Vec<(usize, usize)> = threads.roots.iter().copied().zip(first_of_run).collect();
    roots.sort_by(|a, b| by_date(messages, a.1, b.1));
    threads.roots = roots.into_iter().map(|(node, _)| node).collect();
    threads
}

/// A container of the REFERENCES algorithm: a message, or a dummy standing for one that was
/// referenced but is not among the messages.
#[derive(Default)]
struct Container {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Tree {
    containers: Vec<Container>,
}

impl Tree {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.containers.push(Container {
            message,
            ..Container::default()
        });
        self.containers.len() - 1
    }

    /// Whether making `child` a child of `parent` would close a loop (or, past the depth
    /// bound, might): `child` is `parent` or one of its ancestors.
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        let mut at = Some(parent);
        for _ in 0..MAX_LINK_DEPTH {
            match at {
                None => return false,
                Some(c) if c == child => return true,
                Some(c) => at = self.containers[c].parent,
            }
        }
        true
    }

    fn unlink(&mut self, child: usize) {
        if let Some(parent) = self.containers[child].parent.take() {
            self.containers[parent].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.containers[child].parent = Some(parent);
        self.containers[parent].children.push(child);
    }

    /// The message that stands for a container when ordering: itself, or a dummy's first child.
    fn representative(&self, c: usize) -> Option<usize> {
        self.containers[c].message.or_else(|| {
            self.containers[c]
                .children
                .first()
                .and_then(|&f| self.containers[f].message)
        })
    }
}

/// REFERENCES (RFC 5256 §4), steps numbered as there.
fn references(messages: &[Keyed<Info>], uid: bool) -> Threads {
    let mut tree = Tree {
        containers: Vec::with_capacity(messages.len() * 2),
    };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // Messages arrive in sequence order, so the first of duplicate Message-IDs keeps it.
    for (i, message) in messages.iter().enumerate() {
        // (1A) The message's container; a missing or duplicate Message-ID gets one of its own.
        let own = match message.keys.message_id.as_deref() {
            Some(id) => match by_id.entry(id) {
                Entry::Occupied(e) if tree.containers[*e.get()].message.is_none() => {
                    tree.containers[*e.get()].message = Some(i);
                    *e.get()
                }
                Entry::Occupied(_) => tree.add(Some(i)),
                Entry::Vacant(e) => *e.insert(tree.add(Some(i))),
            },
            None => tree.add(Some(i)),
        };
        // (1B) Link each reference to the next, unless one has a parent already or it loops.
        let mut previous: Option<usize> = None;
        for id in &message.keys.references {
            let container = *by_id.entry(id.as_str()).or_insert_with(|| tree.add(None));
            if let Some(parent) = previous
                && parent != container
                && tree.containers[container].parent.is_none()
                && !tree.would_loop(parent, container)
            {
                tree.link(parent, container);
            }
            previous = Some(container);
        }
        // (1C) The last reference becomes the message's parent, replacing any earlier one;
        // with no references it has none.
        match previous {
            Some(parent) if parent != own && !tree.would_loop(parent, own) => tree.link(parent, own),
            Some(_) => {}
            None => tree.unlink(own),
        }
    }
    // (2) The root set; (3) the Message-ID table is no longer needed.
    drop(by_id);
    let mut roots: Vec<usize> = (0..tree.containers.len())
        .filter(|&c| tree.containers[c].parent.is_none())
        .collect();
    // (4) Prune dummies: one without children goes; one with children gives them to its own
    // parent, except at the top with more than one child. Children are handled before their
    // parents (post-order, with an explicit stack).
    let mut order = Vec::with_capacity(tree.containers.len());
    let mut stack: Vec<usize> = roots.clone();
    while let Some(c) = stack.pop() {
        order.push(c);
        stack.extend(tree.containers[c].children.iter().copied());
    }
    for &c in order.iter().rev() {
        if tree.containers[c].message.is_some() {
            continue;
        }
        let children = std::mem::take(&mut tree.containers[c].children);
        match tree.containers[c].parent {
            Some(parent) => {
                tree.containers[c].parent = None;
                let at = tree.containers[parent].children.iter().position(|&x| x == c);
                let siblings = &mut tree.containers[parent].children;
                let at = at.unwrap_or(siblings.len());
                siblings.splice(at..(at + 1).min(siblings.len()), children.iter().copied());
                for child in children {
                    tree.containers[child].parent = Some(parent);
                }
            }
            None if children.len() == 1 => {
                tree.containers[children[0]].parent = None;
                roots.push(children[0]);
            }
            None => tree.containers[c].children = children,
        }
    }
    roots.retain(|&c| tree.containers[c].message.is_some() || !tree.containers[c].children.is_empty());
    // (5) Sort the top level by sent date (a dummy by its earliest child).
    let sort_siblings = |tree: &Tree, list: &mut Vec<usize>| {
        list.sort_by(|&a, &b| match (tree.representative(a), tree.representative(b)) {
            (Some(a), Some(b)) => by_date(messages, a, b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        });
    };
    for &root in &roots {
        if tree.containers[root].message.is_none() {
            let mut children = std::mem::take(&mut tree.containers[root].children);
            sort_siblings(&tree, &mut children);
            tree.containers[root].children = children;
        }
    }
    sort_siblings(&tree, &mut roots);
    // (6) Gather threads whose subjects are the same.
    let subject_of = |tree: &Tree, c: usize| tree.representative(c).map(|m| messages[m].keys.subject.as_str());
    let mut table: HashMap<&str, usize> = HashMap::new();
    for &root in &roots {
        let Some(subject) = subject_of(&tree, root).filter(|s| !s.is_empty()) else {
            continue;
        };
        match table.entry(subject) {
            Entry::Vacant(e) => {
                e.insert(root);
            }
            Entry::Occupied(mut e) => {
                let held = *e.get();
                let held_is_dummy = tree.containers[held].message.is_none();
                let current = tree.containers[root].message;
                let replace = !held_is_dummy
                    && match (current, tree.containers[held].message) {
                        (None, _) => true,
                        (Some(cur), Some(old)) => messages[old].keys.reply && !messages[cur].keys.reply,
                        _ => false,
                    };
                if replace {
                    e.insert(root);
                }
            }
        }
    }
    let mut merged_roots = Vec::with_capacity(roots.len());
    for &root in &roots {
        // Already put under a new dummy by a root earlier in the list.
        if tree.containers[root].parent.is_some() {
            continue;
        }
        let Some(subject) = subject_of(&tree, root).filter(|s| !s.is_empty()) else {
            merged_roots.push(root);
            continue;
        };
        let Some(&held) = table.get(subject) else {
            merged_roots.push(root);
            continue;
        };
        if held == root {
            merged_roots.push(root);
            continue;
        }
        let held_message = tree.containers[held].message;
        let current_message = tree.containers[root].message;
        match (held_message, current_message) {
            // Both dummies: the current one's children join the held one's.
            (None, None) => {
                for child in std::mem::take(&mut tree.containers[root].children) {
                    tree.link(held, child);
                }
            }
            // The held one is a dummy: the current one becomes its child.
            (None, Some(_)) => tree.link(held, root),
            // The current one is a reply or forward and the held one is not: its child.
            (Some(old), Some(cur)) if messages[cur].keys.reply && !messages[old].keys.reply => tree.link(held, root),
            // Otherwise both become children of a new dummy, which takes the held one's place.
            _ => {
                let dummy = tree.add(None);
                tree.link(dummy, held);
                tree.link(dummy, root);
                match merged_roots.iter().position(|&r| r == held) {
                    Some(place) => merged_roots[place] = dummy,
                    None => merged_roots.push(dummy),
                }
                table.insert(subject, dummy);
            }
        }
    }
    let mut roots = merged_roots;
    // (7) Sort every set of siblings by sent date, dummies by their first child, then the top.
    for c in 0..tree.containers.len() {
        if tree.containers[c].message.is_some() && tree.containers[c].children.len() > 1 {
            let mut children = std::mem::take(&mut tree.containers[c].children);
            sort_siblings(&tree, &mut children);
            tree.containers[c].children = children;
        }
    }
    for c in 0..tree.containers.len() {
        if tree.containers[c].message.is_none() && tree.containers[c].children.len() > 1 {
            let mut children = std::mem::take(&mut tree.containers[c].children);
            sort_siblings(&tree, &mut children);
            tree.containers[c].children = children;
        }
    }
    sort_siblings(&tree, &mut roots);
    // The answer: containers become nodes in the same arena order.
    let number = |m: usize| if uid { messages[m].uid } else { messages[m].seq };
    Threads {
        nodes: tree
            .containers
            .iter()
            .map(|c| ThreadNode {
                number: c.message.map(number),
                children: c.children.clone(),
            })
            .collect(),
        roots,
    }
}

impl Session {
    pub(crate) async fn cmd_thread(
        &mut self,
        uid: bool,
        algorithm: ThreadAlgorithm,
        charset: &str,
        key: &SearchKey,
    ) -> CmdResult {
        if let Some(refused) = refuse_charset(charset) {
            return Ok(refused);
        }
        let (messages, _) = self.keyed_matches(uid, key, info_of).await?;
        let threads = tokio::task::spawn_blocking(move || match algorithm {
            ThreadAlgorithm::OrderedSubject => ordered_subject(&messages, uid),
            ThreadAlgorithm::References => references(&messages, uid),
        })
        .await
        .map_err(|e| {
            tracing::error!("threading: {e}");
            Failure::Reply(Reply::no("threading failed"))
        })?;
        self.respond(Response::Thread(&threads)).await?;
        Ok(Reply::ok(if uid {
            "UID THREAD completed"
        } else {
            "THREAD completed"
        }))
    }
}
