//! Protocol errors and the exact `-ERR` lines gnatsd 1.0 sends for them.

use std::fmt;

/// Every protocol-level error the server reports to a peer with `-ERR '<text>'`.
///
/// The `Display` text is byte-for-byte what gnatsd 1.0 puts between the quotes
/// (plus the 2.x `no responders` text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// A byte the op-name state machine does not accept, a client `MSG`, a bad payload trailer.
    UnknownOp,
    /// Wrong argument count, bad size, bad CONNECT/INFO JSON.
    ParserError,
    /// A control line longer than `max_control_line`.
    MaxControlLine,
    /// `PUB`/`HPUB` size larger than `max_payload`.
    MaxPayload,
    /// Auth required and the op is not CONNECT, or bad credentials.
    AuthViolation,
    /// No CONNECT within the authorization timeout.
    AuthTimeout,
    /// CONNECT `protocol` outside 0..=1.
    InvalidProtocol,
    /// `max_connections` reached.
    MaxConnections,
    /// `ping_max` outstanding pings exceeded.
    StaleConnection,
    /// Subject rejected (SUB, or pedantic PUB). The only error that keeps the connection.
    InvalidSubject,
    /// CONNECT asked for `no_responders` without `headers`.
    NoRespondersRequiresHeaders,
    /// TLS handshake failed or timed out.
    TlsRequired,
    /// A client (non-empty `lang`) connected to the route port.
    RouteConnect,
}

macro_rules! errors {
    ($($variant:ident => $text:literal),* $(,)?) => {
        impl ProtoError {
            /// The text between the quotes of the `-ERR` line.
            pub const fn text(&self) -> &'static str {
                match self {
                    $(ProtoError::$variant => $text,)*
                }
            }

            /// The exact `-ERR '<text>'\r\n` line for this error.
            pub const fn err_line(&self) -> &'static [u8] {
                match self {
                    $(ProtoError::$variant => concat!("-ERR '", $text, "'\r\n").as_bytes(),)*
                }
            }
        }
    };
}

errors! {
    UnknownOp => "Unknown Protocol Operation",
    ParserError => "Parser Error",
    MaxControlLine => "Maximum Control Line Exceeded",
    MaxPayload => "Maximum Payload Violation",
    AuthViolation => "Authorization Violation",
    AuthTimeout => "Authorization Timeout",
    InvalidProtocol => "Invalid Client Protocol",
    MaxConnections => "Maximum Connections Exceeded",
    StaleConnection => "Stale Connection",
    InvalidSubject => "Invalid Subject",
    NoRespondersRequiresHeaders => "no responders requires headers support",
    TlsRequired => "Secure Connection - TLS Required",
    RouteConnect => "Attempted To Connect To Route Port",
}

const UNKNOWN_OP_WIRE: &[u8] = b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n";

