//! The audit trail's event schema and its hash chain.
//!
//! Every event carries the SHA-256 of the one before it, so deleting, editing or
//! reordering a stored event breaks the chain at that point, and
//! [`verify_chain`] names the first broken link. The hash covers a canonical
//! JSON encoding of every field (fields in a fixed order, `null` for absent),
//! which an auditor can recompute in any language.
//!
//! What never goes in an event: tokens, secrets, keys. Events name tokens by
//! `jti` and clients by `client_id`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest `reason` kept; longer ones are cut.
pub const MAX_REASON_LEN: usize = 512;

/// Whether the audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done: a token issued, a client registered, a key rotated.
    Success,
    /// Refused or failed.
    Failure,
}

impl Outcome {
    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// An event before it is chained and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unix time in milliseconds.
    pub time_ms: i64,
    /// What happened: `token.issued`, `token.refused`, `client.registered`,
    /// `client.secret_rotated`, `key.rotated`, `token.revoked`, ...
    pub kind: String,
    /// The client acting, if known.
    pub client_id: Option<String>,
    /// The subject (principal) concerned.
    pub subject: Option<String>,
    /// The audience (resource) concerned.
    pub audience: Option<String>,
    /// The scopes concerned, space-delimited.
    pub scopes: Option<String>,
    /// The token concerned, by its `jti`.
    pub jti: Option<String>,
    /// Success or failure.
    pub outcome: Outcome,
    /// Why: the OAuth error code and a short description, or a note.
    pub reason: Option<String>,
}

impl NewEvent {
    /// An event of `kind` with `outcome` at `time_ms`, other fields empty.
    pub fn new(time_ms: i64, kind: &str, outcome: Outcome) -> Self {
        Self {
            time_ms,
            kind: kind.to_owned(),
            client_id: None,
            subject: None,
            audience: None,
            scopes: None,
            jti: None,
            outcome,
            reason: None,
        }
    }

    /// Chains this event after `prev_hash` as number `seq`.
    pub fn chain(mut self, seq: i64, prev_hash: &str) -> Event {
        if let Some(r) = &mut self.reason {
            if r.len() > MAX_REASON_LEN {
                let mut cut = MAX_REASON_LEN;
                while !r.is_char_boundary(cut) {
                    cut -= 1;
                }
                r.truncate(cut);
            }
        }
        let hash = event_hash(seq, prev_hash, &self);
        Event {
            seq,
            event: self,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

/// A stored event: its position, content and links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The content.
    #[serde(flatten)]
    pub event: NewEvent,
    /// The hash of event `seq - 1` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// SHA-256 (hex) of the canonical JSON of an event at `seq` after `prev_hash`.
pub fn event_hash(seq: i64, prev_hash: &str, e: &NewEvent) -> String {
    CANONICAL.with(|buf| {
        let mut buf = buf.borrow_mut();
        canonical_json(seq, prev_hash, e, &mut buf);
        let mut hex = [0_u8; 64];
        // 32 bytes always fit 64 hex digits, which are ASCII.
        let _ = hex::encode_to_slice(Sha256::digest(buf.as_slice()), &mut hex);
        String::from_utf8_lossy(&hex).into_owned()
    })
}

thread_local! {
    /// The canonical encoding of the event being hashed: one buffer per
    /// thread, grown to the largest event seen, instead of one allocation
    /// per event on the audit writer's hot path.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes (into `out`, cleared first) the canonical JSON of an event at
/// `seq` after `prev_hash`: one object with the fields `seq`, `prev_hash`,
/// `time_ms`, `kind`, `client_id`, `subject`, `audience`, `scopes`, `jti`,
/// `outcome`, `reason` in that order, `null` for an absent one, no white
/// space, strings escaped as `serde_json` escapes them (`"`, `\\` and control
/// characters only; `\b \f \n \r \t` short, the rest as `\u00xx`).
///
/// That is byte for byte `serde_json::to_vec` of those fields (a test holds
/// it to that): written by hand because it runs once per audited event, and
/// the serializer's byte-at-a-time escaping was the largest single cost of
/// the audit writer.
pub fn canonical_json(seq: i64, prev_hash: &str, e: &NewEvent, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"seq\":");
    push_int(out, seq);
    out.extend_from_slice(b",\"prev_hash\":");
    push_str(out, prev_hash);
    out.extend_from_slice(b",\"time_ms\":");
    push_int(out, e.time_ms);
    out.extend_from_slice(b",\"kind\":");
    push_str(out, &e.kind);
    for (name, value) in [
        (&b",\"client_id\":"[..], &e.client_id),
        (b",\"subject\":", &e.subject),
        (b",\"audience\":", &e.audience),
        (b",\"scopes\":", &e.scopes),
        (b",\"jti\":", &e.jti),
    ] {
        out.extend_from_slice(name);
        push_opt(out, value.as_deref());
    }
    out.extend_from_slice(b",\"outcome\":");
    push_str(out, e.outcome.as_str());
    out.extend_from_slice(b",\"reason\":");
    push_opt(out, e.reason.as_deref());
    out.push(b'}');
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string, escaped as `serde_json` does.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Without early exit, so that the compiler checks many bytes at once.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                c if c < 0x20 => {
                    use std::io::Write as _;
                    // Writing to a Vec cannot fail.
                    let _ = write!(out, "\\u{c:04x}");
                }
                c => out.push(c),
            }
        }
    }
    out.push(b'"');
}

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The `seq` of the first event that fails.
    pub seq: i64,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Where a stored chain starts: the last event that retention removed from
