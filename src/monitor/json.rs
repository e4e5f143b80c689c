//! Output exactly as gnatsd's monitor writes it: Go's `json.MarshalIndent(v, "", "  ")`
//! (two-space indent, Go's string escaping and float formatting), RFC 3339 times with
//! nanoseconds, and gnatsd's `1d2h3m4s` durations.

use crate::proto::info::GoFormatter;
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, PrettyFormatter};
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Pretty layout from serde_json, strings and numbers as Go writes them.
struct GoPretty {
    layout: PrettyFormatter<'static>,
}

impl Formatter for GoPretty {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.layout.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.layout.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.layout.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, s: &str) -> io::Result<()> {
        GoFormatter.write_string_fragment(w, s)
    }
    fn write_char_escape<W: ?Sized + Write>(&mut self, w: &mut W, e: CharEscape) -> io::Result<()> {
        GoFormatter.write_char_escape(w, e)
    }
    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        w.write_all(go_float(v).as_bytes())
    }
    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        w.write_all(go_float(v as f64).as_bytes())
    }
}

/// `v` as gnatsd's monitor writes it (indented, no trailing newline).
pub fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let fmt = GoPretty {
        layout: PrettyFormatter::with_indent(b"  "),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser)
        .expect("serializing plain data into a Vec cannot fail");
    out
}

/// A float as Go's encoding/json writes it: shortest round-trip digits, plain notation
/// for magnitudes in [1e-6, 1e21), else `1e+21` / `1e-7`. Not-a-number (which Go refuses
/// to encode) is written as 0.
pub fn go_float(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let abs = v.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return format!("{v}");
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => s,
    }
}

/// RFC 3339 with nanoseconds (trailing zeros dropped), in UTC: Go's `time.RFC3339Nano`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// gnatsd's uptime format: `Xs`, `XmYs`, `XhYmZs`, `XdXhXmXs`, `XyXdXhXmXs`.
pub fn uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hrs, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    if years > 0 {
        format!(
            "{years}y{}d{}h{}m{}s",
            days % 365,
            hrs % 24,
            mins % 60,
            secs % 60
        )
    } else if days > 0 {
        format!("{days}d{}h{}m{}s", hrs % 24, mins % 60, secs % 60)
    } else if hrs > 0 {
        format!("{hrs}h{}m{}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[test]
    fn floats_as_go_writes_them() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(go_float(120.0), "120");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1.5e-7), "1.5e-7");
        assert_eq!(go_float(-2.5e22), "-2.5e+22");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(f64::NAN), "0");
    }

    #[test]
    fn indented_like_marshal_indent() {
        #[derive(Serialize)]
        struct Inner {
            addr: &'static str,
            auth_timeout: f64,
        }
        #[derive(Serialize)]
        struct V {
            server_id: &'static str,
            cluster: Inner,
            routes: Vec<u32>,
            list: Vec<&'static str>,
        }
        let v = V {
            server_id: "a<b>&",
            cluster: Inner {
                addr: "0.0.0.0",
                auth_timeout: 1.0,
            },
            routes: vec![],
            list: vec!["foo"],
        };
        let got = String::from_utf8(pretty(&v)).unwrap();
        let want = "{\n  \"server_id\": \"a\\u003cb\\u003e\\u0026\",\n  \"cluster\": {\n    \"addr\": \"0.0.0.0\",\n    \"auth_timeout\": 1\n  },\n  \"routes\": [],\n  \"list\": [\n    \"foo\"\n  ]\n}";
        assert_eq!(got, want);
    }

    #[test]
    fn times_and_durations() {
        let t = UNIX_EPOCH + Duration::new(1_795_702_854, 175_182_859);
        assert_eq!(rfc3339_nano(t), "2026-11-26T14:20:54.175182859Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000); // 2000-02-29
        assert_eq!(rfc3339_nano(t), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(uptime(Duration::from_millis(999)), "0s");
        assert_eq!(uptime(Duration::from_secs(133)), "2m13s");
        assert_eq!(uptime(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(uptime(Duration::from_secs(86_400 + 7322)), "1d2h2m2s");
        assert_eq!(
            uptime(Duration::from_secs(9_223_372_036)),
            "292y171d23h47m16s",
            "Go's largest duration, as gnatsd prints an idle time from the zero time"
        );
    }
}
