//! INFO (server → peer) and CONNECT (peer → server) JSON.
//!
//! Both follow Go's `encoding/json` behaviour where clients can tell the difference: the
//! INFO JSON escapes `<`, `>`, `&`, U+2028 and U+2029 like Go does, and JSON read from a
//! peer is decoded over the current values, with keys matched case-insensitively, unknown
//! keys ignored, `null` leaving a value alone and a wrong type being an error.

use std::fmt;
use std::io;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use super::error::ProtoError;

/// The INFO the server sends, fields in gnatsd 1.0 order followed by the 2.x additions.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_id: String,
    pub version: String,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub auth_required: bool,
    pub ssl_required: bool,
    pub tls_required: bool,
    pub tls_verify: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    pub proto: i32,
    pub headers: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// 2.x: the server's name (the id unless `--name`/`server_name` is set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// 2.x: the address the client connected from, as the server sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// 2.x: the server is in lame duck mode (about to close this connection); only sent then.
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            server_id: String::new(),
            version: "1.0.0".to_string(),
            go: "go1.7.6".to_string(),
            host: "0.0.0.0".to_string(),
            port: 4222,
            auth_required: false,
            ssl_required: false,
            tls_required: false,
            tls_verify: false,
            max_payload: 1024 * 1024,
            ip: None,
            connect_urls: Vec::new(),
            proto: 1,
            headers: true,
            client_id: 0,
            server_name: String::new(),
            client_ip: None,
            ldm: false,
        }
    }
}

impl ServerInfo {
    /// The JSON object, encoded as Go's `json.Marshal` would.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
        self.serialize(&mut ser)
            .expect("serializing plain data into a Vec cannot fail");
    }

    /// `INFO <json> \r\n`: the line sent to clients (1.0 puts a space before the CRLF).
    pub fn client_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(b"INFO ");
        self.write_json(&mut out);
        out.extend_from_slice(b" \r\n");
        out
    }

    /// `INFO <json>\r\n`: the line sent on route connections.
    pub fn route_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(b"INFO ");
        self.write_json(&mut out);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Any serializable value as Go's `json.Marshal` would encode it (Go's string escaping).
pub fn go_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    v.serialize(&mut ser)
        .expect("serializing plain data into a Vec cannot fail");
    out
}

/// serde_json formatter producing Go's string escaping.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GoFormatter;

const HEX: &[u8; 16] = b"0123456789abcdef";

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(esc)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        use serde_json::ser::CharEscape;
        let control = |b: u8| {
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]
        };
        match char_escape {
            CharEscape::Quote => writer.write_all(b"\\\""),
            CharEscape::ReverseSolidus => writer.write_all(b"\\\\"),
            CharEscape::Solidus => writer.write_all(b"/"),
            CharEscape::LineFeed => writer.write_all(b"\\n"),
            CharEscape::CarriageReturn => writer.write_all(b"\\r"),
            CharEscape::Tab => writer.write_all(b"\\t"),
            CharEscape::Backspace => writer.write_all(&control(0x08)),
            CharEscape::FormFeed => writer.write_all(&control(0x0c)),
            CharEscape::AsciiControl(b) => writer.write_all(&control(b)),
        }
    }
}

/// Options a peer sends in CONNECT.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct ConnectOpts {
    pub verbose: bool,
    pub pedantic: bool,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth_token: Option<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: i64,
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
    pub tls_required: bool,
    /// A route's cluster name (nats-server 2.x routes always send the key).
    pub cluster: Option<String>,
}

impl ConnectOpts {
    /// The options of a client before (or without) CONNECT: verbose and pedantic on, echo on.
    pub fn client_default() -> Self {
        ConnectOpts {
            verbose: true,
            pedantic: true,
            echo: true,
            ..ConnectOpts::default()
        }
    }

    /// Decodes CONNECT JSON over the current values (absent keys keep their value).
    ///
    /// Keys match case-insensitively, unknown keys are ignored, `null` leaves a value as
    /// it is. Invalid JSON, a top-level value other than an object or `null`, or a known
    /// key with a value of the wrong type is `ParserError`; then nothing is changed.
    pub fn apply_json(&mut self, json: &[u8]) -> Result<(), ProtoError> {
        let mut next = self.clone();
        decode_with(json, ObjectSeed(ConnectFields(&mut next)))?;
        *self = next;
        Ok(())
    }
}

/// An INFO received from a peer (a route's INFO, or the INFO some clients echo back),
/// decoded with gnatsd 1.0's field types. Missing keys are empty / zero / false.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct RemoteInfo {
    pub server_id: String,
    pub version: String,
    pub go: String,
    pub host: String,
    pub port: i64,
    pub auth_required: bool,
    pub ssl_required: bool,
    pub tls_required: bool,
    pub tls_verify: bool,
    pub max_payload: i64,
    pub ip: String,
    pub connect_urls: Vec<String>,
    pub proto: i64,
    pub headers: bool,
    /// nats-server 2.x fields.
    pub server_name: String,
    pub cluster: Option<String>,
    pub cluster_dynamic: bool,
}

