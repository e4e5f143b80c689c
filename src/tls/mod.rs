//! TLS, sans-IO: the layer between a connection's socket bytes and its parser and
//! outbound queue (spec §5). No socket and no clock here: the reactor hands in received
//! ciphertext and takes ciphertext to send.
//!
//! 1.0's model: INFO goes out in clear, then the client starts the handshake on the same
//! socket. So a session has three phases: [`Phase::Hello`] (nothing received yet; a first
//! byte that is not a TLS handshake record is a plain-text client, answered with
//! `-ERR 'Secure Connection - TLS Required'` in clear), [`Phase::Handshake`], [`Phase::Open`].
//! Until the session is open the outbound queue is sent only when the connection is closing
//! (its `-ERR` goes out in clear, as gnatsd writes it to the raw socket).
//!
//! Bounds: plaintext is decrypted one received buffer at a time and parsed at once (never
//! more than a receive buffer plus one record); on the way out, the plaintext taken from the
//! queue is encrypted at most [`SEND_MAX`] bytes ahead of the socket, the rest waiting in
//! its taken buffer (the queue itself stays bounded by `max_pending`, as for plain text).
//! Plain connections have no session and never reach this module.
//!
//! Routes (spec §2.9) use the same session without the clear INFO: the dialling side is the
//! TLS client and starts in [`Phase::Handshake`]; both sides' CONNECT/INFO wait in the queue
//! until the session is open, then go out encrypted.

pub mod config;

pub use config::{cipher_suite, curve, monitor_server_config, server_config, ClientTls, RouteTls};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

/// Ciphertext produced ahead of the socket, per send.
pub const SEND_MAX: usize = 256 * 1024;
/// Plaintext handed to rustls at a time (rustls frames it in 16 KiB records).
const WRITE_CHUNK: usize = 64 * 1024;
/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// INFO sent in clear; nothing received yet.
    Hello,
    Handshake,
    Open,
}

/// Why received bytes could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client spoke plain text (e.g. `CONNECT`) instead of starting the handshake.
    NotTls,
    /// The handshake failed (bad certificate, no common suite, garbage).
    Handshake(rustls::Error),
    /// The session failed after the handshake.
    Session(rustls::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Go's text, as gnatsd logs it.
            ReadError::NotTls => {
                f.write_str("tls: first record does not look like a TLS handshake")
            }
            ReadError::Handshake(e) | ReadError::Session(e) => write!(f, "{e}"),
        }
    }
}

pub struct TlsSession {
    /// The server side for clients and accepted routes, the client side for dialled routes.
    tls: Connection,
    phase: Phase,
    /// The handshake must be over by then.
    pub deadline: Instant,
    /// Decrypted bytes of the current read, parsed before the next record is read.
    plain_in: Vec<u8>,
    /// Plaintext taken from the outbound queue, encrypted from `out_off` on.
    plain_out: Vec<u8>,
    out_off: usize,
    close_notified: bool,
}

impl TlsSession {
    /// The server side: a client (INFO already sent in clear) or an accepted route.
    pub fn new(
        config: Arc<rustls::ServerConfig>,
        deadline: Instant,
    ) -> Result<Self, rustls::Error> {
        Ok(Self::with(
            ServerConnection::new(config)?.into(),
            Phase::Hello,
            deadline,
        ))
    }

