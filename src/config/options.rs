//! Typed access to the tree, for the code that turns it into server options.
//!
//! Every accessor returns a positioned [`Error`] when the value has the wrong type or an
//! unacceptable value; none panics. `Map::get_*` return `Ok(None)` when the key is absent, so
//! a consumer reads `if let Some(port) = map.get_int("port")? { ... }`. Keys are matched
//! case-insensitively.

use std::time::Duration;

use super::error::{Error, ErrorKind};
use super::{Map, Value, ValueKind};

/// The factor of a size suffix (case-insensitive), `Some(1)` for none, `None` if unknown.
///
/// gnatsd 1.0 and 2.x agree: a bare letter is a power of 1000, a letter with `b` is a power of
/// 1024 (`k` = 1000, `kb` = 1024, `m` = 10^6, `mb` = 2^20, `g` = 10^9, `gb` = 2^30). 2.x adds
/// `ki`/`kib` (= `kb`, and so on) and the `t`, `p`, `e` families; those are accepted too.
pub fn size_multiplier(suffix: &str) -> Option<i64> {
    const K: i64 = 1000;
    const KI: i64 = 1024;
    // Bytes, not chars: the suffix may hold any text when it comes from a quoted size.
    let s = suffix.to_ascii_lowercase().into_bytes();
    let (letter, binary) = match s.as_slice() {
        [] => return Some(1),
        [letter] => (*letter, false),
        [letter, b'b' | b'i'] | [letter, b'i', b'b'] => (*letter, true),
        _ => return None,
    };
    let power = match letter {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        b'e' => 6,
        _ => return None,
    };
    Some(if binary { KI } else { K }.pow(power))
}

/// A size as text: an integer with an optional suffix ([`size_multiplier`]), blanks allowed
/// around and between (`"64KB"`, `"1 mb"`). `None` if it is not one or does not fit an `i64`.
pub fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits_start = usize::from(t.starts_with('-'));
    let digits_end = t[digits_start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(t.len(), |i| i + digits_start);
    if digits_end == digits_start {
        return None;
    }
    let n: i64 = t[..digits_end].parse().ok()?;
    n.checked_mul(size_multiplier(t[digits_end..].trim_start())?)
}

/// A duration in Go's `time.ParseDuration` syntax, as 2.x accepts for durations: a sequence
/// of decimal numbers, each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as
/// `"2s"`, `"500ms"`, `"1m30s"`, `"1.5h"`; `"0"` alone is zero. Negative durations and ones
/// longer than Go's limit (about 292 years) give `None`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut s = text.strip_prefix('+').unwrap_or(text);
    let negative = match s.strip_prefix('-') {
        Some(rest) => {
            s = rest;
            true
        }
        None => false,
    };
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return None,
        };
        s = &s[unit_len..];
        // Go's limit is 2^63-1 ns; more than 20 integer digits is over it anyway.
        if int_part.len() > 20 {
            return None;
        }
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        // Digits past the 18th cannot change the nanoseconds.
        let frac = &frac_part[..frac_part.len().min(18)];
        let frac_ns = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().ok()? * unit / 10u128.pow(frac.len() as u32)
        };
        total = total.checked_add(whole.checked_mul(unit)?.checked_add(frac_ns)?)?;
        if total > i64::MAX as u128 {
            return None;
        }
    }
    if negative && total > 0 {
        return None;
    }
    Some(Duration::from_nanos(total as u64))
}

impl Value {
    fn wrong_type(&self, expected: &'static str) -> Error {
        Error::new(
            self.pos.clone(),
            ErrorKind::WrongType {
                expected,
                got: self.type_name(),
            },
        )
    }

    fn invalid(&self, expected: &'static str, got: String) -> Error {
        Error::new(self.pos.clone(), ErrorKind::InvalidValue { expected, got })
    }

    pub fn as_int(&self) -> Result<i64, Error> {
        match self.kind {
            ValueKind::Int(n) => Ok(n),
            _ => Err(self.wrong_type("an integer")),
        }
    }

    /// An integer or a float, as a float (gnatsd's authorization `timeout` takes both).
    pub fn as_float(&self) -> Result<f64, Error> {
        match self.kind {
            ValueKind::Int(n) => Ok(n as f64),
            ValueKind::Float(f) => Ok(f),
            _ => Err(self.wrong_type("a number")),
        }
    }

    pub fn as_bool(&self) -> Result<bool, Error> {
        match self.kind {
            ValueKind::Bool(b) => Ok(b),
            _ => Err(self.wrong_type("a boolean")),
        }
    }

    pub fn as_str(&self) -> Result<&str, Error> {
        match &self.kind {
            ValueKind::String(s) => Ok(s),
            _ => Err(self.wrong_type("a string")),
        }
    }

    pub fn as_map(&self) -> Result<&Map, Error> {
        match &self.kind {
            ValueKind::Map(m) => Ok(m),
            _ => Err(self.wrong_type("a map")),
        }
    }