impl ProtoError {
    /// The bytes the server writes before closing when the parser reports this error.
    ///
    /// gnatsd 1.0 answers an unknown operation with two lines: the parser sends
    /// `Unknown Protocol Operation`, then the read loop adds `Parser Error`.
    /// Every other error is its single `-ERR` line.
    pub const fn wire(&self) -> &'static [u8] {
        match self {
            ProtoError::UnknownOp => UNKNOWN_OP_WIRE,
            other => other.err_line(),
        }
    }

    /// Whether the connection is closed after sending this error.
    pub const fn closes(&self) -> bool {
        !matches!(self, ProtoError::InvalidSubject)
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for ProtoError {}

/// `-ERR 'Permissions Violation for Publish to "<subject>"'\r\n`, the subject quoted like Go's `%q`.
pub fn permission_violation_publish(subject: &[u8]) -> Vec<u8> {
    permission_line(b"Publish to ", subject, None)
}

/// `-ERR 'Permissions Violation for Subscription to "<subject>"'\r\n`, quoted like Go's `%q`.
pub fn permission_violation_subscription(subject: &[u8]) -> Vec<u8> {
    permission_line(b"Subscription to ", subject, None)
}

/// `-ERR 'Permissions Violation for Subscription to "<subject>" (sid <sid>)'\r\n`: sent when a
/// config reload takes away the permission for an existing subscription.
pub fn permission_violation_subscription_sid(subject: &[u8], sid: &[u8]) -> Vec<u8> {
    permission_line(b"Subscription to ", subject, Some(sid))
}

fn permission_line(what: &[u8], subject: &[u8], sid: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + subject.len() * 2);
    out.extend_from_slice(b"-ERR 'Permissions Violation for ");
    out.extend_from_slice(what);
    go_quote(&mut out, subject);
    if let Some(sid) = sid {
        out.extend_from_slice(b" (sid ");
        out.extend_from_slice(sid);
        out.push(b')');
    }
    out.extend_from_slice(b"'\r\n");
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` quoted the way Go's `strconv.Quote` (and `%q`) does: double quotes, `\"` and
/// `\\`, `\a \b \f \n \r \t \v` for those controls, `\xNN` for other ASCII controls, DEL and
/// bytes that are not valid UTF-8, `\uNNNN`/`\UNNNNNNNN` for non-printable code points.
pub fn go_quote(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        let b = rest[0];
        if b < 0x80 {
            match b {
                b'"' | b'\\' => {
                    out.push(b'\\');
                    out.push(b);
                }
                0x20..=0x7e => out.push(b),
                0x07 => out.extend_from_slice(b"\\a"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x0b => out.extend_from_slice(b"\\v"),
                _ => push_hex_byte(out, b),
            }
            rest = &rest[1..];
            continue;
        }
        match decode_utf8_char(rest) {
            Some((c, len)) => {
                if is_go_printable(c) {
                    out.extend_from_slice(&rest[..len]);
                } else {
                    let cp = c as u32;
                    if cp < 0x10000 {
                        out.extend_from_slice(b"\\u");
                        for shift in [12u32, 8, 4, 0] {
                            out.push(HEX[((cp >> shift) & 0xf) as usize]);
                        }
                    } else {
                        out.extend_from_slice(b"\\U");
                        for shift in [28u32, 24, 20, 16, 12, 8, 4, 0] {
                            out.push(HEX[((cp >> shift) & 0xf) as usize]);
                        }
                    }
                }
                rest = &rest[len..];
            }
            None => {
                push_hex_byte(out, b);
                rest = &rest[1..];
            }
        }
    }
    out.push(b'"');
}

fn push_hex_byte(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(b"\\x");
    out.push(HEX[(b >> 4) as usize]);
    out.push(HEX[(b & 0xf) as usize]);
}

/// Decodes one UTF-8 scalar at the start of `s` (which starts with a non-ASCII byte).
fn decode_utf8_char(s: &[u8]) -> Option<(char, usize)> {
    let len = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let head = s.get(..len)?;
    let text = std::str::from_utf8(head).ok()?;
    text.chars().next().map(|c| (c, len))
}

/// Printable in Go's sense (letters, marks, numbers, punctuation, symbols). Rust's debug
/// escaping uses the same Unicode categories, except that it escapes a grapheme extender at
/// the very start of a string, so the character is checked after a plain letter.
fn is_go_printable(c: char) -> bool {
    let mut buf = [0u8; 8];
    buf[0] = b'a';
    let len = 1 + c.encode_utf8(&mut buf[1..]).len();
    match std::str::from_utf8(&buf[..len]) {
        Ok(s) => s.escape_debug().eq(s.chars()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_lines_are_exact() {
        assert_eq!(
            ProtoError::ParserError.err_line(),
            b"-ERR 'Parser Error'\r\n".as_slice()
        );
        assert_eq!(
            ProtoError::UnknownOp.wire(),
            b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n".as_slice()
        );
        assert_eq!(
            ProtoError::MaxPayload.wire(),
            b"-ERR 'Maximum Payload Violation'\r\n".as_slice()
        );
        assert_eq!(
            ProtoError::NoRespondersRequiresHeaders.err_line(),
            b"-ERR 'no responders requires headers support'\r\n".as_slice()
        );
        assert_eq!(
            ProtoError::RouteConnect.to_string(),
            "Attempted To Connect To Route Port"
        );
        assert_eq!(
            ProtoError::TlsRequired.err_line(),
            b"-ERR 'Secure Connection - TLS Required'\r\n".as_slice()
        );
        assert_eq!(
            ProtoError::UnknownOp.to_string(),
            "Unknown Protocol Operation"
        );
        assert!(!ProtoError::InvalidSubject.closes());
        assert!(ProtoError::StaleConnection.closes());
    }

    #[test]
    fn every_err_line_wraps_its_text() {
        use ProtoError::*;
        for e in [
            UnknownOp,
            ParserError,
            MaxControlLine,
            MaxPayload,
            AuthViolation,
            AuthTimeout,
            InvalidProtocol,
            MaxConnections,
            StaleConnection,
            InvalidSubject,
            NoRespondersRequiresHeaders,
            TlsRequired,
            RouteConnect,
        ] {
            assert_eq!(e.err_line(), format!("-ERR '{e}'\r\n").as_bytes());
        }
    }

    #[test]
    fn permission_lines() {
        assert_eq!(
            permission_violation_publish(b"_SYS.foo"),
            b"-ERR 'Permissions Violation for Publish to \"_SYS.foo\"'\r\n".to_vec()
        );
        assert_eq!(
            permission_violation_subscription(b"foo.>"),
            b"-ERR 'Permissions Violation for Subscription to \"foo.>\"'\r\n".to_vec()
        );
        assert_eq!(
            permission_violation_subscription_sid(b"foo", b"7"),
            b"-ERR 'Permissions Violation for Subscription to \"foo\" (sid 7)'\r\n".to_vec()
        );
    }

    fn q(s: &[u8]) -> String {
        let mut v = Vec::new();
        go_quote(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn go_quoting() {
        assert_eq!(q(b"abc"), r#""abc""#);
        assert_eq!(q(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(q(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(q(b"\x00\x1f\x7f"), r#""\x00\x1f\x7f""#);
        assert_eq!(q(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(q("héllo".as_bytes()), "\"héllo\"");
        assert_eq!(q("日本".as_bytes()), "\"日本\"");
        assert_eq!(q("\u{a0}".as_bytes()), r#""\u00a0""#);
        assert_eq!(q("\u{ad}".as_bytes()), r#""\u00ad""#);
        assert_eq!(q("\u{200b}".as_bytes()), r#""\u200b""#);
        assert_eq!(q("\u{e0001}".as_bytes()), r#""\U000e0001""#);
        assert_eq!(q("a\u{301}".as_bytes()), "\"a\u{301}\"");
        assert_eq!(q("\u{301}".as_bytes()), "\"\u{301}\"");
        // truncated multi-byte sequence and an encoded surrogate are invalid UTF-8
        assert_eq!(q(b"\xe6\x97"), r#""\xe6\x97""#);
        assert_eq!(q(b"\xed\xa0\x80"), r#""\xed\xa0\x80""#);
        assert_eq!(q("😀".as_bytes()), "\"😀\"");
    }
}