    /// The client side, for a dialled route: the handshake starts at once (ClientHello).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        deadline: Instant,
    ) -> Result<Self, rustls::Error> {
        let conn = ClientConnection::new(config, name)?;
        Ok(Self::with(conn.into(), Phase::Handshake, deadline))
    }

    fn with(tls: Connection, phase: Phase, deadline: Instant) -> Self {
        TlsSession {
            tls,
            phase,
            deadline,
            plain_in: Vec::new(),
            plain_out: Vec::new(),
            out_off: 0,
            close_notified: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Taken plaintext not yet encrypted.
    pub fn pending_plain(&self) -> usize {
        self.plain_out.len() - self.out_off
    }

    /// Nothing left to encrypt or to send.
    pub fn is_idle(&self) -> bool {
        self.pending_plain() == 0 && !self.tls.wants_write()
    }

    /// rustls has records to send (handshake messages, alerts, tickets).
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// `TLS version 1.3, cipher suite TLS13_AES_128_GCM_SHA256`, as 1.0 logs it.
    pub fn describe(&self) -> String {
        let version = match self.tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "?".into(),
        };
        let suite = self
            .tls
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "?".into());
        format!("TLS version {version}, cipher suite {suite}")
    }

    /// Decrypts received ciphertext, calling `parse` with each run of plaintext (until it
    /// breaks). Returns true when this input completed the handshake.
    pub fn read(
        &mut self,
        mut data: &[u8],
        mut parse: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<bool, ReadError> {
        if self.phase == Phase::Hello {
            match data.first() {
                None => return Ok(false),
                Some(&HANDSHAKE_RECORD) => self.phase = Phase::Handshake,
                Some(_) => return Err(ReadError::NotTls),
            }
        }
        let mut completed = false;
        while !data.is_empty() {
            let before = data.len();
            if let Err(e) = self.tls.read_tls(&mut data) {
                let e = rustls::Error::General(e.to_string());
                return Err(self.error(e));
            }
            let state = self.tls.process_new_packets().map_err(|e| self.error(e))?;
            if self.phase == Phase::Handshake && !self.tls.is_handshaking() {
                self.phase = Phase::Open;
                completed = true;
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                self.plain_in.resize(n, 0);
                if self.tls.reader().read_exact(&mut self.plain_in).is_err() {
                    return Err(self.error(rustls::Error::General("short read".into())));
                }
                if parse(&self.plain_in).is_break() {
                    break;
                }
            }
            if data.len() == before {
                // rustls took nothing and has nothing for us: cannot make progress.
                return Err(self.error(rustls::Error::General("stalled TLS input".into())));
            }
        }
        Ok(completed)
    }

    fn error(&self, e: rustls::Error) -> ReadError {
        match self.phase {
            Phase::Open => ReadError::Session(e),
            _ => ReadError::Handshake(e),
        }
    }

    /// Fills `sending` (empty) with the next bytes for the socket and returns their length.
    /// `take` moves the outbound queue's pending plaintext into the buffer it is given.
    /// Until the session is open only rustls's handshake records go out, or, when `closing`,
    /// the queue in clear (the `-ERR` of a failed or refused handshake). Once open the queue
    /// is encrypted, at most [`SEND_MAX`] ahead; when `closing` and drained, a close_notify.
    pub fn write(
        &mut self,
        mut take: impl FnMut(&mut Vec<u8>) -> usize,
        sending: &mut Vec<u8>,
        closing: bool,
    ) -> usize {
        debug_assert!(sending.is_empty());
        if self.phase != Phase::Open {
            if closing {
                return take(sending);
            }
            self.flush_records(sending);
            return sending.len();
        }
        loop {
            self.flush_records(sending);
            if sending.len() >= SEND_MAX {
                break;
            }
            if self.out_off == self.plain_out.len() {
                self.plain_out.clear();
                self.out_off = 0;
                if take(&mut self.plain_out) == 0 {
                    break;
                }
            }
            let end = self.plain_out.len().min(self.out_off + WRITE_CHUNK);
            match self.tls.writer().write(&self.plain_out[self.out_off..end]) {
                Ok(n) if n > 0 => self.out_off += n,
                _ => break,
            }
        }
        if closing && self.pending_plain() == 0 && !self.close_notified {
            self.close_notified = true;
            self.tls.send_close_notify();
            self.flush_records(sending);
        }
        if self.plain_out.capacity() > SEND_MAX * 4 && self.pending_plain() == 0 {
            self.plain_out = Vec::new();
            self.out_off = 0;
        }
        sending.len()
    }

    fn flush_records(&mut self, sending: &mut Vec<u8>) {
        while self.tls.wants_write() && sending.len() < SEND_MAX {
            if self.tls.write_tls(sending).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
