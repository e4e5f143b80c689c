//! Shared helpers for the socket-level tests: an in-process server on a random port and a
//! raw client that asserts exact bytes with bounded waits (no sleeps as synchronisation).
#![allow(dead_code)]

use ringnats::options::Options;
use ringnats::server::{self, Running};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(5);

pub fn test_options() -> Options {
    Options {
        host: "127.0.0.1".into(),
        port: 0,
        workers: 2,
        ..Options::default()
    }
}

pub fn start_with(f: impl FnOnce(&mut Options)) -> Running {
    let mut o = test_options();
    f(&mut o);
    server::start(o).expect("server starts")
}

pub fn start() -> Running {
    start_with(|_| {})
}

pub struct Raw {
    pub stream: TcpStream,
    pub info: String,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and reads the INFO line.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            info: String::new(),
            buf: Vec::new(),
        };
        let line = raw.read_line();
        assert!(line.starts_with("INFO {"), "first line is INFO: {line:?}");
        raw.info = line;
        raw
    }

    /// Connects and turns verbose and pedantic off, syncing with a PING.
    pub fn quiet(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n");
        raw.expect(b"PONG\r\n");
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => false,
        }
    }

    /// Reads one line including its CRLF.
    pub fn read_line(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            if !self.fill(deadline) {
                panic!(
                    "no complete line; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Asserts the next bytes are exactly `want`.
    pub fn expect(&mut self, want: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < want.len() {
            if !self.fill(deadline) {
                break;
            }
        }
        let n = want.len().min(self.buf.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "unexpected bytes from server"
        );
    }

    /// Asserts the server closes the connection with nothing more to say.
    pub fn expect_eof(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                self.buf.is_empty(),
                "unexpected bytes before EOF: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.stream
                .set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected EOF, got {e}"),
            }
        }
    }

    /// Asserts nothing arrives: sends PING and expects exactly PONG back.
    pub fn expect_nothing_then_pong(&mut self) {
        self.send(b"PING\r\n");
        self.expect(b"PONG\r\n");
    }
}
