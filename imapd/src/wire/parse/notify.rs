//! NOTIFY (RFC 5465 §8): `NOTIFY NONE` and `NOTIFY SET [STATUS] event-group...`. The rules
//! that are grammar (MessageNew and MessageExpunge together, fetch-atts only for the selected
//! mailbox, one SELECTED filter) are checked here and answered BAD (§5); what the server
//! supports (BADEVENT, a NO) is the command's business.

use super::CommandBody;
use super::FetchItem;
use super::primitives::{PResult, Parser};

/// Event groups one NOTIFY SET may hold.
const MAX_GROUPS: usize = 32;
/// Mailbox names one NOTIFY SET may list (subtree and mailboxes filters together).
const MAX_NAMES: usize = 256;
/// Events one event group may list.
const MAX_EVENTS: usize = 16;

/// Which mailboxes an event group watches (RFC 5465 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyFilter {
    /// §6.1.1: the selected mailbox, events at once.
    Selected,
    /// §6.1.2: the selected mailbox, expunges only where EXPUNGE may be sent.
    SelectedDelayed,
    /// §6.3 (treated as personal, as §6.3 allows).
    Inboxes,
    /// §6.2.
    Personal,
    /// §6.4.
    Subscribed,
    /// §6.5: the names and everything below them (names as the client sent them).
    Subtree(Vec<String>),
    /// §6.6: exactly these names, no wildcards.
    Mailboxes(Vec<String>),
}

impl NotifyFilter {
    pub fn is_selected(&self) -> bool {
        matches!(self, NotifyFilter::Selected | NotifyFilter::SelectedDelayed)
    }
}

/// One event name of an event group (RFC 5465 §5, `event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// With the fetch-atts to send for a new message in the selected mailbox (§5.2).
    MessageNew(Vec<FetchItem>),
    MessageExpunge,
    FlagChange,
    AnnotationChange,
    MailboxName,
    SubscriptionChange,
    /// §5.6: METADATA entries of a watched mailbox changed.
    MailboxMetadataChange,
    /// §5.7 (`user-event`): the user's server METADATA entries changed.
    ServerMetadataChange,
    /// Any other name (`event-ext`): upper-cased.
    Other(String),
}

impl NotifyEvent {
    fn is_message_event(&self) -> bool {
        matches!(
            self,
            NotifyEvent::MessageNew(_)
                | NotifyEvent::MessageExpunge
                | NotifyEvent::FlagChange
                | NotifyEvent::AnnotationChange
        )
    }
}

/// `(filter events)`; `events` empty for NONE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventGroup {
    pub filter: NotifyFilter,
    pub events: Vec<NotifyEvent>,
}

/// What NOTIFY asks: `None` is NOTIFY NONE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySet {
    /// The STATUS indicator (§3.1): initial STATUS responses for the watched mailboxes.
    pub status: bool,
    pub groups: Vec<EventGroup>,
}

