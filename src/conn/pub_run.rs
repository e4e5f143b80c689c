//! A run of PUBs to one subject from one connection, held until its input ends.
//!
//! Publishers mostly send many messages to one subject back to back (a stream of events, a
//! benchmark). Delivered one by one, each message repeats per subscriber the same lookups
//! and bookkeeping (is the queue open, which staging buffer, the auto-unsubscribe count)
//! and writes a few dozen bytes into each of the subscribers' staging buffers in turn.
//! Held as a run, the messages are looked up once and each subscriber's share is written
//! in one stretch: per message, `MSG <subject> <sid>` and the message's tail, which is
//! built once here.
//!
//! A run lasts at most until the end of the received buffer that holds it (the reactor
//! flushes it there, before the batch's output is appended), so it adds no latency. It is
//! also flushed before any other op of its connection and before a message it cannot hold,
//! so the connection's ops keep their order, and it is bounded in bytes and messages.

use super::deliver::{put, usize_text, Message};
use super::memo::same_bytes;

/// Messages with larger payloads are not held: copying them into the run costs more than
/// the per-message work it saves.
pub const RUN_PAYLOAD_MAX: usize = 1024;
/// Tail bytes a run holds before it is flushed: small enough that every subscriber's share
/// of one run stays in cache while it is written.
pub const RUN_BYTES_MAX: usize = 16 * 1024;
/// Messages a run holds before it is flushed.
pub const RUN_MSGS_MAX: usize = 512;
const _: () = assert!(
    RUN_MSGS_MAX <= u16::MAX as usize,
    "held messages are indexed by u16"
);

/// One held message: its tail is `tails[start..end]`, ` [reply ]<len>\r\n<payload>\r\n`.
#[derive(Clone, Copy)]
struct Held {
    start: u32,
    /// Length of the reply subject, `None` without one.
    reply_len: Option<u32>,
    payload_start: u32,
    end: u32,
}

/// The held messages of one run; empty between runs (its buffers keep their capacity).
#[derive(Default)]
pub struct PubRun {
    subject: Vec<u8>,
    tails: Vec<u8>,
    msgs: Vec<Held>,
    payload_bytes: u64,
    replies: usize,
}

impl PubRun {
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// Payload bytes of all held messages.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Tail bytes of all held messages (what a subscriber gets besides the `MSG` heads).
    pub fn tails_len(&self) -> usize {
        self.tails.len()
    }

    /// Whether any held message has a reply subject.
    pub fn has_replies(&self) -> bool {
        self.replies > 0
    }

    /// Whether a message to `subject` with `payload` can join this run (an empty run takes
    /// any subject).
    #[inline]
    pub fn takes(&self, subject: &[u8], payload: &[u8]) -> bool {
        payload.len() <= RUN_PAYLOAD_MAX
            && (self.msgs.is_empty() || same_bytes(&self.subject, subject))
    }

    /// Whether a message to `subject` with `payload` is the next of a run already held
    /// (not empty, same subject, payload small enough).
    #[inline(always)]
    pub fn continues(&self, subject: &[u8], payload: &[u8]) -> bool {
        !self.msgs.is_empty()
            && payload.len() <= RUN_PAYLOAD_MAX
            && same_bytes(&self.subject, subject)
    }

    /// Adds a message; the caller checked [`takes`](Self::takes). `wire_tail` is the
    /// message's tail as it came on the wire, when the parser vouches that it is the same
    /// bytes (see `Op::Pub`): then it is copied whole. Returns true when the run is full
    /// and must be flushed.
    #[inline]
    pub fn push(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
        wire_tail: Option<&[u8]>,
    ) -> bool {
        debug_assert!(self.takes(subject, payload));
        if self.msgs.is_empty() {
            self.subject.clear();
            self.subject.extend_from_slice(subject);
        }
        // Short pieces: copied inline (`put`), not through a `memcpy` call each.
        let t = &mut self.tails;
        let start = t.len();
        let reply_len = reply.map(|r| r.len() as u32);
        if let Some(r) = reply {
            self.replies += 1;
            debug_assert!(wire_tail.is_none_or(|w| w[1..].starts_with(r)));
        }
        let payload_start = match wire_tail {
            Some(w) => {
                put(t, w);
                t.len() - 2 - payload.len()
            }
            None => {
                t.push(b' ');
                if let Some(r) = reply {
                    put(t, r);
                    t.push(b' ');
                }
                let mut digits = [0u8; 20];
                put(t, usize_text(payload.len(), &mut digits));
                put(t, b"\r\n");
                let at = t.len();
                put(t, payload);
                put(t, b"\r\n");
                at
            }
        };
        debug_assert!(wire_tail.is_none_or(
            |w| w.ends_with(b"\r\n") && &w[w.len() - 2 - payload.len()..w.len() - 2] == payload
        ));
        self.msgs.push(Held {
            start: start as u32,
            reply_len,
            payload_start: payload_start as u32,
            end: t.len() as u32,
        });
        self.payload_bytes += payload.len() as u64;
        self.tails.len() >= RUN_BYTES_MAX || self.msgs.len() >= RUN_MSGS_MAX
    }

