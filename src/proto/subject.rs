//! Subject rules (nats-server 2.x semantics).
//!
//! A subject is a list of tokens separated by `.`. A token is a wildcard only if it is
//! exactly `*` (one token) or `>` (one or more tokens, last position only); `foo.*bar` is
//! a literal token, unlike gnatsd 1.0 which looked at the first character only.

/// Bytes that may not appear anywhere in a subject.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// A valid subject (wildcards allowed): not empty, no empty token, `>` only as the last
/// token, no whitespace.
pub fn is_valid_subject(s: &[u8]) -> bool {
    check(s, true)
}

/// A valid subject without wildcard tokens (what a pedantic PUB needs).
pub fn is_valid_literal_subject(s: &[u8]) -> bool {
    check(s, false)
}

/// Whether `s` contains a wildcard token (`*` or `>` as a whole token).
pub fn has_wildcard(s: &[u8]) -> bool {
    s.split(|&b| b == b'.').any(|t| t == b"*" || t == b">")
}

fn check(s: &[u8], wildcards_ok: bool) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut saw_full_wildcard = false;
    for token in s.split(|&b| b == b'.') {
        if token.is_empty() || saw_full_wildcard {
            return false;
        }
        match token {
            b"*" => {
                if !wildcards_ok {
                    return false;
                }
            }
            b">" => {
                if !wildcards_ok {
                    return false;
                }
                saw_full_wildcard = true;
            }
            _ => {
                if token.iter().any(|&b| is_space(b)) {
                    return false;
                }
            }
        }
    }
    true
}

/// Whether the subject `subject` is matched by `pattern`.
///
/// `subject` is taken literally (a `*` token in it is an ordinary token). In `pattern`, a
/// `*` token matches any single token and a final `>` token matches one or more tokens;
/// every other pattern token must equal the subject token. A `>` that is not the last
/// pattern token is compared literally.
pub fn subject_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut pt = pattern.split(|&b| b == b'.').peekable();
    let mut st = subject.split(|&b| b == b'.');
    while let Some(p) = pt.next() {
        if p == b">" && pt.peek().is_none() {
            return st.next().is_some();
        }
        match st.next() {
            Some(t) => {
                if p != b"*" && p != t {
                    return false;
                }
            }
            None => return false,
        }
    }
    st.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_subjects() {
        for s in [
            "foo",
            "foo.bar",
            "*",
            ">",
            "foo.*",
            "foo.>",
            "*.bar.>",
            "foo.*bar",
            "foo.>bar.baz",
            "foo.b*r",
            "_INBOX.abc",
            "a.b.c.d.e",
        ] {
            assert!(is_valid_subject(s.as_bytes()), "{s}");
        }
        for s in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            ">.foo",
            "foo bar",
            "foo\tbar",
            "foo.b\rr",
            "foo\n",
            "fo\x0co",
        ] {
            assert!(!is_valid_subject(s.as_bytes()), "{s:?}");
        }
    }

    #[test]
    fn literal_subjects() {
        for s in ["foo", "foo.bar", "foo.*bar", "foo.>bar", "a*.b>"] {
            assert!(is_valid_literal_subject(s.as_bytes()), "{s}");
        }
        for s in [
            "*", ">", "foo.*", "foo.>", "*.foo", "foo..bar", "", "foo.", "a b",
        ] {
            assert!(!is_valid_literal_subject(s.as_bytes()), "{s:?}");
        }
        assert!(has_wildcard(b"foo.*"));
        assert!(has_wildcard(b">"));
        assert!(!has_wildcard(b"foo.*bar"));
    }

    #[test]
    fn matching() {
        let yes = [
            ("foo", "foo"),
            ("*", "foo"),
            (">", "foo"),
            (">", "foo.bar.baz"),
            ("foo.*", "foo.bar"),
            ("foo.>", "foo.bar"),
            ("foo.>", "foo.bar.baz"),
            ("*.bar", "foo.bar"),
            ("foo.*.baz", "foo.bar.baz"),
            ("foo.*.>", "foo.bar.baz"),
            // subject tokens are literal
            ("foo.*", "foo.*"),
            ("foo.*", "foo.>"),
            ("foo.>", "foo.*.bar"),
            ("foo.*.bar", "foo..bar"),
            ("foo.*bar", "foo.*bar"),
        ];
        for (p, s) in yes {
            assert!(subject_matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no = [
            ("foo", "bar"),
            ("foo", "foo.bar"),
            ("foo.bar", "foo"),
            ("*", "foo.bar"),
            ("foo.>", "foo"),
            ("foo.*", "foo"),
            ("foo.*", "foo.bar.baz"),
            ("*.bar", "foo.baz"),
            ("foo.*bar", "foo.xbar"),
            ("foo.bar", "foo.*"),
            ("foo.>bar", "foo.xyz"),
            ("foo.>.bar", "foo.x.bar"),
        ];
        for (p, s) in no {
            assert!(!subject_matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
    }
}