    pub fn as_array(&self) -> Result<&[Value], Error> {
        match &self.kind {
            ValueKind::Array(a) => Ok(a),
            _ => Err(self.wrong_type("an array")),
        }
    }

    /// An integer or float number of seconds (how 1.0 reads `ping_interval` and, with a
    /// warning, `write_deadline`), or a duration string as 2.x (`"2s"`, see
    /// [`parse_duration`]). Negative values are errors. Whether an integer deserves a warning
    /// is the caller's call (`matches!(v.kind, ValueKind::Int(_))`).
    pub fn as_duration(&self) -> Result<Duration, Error> {
        match &self.kind {
            ValueKind::Int(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| self.invalid("a non-negative duration", n.to_string())),
            ValueKind::Float(f) => Duration::try_from_secs_f64(*f)
                .map_err(|_| self.invalid("a non-negative duration", f.to_string())),
            ValueKind::String(s) => parse_duration(s).ok_or_else(|| {
                self.invalid(
                    "a duration such as \"2s\", \"500ms\" or \"1m\"",
                    format!("{s:?}"),
                )
            }),
            _ => Err(self.wrong_type("a duration")),
        }
    }

    /// A number of bytes: an integer (size suffixes were applied when parsing: `1MB`,
    /// `64k`) or a string with the same syntax (`"1MB"`, see [`parse_size`]). Negative values
    /// are errors.
    pub fn as_size(&self) -> Result<u64, Error> {
        match &self.kind {
            ValueKind::Int(n) => {
                u64::try_from(*n).map_err(|_| self.invalid("a non-negative size", n.to_string()))
            }
            ValueKind::String(s) => match parse_size(s) {
                Some(n) => u64::try_from(n)
                    .map_err(|_| self.invalid("a non-negative size", format!("{s:?}"))),
                None => {
                    Err(self.invalid("a size such as 1048576, 64KB or \"1MB\"", format!("{s:?}")))
                }
            },
            _ => Err(self.wrong_type("a size")),
        }
    }
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident => $as:ident -> $ty:ty;)*) => {
        impl Map {
            $(
                $(#[$doc])*
                pub fn $name(&self, key: &str) -> Result<Option<$ty>, Error> {
                    match self.get(key) {
                        None => Ok(None),
                        Some(e) => e.value.$as().map(Some).map_err(|err| err.with_key(&e.key)),
                    }
                }
            )*
        }
    };
}