    /// Each held message's tail, in order.
    #[inline]
    pub fn tails(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.msgs
            .iter()
            .map(|m| &self.tails[m.start as usize..m.end as usize])
    }

    /// Held message `i` as a message to deliver on its own.
    pub fn message(&self, i: usize) -> Message<'_> {
        let m = self.msgs[i];
        let reply = m.reply_len.map(|n| {
            let at = m.start as usize + 1;
            &self.tails[at..at + n as usize]
        });
        let payload = &self.tails[m.payload_start as usize..m.end as usize - 2];
        Message::new(&self.subject, reply, None, payload)
    }

    /// Forgets the held messages, keeping the buffers (shrunk if a burst grew them).
    pub fn clear(&mut self) {
        self.msgs.clear();
        self.tails.clear();
        self.payload_bytes = 0;
        self.replies = 0;
        if self.tails.capacity() > 2 * RUN_BYTES_MAX + 2 * RUN_PAYLOAD_MAX {
            self.tails.shrink_to(RUN_BYTES_MAX + 2 * RUN_PAYLOAD_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_what_follows_the_sid_on_the_wire() {
        let mut run = PubRun::default();
        assert!(run.takes(b"a.b", b"x"));
        assert!(!run.push(b"a.b", None, b"hello", None));
        assert!(!run.takes(b"a.c", b"x"));
        assert!(run.takes(b"a.b", b"x"));
        run.push(b"a.b", Some(b"_INBOX.1"), b"", None);
        let tails: Vec<&[u8]> = run.tails().collect();
        assert_eq!(
            tails,
            [&b" 5\r\nhello\r\n"[..], &b" _INBOX.1 0\r\n\r\n"[..]]
        );
        assert_eq!(run.len(), 2);
        assert_eq!(run.payload_bytes(), 5);
        assert!(run.has_replies());
        let m = run.message(1);
        assert_eq!(m.subject, b"a.b");
        assert_eq!(m.reply, Some(&b"_INBOX.1"[..]));
        assert_eq!(m.payload, b"");
        let m = run.message(0);
        assert_eq!((m.reply, m.payload), (None, &b"hello"[..]));
        run.clear();
        assert!(run.is_empty() && !run.has_replies());
        assert!(run.takes(b"other", b"x"));
    }

    #[test]
    fn a_tail_from_the_wire_is_held_as_if_built() {
        let mut built = PubRun::default();
        let mut wired = PubRun::default();
        // (reply, payload, the tail on the wire; empty: build it)
        type Case<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);
        let msgs: [Case; 3] = [
            (None, b"hello", b" 5\r\nhello\r\n"),
            (Some(b"_INBOX.7"), b"", b" _INBOX.7 0\r\n\r\n"),
            (None, &[b'x'; 40], b""),
        ];
        for (reply, payload, tail) in msgs {
            built.push(b"s", reply, payload, None);
            let wire = if tail.is_empty() {
                let mut t = b" 40\r\n".to_vec();
                t.extend_from_slice(payload);
                t.extend_from_slice(b"\r\n");
                t
            } else {
                tail.to_vec()
            };
            wired.push(b"s", reply, payload, Some(&wire));
        }
        assert!(built.tails().eq(wired.tails()));
        for i in 0..3 {
            let (a, b) = (built.message(i), wired.message(i));
            assert_eq!((a.reply, a.payload), (b.reply, b.payload));
        }
        assert_eq!(wired.message(0).payload, b"hello");
        assert_eq!(wired.message(1).reply, Some(&b"_INBOX.7"[..]));
    }

    #[test]
    fn a_run_is_bounded_in_messages_bytes_and_payload_size() {
        let mut run = PubRun::default();
        assert!(!run.takes(b"s", &[0u8; RUN_PAYLOAD_MAX + 1]));
        let full = (0..RUN_MSGS_MAX)
            .map(|_| run.push(b"s", None, b"", None))
            .last();
        assert_eq!(full, Some(true));
        run.clear();
        let big = [b'x'; RUN_PAYLOAD_MAX];
        let pushes = (0..100)
            .take_while(|_| !run.push(b"s", None, &big, None))
            .count()
            + 1;
        assert!(pushes * RUN_PAYLOAD_MAX >= RUN_BYTES_MAX - RUN_PAYLOAD_MAX);
        assert!(run.tails_len() < RUN_BYTES_MAX + RUN_PAYLOAD_MAX + 16);
    }
}