impl Parser<'_> {
    pub(super) fn notify(&mut self) -> PResult<CommandBody> {
        self.sp()?;
        match self.keyword()?.as_str() {
            "NONE" => Ok(CommandBody::Notify(None)),
            "SET" => {
                self.sp()?;
                let mut status = false;
                if self.peek() != Some(b'(') {
                    if self.keyword()? != "STATUS" {
                        return Err("NOTIFY SET takes STATUS or event groups".into());
                    }
                    status = true;
                    self.sp()?;
                }
                let mut groups = Vec::new();
                let mut names = 0;
                loop {
                    let group = self.event_group(&mut names)?;
                    groups.push(group);
                    if groups.len() > MAX_GROUPS {
                        return Err(format!("at most {MAX_GROUPS} event groups"));
                    }
                    if !self.try_sp() {
                        break;
                    }
                }
                if groups.iter().filter(|g| g.filter.is_selected()).count() > 1 {
                    // §6.1: only one of SELECTED / SELECTED-DELAYED.
                    return Err("only one SELECTED or SELECTED-DELAYED event group".into());
                }
                Ok(CommandBody::Notify(Some(NotifySet { status, groups })))
            }
            other => Err(format!("NOTIFY {other}: expected SET or NONE")),
        }
    }

    fn event_group(&mut self, names: &mut usize) -> PResult<EventGroup> {
        self.expect(b'(')?;
        let filter = match self.keyword()?.as_str() {
            "SELECTED" => NotifyFilter::Selected,
            "SELECTED-DELAYED" => NotifyFilter::SelectedDelayed,
            "INBOXES" => NotifyFilter::Inboxes,
            "PERSONAL" => NotifyFilter::Personal,
            "SUBSCRIBED" => NotifyFilter::Subscribed,
            "SUBTREE" => {
                self.sp()?;
                NotifyFilter::Subtree(self.one_or_more_mailbox(names)?)
            }
            "MAILBOXES" => {
                self.sp()?;
                NotifyFilter::Mailboxes(self.one_or_more_mailbox(names)?)
            }
            other => return Err(format!("unknown NOTIFY mailbox filter {other}")),
        };
        self.sp()?;
        let mut events = Vec::new();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            self.events(&mut events)?;
            self.expect(b')')?;
        } else {
            let save = self.pos;
            if self.keyword()? != "NONE" {
                // RFC 5465's own examples (§3.1, §6) leave the events unparenthesized
                // (`(selected MessageNew (uid) MessageExpunge)`): taken as a list up to the
                // group's `)`.
                self.pos = save;
                self.events(&mut events)?;
            }
        }
        self.expect(b')')?;
        check_group(&filter, &events)?;
        Ok(EventGroup { filter, events })
    }

    /// `event *(SP event)`.
    fn events(&mut self, events: &mut Vec<NotifyEvent>) -> PResult<()> {
        loop {
            let name = self.keyword()?;
            let event = match name.as_str() {
                "MESSAGENEW" => {
                    let mut atts = Vec::new();
                    if self.rest().starts_with(b" (") {
                        self.pos += 2;
                        loop {
                            self.fetch_att(&mut atts)?;
                            if atts.len() > MAX_EVENTS * 4 {
                                return Err("too many fetch attributes".into());
                            }
                            if !self.try_sp() {
                                break;
                            }
                        }
                        self.expect(b')')?;
                    }
                    NotifyEvent::MessageNew(atts)
                }
                "MESSAGEEXPUNGE" => NotifyEvent::MessageExpunge,
                "FLAGCHANGE" => NotifyEvent::FlagChange,
                "ANNOTATIONCHANGE" => NotifyEvent::AnnotationChange,
                "MAILBOXNAME" => NotifyEvent::MailboxName,
                "SUBSCRIPTIONCHANGE" => NotifyEvent::SubscriptionChange,
                "MAILBOXMETADATACHANGE" => NotifyEvent::MailboxMetadataChange,
                "SERVERMETADATACHANGE" => NotifyEvent::ServerMetadataChange,
                _ => NotifyEvent::Other(name),
            };
            events.push(event);
            if events.len() > MAX_EVENTS {
                return Err(format!("at most {MAX_EVENTS} events in a group"));
            }
            if !self.try_sp() {
                return Ok(());
            }
        }
    }

    fn one_or_more_mailbox(&mut self, names: &mut usize) -> PResult<Vec<String>> {
        let mut out = Vec::new();
        let mut take = |p: &mut Self| -> PResult<()> {
            *names += 1;
            if *names > MAX_NAMES {
                return Err(format!("at most {MAX_NAMES} mailbox names in NOTIFY"));
            }
            out.push(p.mailbox()?);
            Ok(())
        };
        if self.peek() == Some(b'(') {
            self.pos += 1;
            loop {
                take(self)?;
                if !self.try_sp() {
                    break;
                }
            }
            self.expect(b')')?;
        } else {
            take(self)?;
        }
        Ok(out)
    }
}