getters! {
    /// [`Value::as_int`] of the value of `key` (any case); `Ok(None)` if absent.
    get_int => as_int -> i64;
    /// [`Value::as_float`] of the value of `key` (any case); `Ok(None)` if absent.
    get_float => as_float -> f64;
    /// [`Value::as_bool`] of the value of `key` (any case); `Ok(None)` if absent.
    get_bool => as_bool -> bool;
    /// [`Value::as_str`] of the value of `key` (any case); `Ok(None)` if absent.
    get_str => as_str -> &str;
    /// [`Value::as_map`] of the value of `key` (any case); `Ok(None)` if absent.
    get_map => as_map -> &Map;
    /// [`Value::as_array`] of the value of `key` (any case); `Ok(None)` if absent.
    get_array => as_array -> &[Value];
    /// [`Value::as_duration`] of the value of `key` (any case); `Ok(None)` if absent.
    get_duration => as_duration -> Duration;
    /// [`Value::as_size`] of the value of `key` (any case); `Ok(None)` if absent.
    get_size => as_size -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, MemResolver};

    fn conf(text: &str) -> Map {
        parse(text, "gnatsd.conf", &MemResolver::new()).unwrap()
    }

    fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn size_suffixes() {
        let cases = [
            ("", 1),
            ("k", 1000),
            ("K", 1000),
            ("kb", 1024),
            ("KB", 1024),
            ("Ki", 1024),
            ("KiB", 1024),
            ("m", 1_000_000),
            ("mb", 1 << 20),
            ("mib", 1 << 20),
            ("g", 1_000_000_000),
            ("GB", 1 << 30),
            ("t", 1_000_000_000_000),
            ("tb", 1 << 40),
            ("p", 1_000_000_000_000_000),
            ("pb", 1 << 50),
            ("e", 1_000_000_000_000_000_000),
            ("eb", 1 << 60),
        ];
        for (suffix, want) in cases {
            assert_eq!(size_multiplier(suffix), Some(want), "{suffix}");
        }
        for bad in [
            "b",
            "kk",
            "kbb",
            "x",
            "kib2",
            "ms",
            "s",
            "\u{e9}",
            "\u{e9}b",
            "k\u{e9}",
            "\u{1f600}",
        ] {
            assert_eq!(size_multiplier(bad), None, "{bad}");
        }
    }

    #[test]
    fn size_text() {
        assert_eq!(parse_size("64KB"), Some(65536));
        assert_eq!(parse_size(" 1 mb "), Some(1 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("-2k"), Some(-2000));
        assert_eq!(parse_size("k"), None);
        assert_eq!(parse_size("1.5mb"), None);
        assert_eq!(parse_size("9eb"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("1\u{fffd}"), None);
        assert_eq!(parse_size("1 \u{e9}b"), None);
    }

    #[test]
    fn durations_as_go_parses_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("2s"), Some(ms(2000)));
        assert_eq!(parse_duration("500ms"), Some(ms(500)));
        assert_eq!(parse_duration("1m"), Some(ms(60_000)));
        assert_eq!(parse_duration("1h30m"), Some(ms(5_400_000)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_duration(".5s"), Some(ms(500)));
        assert_eq!(parse_duration("1.s"), Some(ms(1000)));
        assert_eq!(parse_duration("+2s"), Some(ms(2000)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("-0s"), Some(Duration::ZERO));
        assert_eq!(
            parse_duration("2562047h"),
            Some(Duration::from_secs(2562047 * 3600))
        );
        for bad in [
            "",
            "2",
            "s",
            ".s",
            "2x",
            "-1s",
            "1d",
            "2562048h",
            "99999999999999999999999h",
            "1s2",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn typed_getters() {
        let m = conf(
            "Port: 4222\ndebug: on\nhost: localhost\ndeadline: \"2s\"\nping: 60\nmax: 1MB\n\
             quoted_size: \"64KB\"\ntimeout: 0.5\nt2: 2\ncluster { port: 1 }\nroutes: [a, b]\n",
        );
        assert_eq!(m.get_int("port"), Ok(Some(4222)));
        assert_eq!(m.get_int("PORT"), Ok(Some(4222)));
        assert_eq!(m.get_int("absent"), Ok(None));
        assert_eq!(m.get_bool("debug"), Ok(Some(true)));
        assert_eq!(m.get_str("host"), Ok(Some("localhost")));
        assert_eq!(m.get_duration("deadline"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(m.get_duration("ping"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(
            m.get_duration("timeout"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(m.get_size("max"), Ok(Some(1 << 20)));
        assert_eq!(m.get_size("quoted_size"), Ok(Some(65536)));
        assert_eq!(m.get_float("timeout"), Ok(Some(0.5)));
        assert_eq!(m.get_float("t2"), Ok(Some(2.0)));
        assert_eq!(
            m.get_map("cluster").unwrap().unwrap().get_int("port"),
            Ok(Some(1))
        );
        let routes = m.get_array("routes").unwrap().unwrap();
        assert_eq!(
            routes
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn wrong_types_are_positioned_errors() {
        let m = conf(
            "port: \"abc\"\n  debug: 1\nhost: 12\nd: \"2x\"\nd2: -5\nd3: [1]\nsize: -1\n\
             size2: \"lots\"\nsize3: 1.5\nc: 1\nr: {}\nf: yes\n",
        );
        assert_eq!(
            err(m.get_int("port")),
            r#"gnatsd.conf:1:7: key "port": expected an integer, got string"#
        );
        assert_eq!(
            err(m.get_bool("debug")),
            r#"gnatsd.conf:2:10: key "debug": expected a boolean, got integer"#
        );
        assert_eq!(
            err(m.get_str("host")),
            r#"gnatsd.conf:3:7: key "host": expected a string, got integer"#
        );
        assert_eq!(
            err(m.get_duration("d")),
            r#"gnatsd.conf:4:4: key "d": expected a duration such as "2s", "500ms" or "1m", got "2x""#
        );
        assert_eq!(
            err(m.get_duration("d2")),
            r#"gnatsd.conf:5:5: key "d2": expected a non-negative duration, got -5"#
        );
        assert_eq!(
            err(m.get_duration("d3")),
            r#"gnatsd.conf:6:5: key "d3": expected a duration, got array"#
        );
        assert_eq!(
            err(m.get_size("size")),
            r#"gnatsd.conf:7:7: key "size": expected a non-negative size, got -1"#
        );
        assert_eq!(
            err(m.get_size("size2")),
            r#"gnatsd.conf:8:8: key "size2": expected a size such as 1048576, 64KB or "1MB", got "lots""#
        );
        assert_eq!(
            err(m.get_size("size3")),
            r#"gnatsd.conf:9:8: key "size3": expected a size, got float"#
        );
        assert_eq!(
            err(m.get_map("c")),
            r#"gnatsd.conf:10:4: key "c": expected a map, got integer"#
        );
        assert_eq!(
            err(m.get_array("r")),
            r#"gnatsd.conf:11:4: key "r": expected an array, got map"#
        );
        assert_eq!(
            err(m.get_float("f")),
            r#"gnatsd.conf:12:4: key "f": expected a number, got boolean"#
        );
    }

    #[test]
    fn value_accessors_have_no_key() {
        let m = conf("routes: [1]");
        let routes = m.get_array("routes").unwrap().unwrap();
        assert_eq!(
            err(routes[0].as_str()),
            "gnatsd.conf:1:10: expected a string, got integer"
        );
    }
}
