//! GETMETADATA and SETMETADATA (RFC 5464): server entries (mailbox `""`) and mailbox entries,
//! stored by `shared::metadata` (limits, quota). The server's `/shared/admin` (§3.2.1.1) is the
//! postmaster of the user's domain, which every domain here accepts mail for (RFC 5321
//! §4.5.1, `accounts::resolve_recipient`); the server's other `/shared` entries do not exist
//! and cannot be set (NO [NOPERM]). Private entries are supported everywhere, so `[METADATA
//! NOPRIVATE]` is never needed. Unsolicited METADATA responses (§4.4.2) go to the user's other
//! sessions that asked NOTIFY for MailboxMetadataChange or ServerMetadataChange (RFC 5465
//! §5.6, §5.7; session/notify.rs), never back to the session that made the change (§5).

use shared::accounts::domain_of;
use shared::metadata::{self, MetadataError, Scope};

use crate::session::{CmdResult, Code, Failure, Reply, Session};
use crate::wire::parse::MetadataOptions;
use crate::wire::response::Response;

/// Value bytes after which a METADATA response line is ended and the next one begun.
const RESPONSE_VALUE_BYTES: usize = 64 << 10;

impl Session {
    /// The entries' owner named by a command's mailbox argument, and the name to answer with.
    async fn metadata_scope(&self, user_id: i64, raw: &str) -> Result<(Scope, Vec<u8>), Failure> {
        if raw.is_empty() {
            return Ok((Scope::Server, b"\"\"".to_vec()));
        }
        let name = self.mailbox_in(raw)?;
        let mailbox = self.ctx.mail.mailbox(user_id, &name).await?;
        Ok((Scope::Mailbox(mailbox.id), self.mailbox_out(&mailbox.name)))
    }

    pub(crate) async fn cmd_getmetadata(
        &mut self,
        raw: &str,
        options: MetadataOptions,
        entries: &[String],
    ) -> CmdResult {
        let user = self.user()?;
        let (scope, mailbox) = self.metadata_scope(user.id, raw).await?;
        let fixed = match scope {
            // RFC 5464 §3.2.1.1: a URI for the server's administrator.
            Scope::Server => vec![(
                "/shared/admin".to_string(),
                format!("mailto:postmaster@{}", domain_of(&user.address)).into_bytes(),
            )],
            Scope::Mailbox(_) => Vec::new(),
        };
        let found = metadata::get(&self.ctx.db, user.id, scope, entries, options.depth, &fixed).await?;
        // RFC 5464 §4.2.1: values over MAXSIZE are left out; the largest of them is reported.
        let mut longest: Option<u64> = None;
        let kept: Vec<(String, Option<Vec<u8>>)> = found
            .into_iter()
            .filter(|(_, value)| match (value, options.maxsize) {
                (Some(v), Some(max)) if v.len() as u64 > max => {
                    longest = longest.max(Some(v.len() as u64));
                    false
                }
                _ => true,
            })
            .collect();
        // Several METADATA responses for one mailbox when the values are large (each is a
        // complete RFC 5464 §4.4.1 response; Dovecot sends one per entry), so the answer goes
        // out as it is written rather than as one line of up to `metadata_max_entries` values.
        let mut start = 0;
        while start < kept.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < kept.len() && (end == start || bytes < RESPONSE_VALUE_BYTES) {
                bytes += kept[end].1.as_ref().map_or(0, Vec::len);
                end += 1;
            }
            self.respond(Response::Metadata {
                mailbox: &mailbox,
                entries: &kept[start..end],
            })
            .await?;
            start = end;
        }
        let reply = Reply::ok("GETMETADATA completed");
        Ok(match longest {
            Some(n) => reply.code(Code::MetadataLongEntries(n)),
            None => reply,
        })
    }

    pub(crate) async fn cmd_setmetadata(&mut self, raw: &str, entries: Vec<(String, Option<Vec<u8>>)>) -> CmdResult {
        let user = self.user()?;
        let (scope, _) = self.metadata_scope(user.id, raw).await?;
        let limits = self.ctx.config.imap.metadata_limits();
        let refused = match metadata::set(&self.ctx.db, user.id, scope, &entries, limits).await {
            Ok(published) => {
                // RFC 5465 §5: the change is this session's own; its echo is not told back.
                self.remember_own(published);
                // The entries' bytes are usage: a warning threshold may have been crossed
                // either way (shared/src/quota/warn.rs decides), as after any mail write.
                shared::quota::warn::after_write(&self.ctx.mail, &[user.id]).await;
                return Ok(Reply::ok("SETMETADATA completed"));
            }
            Err(MetadataError::ValueTooLarge { max }) => {
                Reply::no(format!("values are at most {max} bytes")).code(Code::MetadataMaxSize(max))
            }
            Err(MetadataError::TooMany { max }) => {
                Reply::no(format!("at most {max} entries per user")).code(Code::MetadataTooMany)
            }
            Err(MetadataError::ReadOnly) => Reply::no("the server's /shared entries are read-only").code(Code::NoPerm),
            Err(MetadataError::NoSuchMailbox) => Reply::no("no such mailbox").code(Code::NonExistent),
            Err(MetadataError::Quota(e)) => return Err(e.into()),
            Err(MetadataError::Db(e)) => return Err(e.into()),
        };
        tracing::info!(peer = %self.peer, user_id = user.id, "SETMETADATA refused: {}", refused.text);
        Ok(refused)
    }

    /// Before a SETMETADATA literal of `size` bytes is read: refuse one longer than any value
    /// could be (RFC 5464 §4.3 `[METADATA MAXSIZE n]`, RFC 7889 §4: before it is sent), so a
    /// client cannot make the server hold `max_literal_size` bytes for an entry. Literals a
    /// value may fit in (a mailbox name, an entry name) are left to the command.
    pub(crate) fn metadata_literal_refusal(&self, buf: &[u8], size: u64) -> Option<Reply> {
        // Before login the command is refused as a whole (BAD), whatever its literals.
        self.state.user()?;
        let mut words = buf.splitn(3, |&b| b == b' ');
        let _tag = words.next()?;
        if !words.next()?.eq_ignore_ascii_case(b"SETMETADATA") {
            return None;
        }
        let imap = &self.ctx.config.imap;
        let largest_useful = imap
            .metadata_max_value
            .max(imap.max_mailbox_name_length)
            .max(metadata::MAX_NAME_LENGTH as u64);
        (size > largest_useful).then(|| {
            tracing::info!(peer = %self.peer, size, "SETMETADATA refused: value literal too large");
            Reply::no(format!("values are at most {} bytes", imap.metadata_max_value))
                .code(Code::MetadataMaxSize(imap.metadata_max_value))
        })
    }
}