/// its front, or seq 0 and [`GENESIS_HASH`] while none was. The first stored
/// event must link to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The `seq` of the last event removed (0: none).
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

impl Anchor {
    /// The start of a chain from which nothing was removed.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// Walks a chain from its start or from a trusted [`Anchor`].
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::from_anchor(&Anchor::genesis())
    }
}

impl ChainVerifier {
    /// Checks the events that follow `anchor`.
    pub fn from_anchor(anchor: &Anchor) -> Self {
        Self {
            next_seq: anchor.seq + 1,
            prev_hash: anchor.hash.clone(),
        }
    }

    /// Checks the next event. Feed events in `seq` order.
    pub fn push(&mut self, e: &Event) -> Result<(), BrokenLink> {
        let broken = |problem| BrokenLink {
            seq: e.seq,
            problem,
        };
        if e.seq != self.next_seq {
            return Err(BrokenLink {
                seq: self.next_seq,
                problem: "event missing (sequence gap)",
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(broken("prev_hash does not match the previous event"));
        }
        if event_hash(e.seq, &e.prev_hash, &e.event) != e.hash {
            return Err(broken("content does not match its hash (edited)"));
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&e.hash);
        Ok(())
    }

    /// The `seq` of the last event checked (the anchor's before any).
    pub fn checked(&self) -> i64 {
        self.next_seq - 1
    }

    /// The hash of the last event checked.
    pub fn head_hash(&self) -> &str {
        &self.prev_hash
    }
}

/// Verifies a whole chain from genesis; returns how many events it holds.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<i64, BrokenLink> {
    let mut v = ChainVerifier::default();
    for e in events {
        v.push(e)?;
    }
    Ok(v.checked())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: `serde_json`'s compact encoding of the fields in order.
    #[derive(Serialize)]
    struct Canonical<'a> {
        seq: i64,
        prev_hash: &'a str,
        time_ms: i64,
        kind: &'a str,
        client_id: Option<&'a str>,
        subject: Option<&'a str>,
        audience: Option<&'a str>,
        scopes: Option<&'a str>,
        jti: Option<&'a str>,
        outcome: &'a str,
        reason: Option<&'a str>,
    }

    fn reference(seq: i64, prev_hash: &str, e: &NewEvent) -> Vec<u8> {
        serde_json::to_vec(&Canonical {
            seq,
            prev_hash,
            time_ms: e.time_ms,
            kind: &e.kind,
            client_id: e.client_id.as_deref(),
            subject: e.subject.as_deref(),
            audience: e.audience.as_deref(),
            scopes: e.scopes.as_deref(),
            jti: e.jti.as_deref(),
            outcome: e.outcome.as_str(),
            reason: e.reason.as_deref(),
        })
        .unwrap()
    }

    #[test]
    fn canonical_json_is_serde_jsons_encoding() {
        // Every character that JSON escapes (and a few it does not), alone
        // and among others, in every string field, absent fields as null.
        let mut samples: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| c.to_string())
            .collect();
        samples.extend(
            [
                "",
                "plain",
                "a\"b\\c",
                "tab\there\nnew\r\u{1}\u{1f}\u{7f}",
                "é ✓ 𝄞 \u{2028}",
                "</script>",
            ]
            .map(String::from),
        );
        let mut buf = Vec::new();
        for (i, s) in samples.iter().enumerate() {
            let mut e = NewEvent::new(-7 + i as i64, s, Outcome::Failure);
            let present = Some(s.clone());
            e.client_id.clone_from(&present);
            e.audience.clone_from(&present);
            e.jti.clone_from(&present);
            if i % 2 == 0 {
                e.subject.clone_from(&present);
                e.scopes.clone_from(&present);
                e.reason.clone_from(&present);
            }
            for (seq, prev) in [(i64::MIN, s.as_str()), (i64::MAX, GENESIS_HASH), (0, "")] {
                canonical_json(seq, prev, &e, &mut buf);
                assert_eq!(buf, reference(seq, prev, &e), "{s:?}");
            }
        }
    }

    fn chain(n: i64) -> Vec<Event> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = NewEvent::new(1000 + seq, "token.issued", Outcome::Success);
                e.client_id = Some("c".into());
                let ev = e.chain(seq, &prev);
                prev = ev.hash.clone();
                ev
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
    }

    #[test]
    fn edit_delete_and_reorder_are_named() {
        let mut c = chain(5);
        c[2].event.client_id = Some("mallory".into());
        assert_eq!(verify_chain(&c).unwrap_err().seq, 3);

        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 2);

        let mut c = chain(5);
        c.swap(3, 4);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 4);

        // Re-hashing an edited event does not help: the next link breaks.
        let mut c = chain(5);
        c[1].event.jti = Some("x".into());
        c[1].hash = event_hash(2, &c[1].prev_hash, &c[1].event);
        assert_eq!(verify_chain(&c).unwrap_err().seq, 3);
    }
}