impl RemoteInfo {
    /// The peer speaks the nats-server 2.x route protocol: its INFO carries a cluster name
    /// or a route protocol version of 2 or more (1.x never sends either).
    pub fn is_v2(&self) -> bool {
        self.cluster.is_some() || self.proto >= 2
    }

    /// Decodes INFO JSON; anything 1.0 would refuse (bad JSON, wrong field types) is
    /// `ParserError`.
    pub fn from_json(json: &[u8]) -> Result<RemoteInfo, ProtoError> {
        let mut info = RemoteInfo::default();
        decode_with(json, ObjectSeed(InfoFields(&mut info)))?;
        Ok(info)
    }
}

fn decode_with<S>(json: &[u8], seed: S) -> Result<(), ProtoError>
where
    S: for<'de> DeserializeSeed<'de, Value = ()>,
{
    let mut de = serde_json::Deserializer::from_slice(json);
    seed.deserialize(&mut de)
        .map_err(|_| ProtoError::ParserError)?;
    de.end().map_err(|_| ProtoError::ParserError)
}

/// Something that takes the value of one object key.
trait FieldSink {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

struct ObjectSeed<T>(T);

impl<'de, T: FieldSink> DeserializeSeed<'de> for ObjectSeed<T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: FieldSink> Visitor<'de> for ObjectSeed<T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            self.0.field(&key.0, &mut map)?;
        }
        Ok(())
    }
}

/// A JSON object key, borrowed from the input when it has no escapes.
struct Key(KeyText);

enum KeyText {
    Inline([u8; 24], usize),
    Owned(String),
}

impl std::ops::Deref for KeyText {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            KeyText::Inline(b, n) => std::str::from_utf8(&b[..*n]).unwrap_or(""),
            KeyText::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                if v.len() <= 24 {
                    let mut b = [0u8; 24];
                    b[..v.len()].copy_from_slice(v.as_bytes());
                    Ok(Key(KeyText::Inline(b, v.len())))
                } else {
                    Ok(Key(KeyText::Owned(v.to_string())))
                }
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Go's case-insensitive key match: ASCII case folding, plus the two non-ASCII letters
/// that fold onto ASCII ones (KELVIN SIGN → k, LATIN SMALL LETTER LONG S → s).
fn key_is(key: &str, name: &str) -> bool {
    let mut name = name.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{212a}' => b'k',
            '\u{17f}' => b's',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
            _ => return false,
        };
        if name.next() != Some(folded) {
            return false;
        }
    }
    name.next().is_none()
}

fn set<'de, A: MapAccess<'de>, T: de::Deserialize<'de>>(
    map: &mut A,
    slot: &mut T,
) -> Result<(), A::Error> {
    if let Some(v) = map.next_value::<Option<T>>()? {
        *slot = v;
    }
    Ok(())
}

fn set_opt<'de, A: MapAccess<'de>>(map: &mut A, slot: &mut Option<String>) -> Result<(), A::Error> {
    if let Some(v) = map.next_value::<Option<String>>()? {
        *slot = Some(v);
    }
    Ok(())
}

struct ConnectFields<'a>(&'a mut ConnectOpts);

impl FieldSink for ConnectFields<'_> {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let o = &mut *self.0;
        let k = |name| key_is(key, name);
        if k("verbose") {
            set(map, &mut o.verbose)
        } else if k("pedantic") {
            set(map, &mut o.pedantic)
        } else if k("user") {
            set_opt(map, &mut o.user)
        } else if k("pass") {
            set_opt(map, &mut o.pass)
        } else if k("auth_token") {
            set_opt(map, &mut o.auth_token)
        } else if k("name") {
            set_opt(map, &mut o.name)
        } else if k("lang") {
            set_opt(map, &mut o.lang)
        } else if k("version") {
            set_opt(map, &mut o.version)
        } else if k("protocol") {
            set(map, &mut o.protocol)
        } else if k("echo") {
            set(map, &mut o.echo)
        } else if k("headers") {
            set(map, &mut o.headers)
        } else if k("no_responders") {
            set(map, &mut o.no_responders)
        } else if k("tls_required") {
            set(map, &mut o.tls_required)
        } else if k("cluster") {
            let mut name = o.cluster.clone().unwrap_or_default();
            set(map, &mut name)?;
            o.cluster = Some(name);
            Ok(())
        } else if k("ssl_required") {
            // read (and type-checked) by 1.0, never used
            let mut unused = false;
            set(map, &mut unused)
        } else {
            map.next_value::<IgnoredAny>().map(|_| ())
        }
    }
}