/// RFC 5465 §5 and §6.1: the rules the server MUST answer BAD.
fn check_group(filter: &NotifyFilter, events: &[NotifyEvent]) -> PResult<()> {
    let has = |want: fn(&NotifyEvent) -> bool| events.iter().any(want);
    let new = has(|e| matches!(e, NotifyEvent::MessageNew(_)));
    let expunge = has(|e| matches!(e, NotifyEvent::MessageExpunge));
    if new != expunge {
        return Err("MessageNew and MessageExpunge go together (RFC 5465 section 5)".into());
    }
    if !new && has(|e| matches!(e, NotifyEvent::FlagChange | NotifyEvent::AnnotationChange)) {
        return Err("FlagChange and AnnotationChange need MessageNew and MessageExpunge".into());
    }
    if filter.is_selected() {
        if has(|e| !e.is_message_event()) {
            return Err("only message events for SELECTED (RFC 5465 section 6.1)".into());
        }
    } else if has(|e| matches!(e, NotifyEvent::MessageNew(atts) if !atts.is_empty())) {
        return Err("fetch attributes only for SELECTED (RFC 5465 section 8)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{CommandBody, parse_command};
    use super::*;

    fn parse(s: &str) -> Result<CommandBody, String> {
        parse_command(s.as_bytes()).map(|c| c.body).map_err(|e| e.message)
    }

    #[test]
    fn rfc_examples() {
        // RFC 5465 §3.1.
        let body = parse(
            "b notify set status (selected MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge) (subtree Lists MessageNew)\r\n",
        );
        // The second group lacks MessageExpunge: §5 makes that BAD.
        assert!(body.is_err(), "{body:?}");
        // The same, grammatical (RFC 5465 §8: the events in parentheses).
        let body = parse(
            "b notify set status (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))\r\n",
        );
        assert!(body.is_ok(), "{body:?}");
        // As the RFC's examples write it (no parentheses around the events).
        let body = parse(
            "e notify set (selected MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge) (subtree Lists MessageNew MessageExpunge)\r\n",
        );
        assert!(body.is_ok(), "{body:?}");
        let body = parse(
            "e notify set (selected MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge) (subtree Lists (MessageNew MessageExpunge)) (mailboxes misc (MessageNew MessageExpunge))\r\n",
        )
        .unwrap();
        let CommandBody::Notify(Some(set)) = body else {
            panic!("{body:?}");
        };
        assert!(!set.status);
        assert_eq!(set.groups.len(), 3);
        assert_eq!(set.groups[0].filter, NotifyFilter::Selected);
        assert!(matches!(&set.groups[0].events[0], NotifyEvent::MessageNew(a) if a.len() == 2));
        assert_eq!(set.groups[1].filter, NotifyFilter::Subtree(vec!["Lists".into()]));
        assert_eq!(set.groups[2].filter, NotifyFilter::Mailboxes(vec!["misc".into()]));
        // §6.
        let body =
            parse("a notify set (mailboxes INBOX (Messagenew messageExpunge)) (personal (SubscriptionChange))\r\n");
        assert!(body.is_ok(), "{body:?}");
        let body = parse(
            "a notify set (selected (Messagenew (uid flags) messageExpunge)) (personal (MessageNew FlagChange MessageExpunge))\r\n",
        );
        assert!(body.is_ok(), "{body:?}");
        assert_eq!(parse("a NOTIFY NONE\r\n"), Ok(CommandBody::Notify(None)));
        let body = parse("a NOTIFY SET (personal NONE) (subtree (a b) (MailboxName))\r\n").unwrap();
        let CommandBody::Notify(Some(set)) = body else {
            panic!();
        };
        assert!(set.groups[0].events.is_empty());
        assert_eq!(
            set.groups[1].filter,
            NotifyFilter::Subtree(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn the_rules_that_are_bad() {
        for bad in [
            "a NOTIFY SET (selected (MessageNew))\r\n",
            "a NOTIFY SET (selected (FlagChange))\r\n",
            "a NOTIFY SET (selected (MailboxName))\r\n",
            "a NOTIFY SET (personal (MessageNew (uid) MessageExpunge))\r\n",
            "a NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))\r\n",
            "a NOTIFY SET (nowhere (MailboxName))\r\n",
            "a NOTIFY SET\r\n",
            "a NOTIFY SET STATUS\r\n",
            "a NOTIFY MAYBE\r\n",
            "a NOTIFY SET (personal (MailboxName)\r\n",
            "a NOTIFY SET (personal ())\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Unknown events parse; the command answers NO [BADEVENT].
        let body = parse("a NOTIFY SET (personal (VendorEvent))\r\n").unwrap();
        let CommandBody::Notify(Some(set)) = body else {
            panic!();
        };
        assert_eq!(set.groups[0].events, vec![NotifyEvent::Other("VENDOREVENT".into())]);
        // §5.6, §5.7 (any case, §8).
        let body = parse("a NOTIFY SET (personal (mailboxMetadataChange SERVERmetadatachange))\r\n").unwrap();
        let CommandBody::Notify(Some(set)) = body else {
            panic!();
        };
        assert_eq!(
            set.groups[0].events,
            vec![NotifyEvent::MailboxMetadataChange, NotifyEvent::ServerMetadataChange]
        );
        // §6.1: not message events, so not for SELECTED.
        for bad in [
            "a NOTIFY SET (selected (MailboxMetadataChange))\r\n",
            "a NOTIFY SET (selected-delayed (MessageNew MessageExpunge ServerMetadataChange))\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // Bounded.
        let many = "(personal (MailboxName)) ".repeat(40);
        assert!(parse(&format!("a NOTIFY SET {}\r\n", many.trim_end())).is_err());
    }
}