struct InfoFields<'a>(&'a mut RemoteInfo);

impl FieldSink for InfoFields<'_> {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let o = &mut *self.0;
        let k = |name| key_is(key, name);
        if k("server_id") {
            set(map, &mut o.server_id)
        } else if k("version") {
            set(map, &mut o.version)
        } else if k("go") {
            set(map, &mut o.go)
        } else if k("host") {
            set(map, &mut o.host)
        } else if k("port") {
            set(map, &mut o.port)
        } else if k("auth_required") {
            set(map, &mut o.auth_required)
        } else if k("ssl_required") {
            set(map, &mut o.ssl_required)
        } else if k("tls_required") {
            set(map, &mut o.tls_required)
        } else if k("tls_verify") {
            set(map, &mut o.tls_verify)
        } else if k("max_payload") {
            set(map, &mut o.max_payload)
        } else if k("ip") {
            set(map, &mut o.ip)
        } else if k("connect_urls") {
            match map.next_value::<Option<StringList>>()? {
                Some(list) => o.connect_urls = list.0,
                None => o.connect_urls.clear(),
            }
            Ok(())
        } else if k("proto") {
            set(map, &mut o.proto)
        } else if k("headers") {
            set(map, &mut o.headers)
        } else if k("server_name") {
            set(map, &mut o.server_name)
        } else if k("cluster") {
            let mut name = o.cluster.clone().unwrap_or_default();
            set(map, &mut name)?;
            o.cluster = Some(name);
            Ok(())
        } else if k("cluster_dynamic") {
            set(map, &mut o.cluster_dynamic)
        } else {
            map.next_value::<IgnoredAny>().map(|_| ())
        }
    }
}

/// A JSON array of strings where, as in Go, a `null` element becomes an empty string.
struct StringList(Vec<String>);

impl<'de> de::Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StringList, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<StringList, S::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Option<String>>()? {
                    v.push(s.unwrap_or_default());
                }
                Ok(StringList(v))
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_line_matches_gnatsd() {
        let info = ServerInfo {
            server_id: "eLWPXm801p7pJtxL3WJb1v".into(),
            version: "1.0.0".into(),
            go: "go1.19.8".into(),
            host: "127.0.0.1".into(),
            port: 35222,
            ..ServerInfo::default()
        };
        let line = info.client_line();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "INFO {\"server_id\":\"eLWPXm801p7pJtxL3WJb1v\",\"version\":\"1.0.0\",\"go\":\"go1.19.8\",\
             \"host\":\"127.0.0.1\",\"port\":35222,\"auth_required\":false,\"ssl_required\":false,\
             \"tls_required\":false,\"tls_verify\":false,\"max_payload\":1048576,\"proto\":1,\
             \"headers\":true} \r\n"
        );
    }

    #[test]
    fn route_line_and_optional_fields() {
        let info = ServerInfo {
            server_id: "S".into(),
            go: String::new(),
            host: "127.0.0.1".into(),
            port: 36301,
            auth_required: true,
            ip: Some("nats-route://127.0.0.1:36301/".into()),
            connect_urls: vec!["127.0.0.1:35301".into()],
            client_id: 7,
            ..ServerInfo::default()
        };
        let line = String::from_utf8(info.route_line()).unwrap();
        assert_eq!(
            line,
            "INFO {\"server_id\":\"S\",\"version\":\"1.0.0\",\"go\":\"\",\"host\":\"127.0.0.1\",\
             \"port\":36301,\"auth_required\":true,\"ssl_required\":false,\"tls_required\":false,\
             \"tls_verify\":false,\"max_payload\":1048576,\"ip\":\"nats-route://127.0.0.1:36301/\",\
             \"connect_urls\":[\"127.0.0.1:35301\"],\"proto\":1,\"headers\":true,\"client_id\":7}\r\n"
        );
    }

    #[test]
    fn ldm_only_when_set() {
        let info = ServerInfo {
            ldm: true,
            ..ServerInfo::default()
        };
        let line = String::from_utf8(info.client_line()).unwrap();
        assert!(
            line.ends_with(",\"headers\":true,\"ldm\":true} \r\n"),
            "{line}"
        );
    }

    #[test]
    fn go_string_escaping() {
        let info = ServerInfo {
            server_id: "<a&b>\u{2028}\u{2029}\"\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é".into(),
            ..ServerInfo::default()
        };
        let json = String::from_utf8(info.to_json()).unwrap();
        assert!(json.starts_with(
            "{\"server_id\":\"\\u003ca\\u0026b\\u003e\\u2028\\u2029\\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0001\u{7f}é\","
        ), "{json}");
    }

    #[test]
    fn connect_defaults_and_overlay() {
        let mut o = ConnectOpts::client_default();
        assert!(o.verbose && o.pedantic && o.echo);
        assert!(!o.headers && !o.no_responders && o.protocol == 0);
        o.apply_json(b"{}").unwrap();
        assert_eq!(o, ConnectOpts::client_default());
        o.apply_json(b" null ").unwrap();
        assert_eq!(o, ConnectOpts::client_default());
        o.apply_json(br#"{"verbose":false}"#).unwrap();
        assert!(!o.verbose && o.pedantic);
        o.apply_json(br#"{"pedantic":null,"user":"u","pass":"p","protocol":1,"unknown":{"a":[1,2,{"b":null}]}}"#)
            .unwrap();
        assert!(o.pedantic);
        assert_eq!(o.user.as_deref(), Some("u"));
        assert_eq!(o.pass.as_deref(), Some("p"));
        assert_eq!(o.protocol, 1);
        o.apply_json(br#"{"user":null}"#).unwrap();
        assert_eq!(o.user.as_deref(), Some("u"));
    }

    #[test]
    fn connect_modern_client() {
        let mut o = ConnectOpts::client_default();
        o.apply_json(
            br#"{"verbose":false,"pedantic":false,"tls_required":false,"name":"svc","lang":"go","version":"1.31.0","protocol":1,"echo":false,"headers":true,"no_responders":true,"auth_token":"s3cr3t"}"#,
        )
        .unwrap();
        assert_eq!(
            o,
            ConnectOpts {
                verbose: false,
                pedantic: false,
                user: None,
                pass: None,
                auth_token: Some("s3cr3t".into()),
                name: Some("svc".into()),
                lang: Some("go".into()),
                version: Some("1.31.0".into()),
                protocol: 1,
                echo: false,
                headers: true,
                no_responders: true,
                tls_required: false,
                cluster: None,
            }
        );
    }

    #[test]
    fn connect_keys_fold_case_and_last_wins() {
        let mut o = ConnectOpts::client_default();
        o.apply_json(br#"{"VERBOSE":false,"Pedantic":false,"USER":"a","user":"b"}"#)
            .unwrap();
        assert!(!o.verbose && !o.pedantic);
        assert_eq!(o.user.as_deref(), Some("b"));
        o.apply_json(br#"{"verbose":true,"VERBOSE":false}"#)
            .unwrap();
        assert!(!o.verbose);
        // KELVIN SIGN folds to k, LONG S to s (Go's rule)
        o.apply_json("{\"auth_to\u{212a}en\":\"t\",\"pa\u{17f}\u{17f}\":\"p\"}".as_bytes())
            .unwrap();
        assert_eq!(o.auth_token.as_deref(), Some("t"));
        assert_eq!(o.pass.as_deref(), Some("p"));
        // escaped key
        o.apply_json(br#"{"n\u0061me":"x"}"#).unwrap();
        assert_eq!(o.name.as_deref(), Some("x"));
        o.apply_json(br#"{"no_responders_":true,"verbos":true}"#)
            .unwrap();
        assert!(!o.no_responders && !o.verbose);
    }

    #[test]
    fn connect_errors() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"verbose\":\"yes\"}",
            b"{\"verbose\":1}",
            b"{\"protocol\":1.5}",
            b"{\"protocol\":1e0}",
            b"{\"protocol\":\"1\"}",
            b"{\"protocol\":99999999999999999999}",
            b"{\"user\":5}",
            b"{\"ssl_required\":\"x\"}",
            b"[]",
            b"\"str\"",
            b"1",
            b"{} x",
            b"{\"a\":1,}",
        ] {
            let mut o = ConnectOpts::client_default();
            assert_eq!(
                o.apply_json(bad),
                Err(ProtoError::ParserError),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(o, ConnectOpts::client_default(), "unchanged after error");
        }
        let mut o = ConnectOpts::client_default();
        o.apply_json(b"{\"protocol\":-1}").unwrap();
        assert_eq!(o.protocol, -1);
        o.apply_json(b" \t\r\n{\"protocol\":2}\r\n ").unwrap();
        assert_eq!(o.protocol, 2);
    }

    #[test]
    fn remote_info() {
        let i = RemoteInfo::from_json(
            br#"{"server_id":"FAKE","host":"127.0.0.1","port":36399,"connect_urls":["127.0.0.1:35399",null],"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(i.server_id, "FAKE");
        assert_eq!(i.port, 36399);
        assert_eq!(
            i.connect_urls,
            vec!["127.0.0.1:35399".to_string(), String::new()]
        );
        assert!(RemoteInfo::from_json(b"{\"port\":\"x\"}").is_err());
        assert!(RemoteInfo::from_json(b"{\"connect_urls\":\"x\"}").is_err());
        assert!(RemoteInfo::from_json(b"nope").is_err());
        assert_eq!(
            RemoteInfo::from_json(b"null").unwrap(),
            RemoteInfo::default()
        );
    }
}
