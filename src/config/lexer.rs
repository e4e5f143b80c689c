//! The lexer: a cursor over the text that reads one token at a time, in the way the parser
//! asks for it.
//!
//! gnatsd's grammar depends on context (a key ends at `=`, `:` or a blank; an unquoted value
//! ends at a blank, `,`, `;`, `]` or `}`; an include path ends at a blank, `;` or `}`), so the
//! parser says which token it expects: [`Lexer::key`], [`Lexer::value`], [`Lexer::include_path`].
//! Every method consumes at least one character or returns, so a parse is linear in the input.

use std::sync::Arc;

use super::error::{Error, ErrorKind, Found};
use super::options::size_multiplier;
use super::Pos;

/// A scalar value, a variable reference, or the opening bracket of a map or array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `$NAME` (the name without the `$`).
    Var(String),
    MapOpen,
    ArrayOpen,
}

/// A key, and whether it is the `include` keyword (unquoted, any case, followed by a blank).
#[derive(Debug)]
pub(crate) struct Key {
    pub text: String,
    pub pos: Pos,
    pub include: bool,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    i: usize,
    line: u32,
    col: u32,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    file: Arc<str>,
    at: Mark,
}

/// A blank in gnatsd's sense: space or tab (new lines are separate).
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_nl(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Ends an unquoted value string (and a number).
fn ends_value(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => is_blank(c) || is_nl(c) || matches!(c, ';' | ',' | ']' | '}'),
    }
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str, file: Arc<str>) -> Lexer<'a> {
        let mut lx = Lexer {
            src,
            file,
            at: Mark {
                i: 0,
                line: 1,
                col: 1,
            },
        };
        if src.starts_with('\u{feff}') {
            lx.at.i = '\u{feff}'.len_utf8();
        }
        lx
    }

    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub fn pos(&self) -> Pos {
        Pos::new(&self.file, self.at.line, self.at.col)
    }

    fn rest(&self) -> &'a str {
        &self.src[self.at.i..]
    }

    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    pub fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at.i += c.len_utf8();
        if c == '\n' {
            self.at.line += 1;
            self.at.col = 1;
        } else {
            self.at.col += 1;
        }
        Some(c)
    }

    /// Skips spaces and tabs.
    pub fn skip_blanks(&mut self) {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
    }

    /// Skips all whitespace, new lines included.
    pub fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// At `#` or `//`.
    pub fn at_comment(&self) -> bool {
        let r = self.rest();
        r.starts_with('#') || r.starts_with("//")
    }

    /// Skips to the end of the line (the new line itself is left).
    pub fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| !is_nl(c)) {
            self.bump();
        }
    }

    /// A syntax error at the current position about the next character.
    pub fn syntax(&self, expected: &'static str) -> Error {
        Error::new(
            self.pos(),
            ErrorKind::Syntax {
                expected,
                found: Found::of(self.peek()),
            },
        )
    }

    /// Reads a key. The caller has skipped whitespace and comments and is not at the end.
    pub fn key(&mut self) -> Result<Key, Error> {
        let pos = self.pos();
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                self.bump();
                let text = self.raw_until(q, &pos, "quoted key")?;
                Ok(Key {
                    text: text.to_owned(),
                    pos,
                    include: false,
                })
            }
            _ => {
                let start = self.at.i;
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || matches!(c, '=' | ':' | '{' | '[') {
                        break;
                    }
                    self.bump();
                }
                let text = &self.src[start..self.at.i];
                if text.is_empty() {
                    return Err(self.syntax("a key"));
                }
                let include = text.eq_ignore_ascii_case("include")
                    && self.peek().is_some_and(char::is_whitespace);
                Ok(Key {
                    text: text.to_owned(),
                    pos,
                    include,
                })
            }
        }
    }

    /// Reads the path after the `include` keyword.
    pub fn include_path(&mut self) -> Result<(String, Pos), Error> {
        self.skip_blanks();
        let pos = self.pos();
        match self.peek() {
            None | Some('\n' | '\r' | '[' | '{' | '(' | '\\') => {
                Err(self.syntax("an include path"))
            }
            Some(q @ ('"' | '\'')) => {
                self.bump();
                let text = self.raw_until(q, &pos, "include path")?;
                Ok((text.to_owned(), pos))
            }
            Some(_) => {
                let start = self.at.i;
                let mut end = None;
                while let Some(c) = self.peek() {
                    if is_blank(c) || is_nl(c) || c == ';' || c == '}' {
                        break;
                    }
                    if c == '\'' {
                        // As gnatsd: a quote ends the path and is dropped.
                        end = Some(self.at.i);
                        self.bump();
                        break;
                    }
                    self.bump();
                }
                let end = end.unwrap_or(self.at.i);
                Ok((self.src[start..end].to_owned(), pos))
            }
        }
    }

    /// Text up to the closing `quote` (consumed), no escapes. The opening quote is consumed.
    fn raw_until(&mut self, quote: char, open: &Pos, what: &'static str) -> Result<&'a str, Error> {
        let start = self.at.i;
        loop {
            match self.peek() {
                None => return Err(Error::new(open.clone(), ErrorKind::Unterminated { what })),
                Some(c) if c == quote => {
                    let text = &self.src[start..self.at.i];
                    self.bump();
                    return Ok(text);
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    /// Reads a value (or the opening bracket of a map or array). The caller has skipped the
    /// blanks before it.
    pub fn value(&mut self) -> Result<(Token, Pos), Error> {
        let pos = self.pos();
        let token = match self.peek() {
            None | Some('\n' | '\r') => return Err(self.syntax("a value")),
            Some('{') => {
                self.bump();
                Token::MapOpen
            }
            Some('[') => {
                self.bump();
                Token::ArrayOpen
            }
            Some('"') => {
                self.bump();
                Token::Str(self.double_quoted(&pos)?)
            }
            Some('\'') => {
                self.bump();
                Token::Str(
                    self.raw_until('\'', &pos, "single-quoted string")?
                        .to_owned(),
                )
            }
            Some('(') => {
                self.bump();
                Token::Str(self.block(&pos)?)
            }
            Some('.') if self.peek2().is_some_and(|c| c.is_ascii_digit()) => {
                return Err(Error::new(pos, ErrorKind::LeadingDot));
            }
            Some('-') if self.peek2().is_some_and(|c| c.is_ascii_digit()) => self.number(&pos)?,
            Some(c) if c.is_ascii_digit() => self.number(&pos)?,
            Some(_) => self.unquoted(&pos)?,
        };
        Ok((token, pos))
    }

    /// `"..."` with escapes; the opening quote is consumed. May span lines.
    fn double_quoted(&mut self, open: &Pos) -> Result<String, Error> {
        let mut buf = Vec::new();
        let mut seg = self.at.i;
        loop {
            match self.peek() {
                None => {
                    return Err(Error::new(
                        open.clone(),
                        ErrorKind::Unterminated {
                            what: "double-quoted string",
                        },
                    ))
                }
                Some('"') => {
                    buf.extend_from_slice(&self.src.as_bytes()[seg..self.at.i]);
                    self.bump();
                    return utf8(buf, open);
                }
                Some('\\') => {
                    buf.extend_from_slice(&self.src.as_bytes()[seg..self.at.i]);
                    if self.peek2().is_none() {
                        return Err(Error::new(
                            open.clone(),
                            ErrorKind::Unterminated {
                                what: "double-quoted string",
                            },
                        ));
                    }
                    self.escape(&mut buf)?;
                    seg = self.at.i;
                }
                Some(_) => {
                    self.bump();
                }
            }
        }
    }

    /// One escape sequence, at its `\`, appended to `out`.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let pos = self.pos();
        self.bump();
        let c = self.peek();
        let byte = match c {
            Some('t') => b'\t',
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('"') => b'"',
            Some('\\') => b'\\',
            Some('x') => {
                self.bump();
                let mut hex = String::new();
                while hex.len() < 2 {
                    match self.peek() {
                        Some(h) if !is_nl(h) => {
                            hex.push(h);
                            self.bump();
                        }
                        _ => break,
                    }
                }
                return match (hex.len(), u8::from_str_radix(&hex, 16)) {
                    (2, Ok(b)) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        out.push(b);
                        Ok(())
                    }
                    _ => Err(Error::new(pos, ErrorKind::InvalidHexEscape { found: hex })),
                };
            }
            _ => {
                return Err(Error::new(
                    pos,
                    ErrorKind::InvalidEscape { ch: Found::of(c) },
                ))
            }
        };
        self.bump();
        out.push(byte);
        Ok(())
    }

    /// `( ... )`: everything after the `(` up to a `)` that is first on its line and last on
    /// it too. The new line before the `)` belongs to the string, as in gnatsd.
    fn block(&mut self, open: &Pos) -> Result<String, Error> {
        let start = self.at.i;
        let mut prev = '(';
        loop {
            let here = self.at.i;
            match self.bump() {
                None => {
                    return Err(Error::new(
                        open.clone(),
                        ErrorKind::Unterminated {
                            what: "block string",
                        },
                    ))
                }
                Some(')') if prev == '\n' && self.peek().is_none_or(is_nl) => {
                    return Ok(self.src[start..here].to_owned());
                }
                Some(c) => prev = c,
            }
        }
    }

    /// A value starting with a digit, or `-` and a digit: an integer (with an optional size
    /// suffix) or a float if it is exactly one, else an unquoted string (`10.0.0.1`, `2s`).
    fn number(&mut self, pos: &Pos) -> Result<Token, Error> {
        let rest = self.rest();
        let b = rest.as_bytes();
        let mut j = usize::from(b[0] == b'-');
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let int_end = j;
        let mut float = false;
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            float = true;
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        } else {
            while j < b.len() && b[j].is_ascii_alphabetic() {
                j += 1;
            }
        }
        let after = &rest[j..];
        let ends =
            ends_value(after.chars().next()) || after.starts_with('#') || after.starts_with("//");
        if !ends {
            return self.unquoted(pos);
        }
        let text = &rest[..j];
        let token = if float {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Token::Float(f),
                _ => {
                    return Err(Error::new(
                        pos.clone(),
                        ErrorKind::FloatOutOfRange {
                            text: text.to_owned(),
                        },
                    ))
                }
            }
        } else {
            let Some(mult) = size_multiplier(&text[int_end..]) else {
                return self.unquoted(pos);
            };
            match text[..int_end]
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
            {
                Some(n) => Token::Int(n),
                None => {
                    return Err(Error::new(
                        pos.clone(),
                        ErrorKind::IntegerOutOfRange {
                            text: text.to_owned(),
                        },
                    ))
                }
            }
        };
        // All ASCII and on one line: the column moves by the byte count.
        self.at.i += j;
        self.at.col += j as u32;
        Ok(token)
    }

    /// An unquoted value: up to a blank, new line, `;`, `,`, `]` or `}`. Escapes work as in
    /// double quotes. A `'` also ends it (and is dropped), as in gnatsd. Without escapes or
    /// such a quote, `true`/`yes`/`on`/`false`/`no`/`off` (any case) are booleans and `$NAME`
    /// is a variable.
    fn unquoted(&mut self, pos: &Pos) -> Result<Token, Error> {
        let start = self.at.i;
        let mut buf: Option<Vec<u8>> = None;
        let mut seg = start;
        let mut quote_end = false;
        loop {
            let c = self.peek();
            if ends_value(c) {
                break;
            }
            match c {
                Some('\'') => {
                    quote_end = true;
                    break;
                }
                Some('\\') => {
                    let out = buf.get_or_insert_with(Vec::new);
                    out.extend_from_slice(&self.src.as_bytes()[seg..self.at.i]);
                    self.escape(out)?;
                    seg = self.at.i;
                }
                _ => {
                    self.bump();
                }
            }
        }
        let end = self.at.i;
        if quote_end {
            self.bump();
        }
        if let Some(mut out) = buf {
            out.extend_from_slice(&self.src.as_bytes()[seg..end]);
            return utf8(out, pos).map(Token::Str);
        }
        let text = &self.src[start..end];
        if quote_end {
            return Ok(Token::Str(text.to_owned()));
        }
        Ok(match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Token::Bool(true),
            "false" | "no" | "off" => Token::Bool(false),
            _ => match text.strip_prefix('$') {
                Some(name) => Token::Var(name.to_owned()),
                None => Token::Str(text.to_owned()),
            },
        })
    }
}

fn utf8(bytes: Vec<u8>, pos: &Pos) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| Error::new(pos.clone(), ErrorKind::InvalidUtf8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexer(src: &str) -> Lexer<'_> {
        Lexer::new(src, Arc::from("t.conf"))
    }

    fn value(src: &str) -> Result<Token, String> {
        let mut lx = lexer(src);
        lx.value().map(|(t, _)| t).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_their_look_alikes() {
        assert_eq!(value("4222"), Ok(Token::Int(4222)));
        assert_eq!(value("-17"), Ok(Token::Int(-17)));
        assert_eq!(value("007"), Ok(Token::Int(7)));
        assert_eq!(value("1.5"), Ok(Token::Float(1.5)));
        assert_eq!(value("-0.25"), Ok(Token::Float(-0.25)));
        assert_eq!(value("8k"), Ok(Token::Int(8000)));
        assert_eq!(value("8KB}"), Ok(Token::Int(8192)));
        assert_eq!(value("4222#c"), Ok(Token::Int(4222)));
        assert_eq!(value("4222//c"), Ok(Token::Int(4222)));
        assert_eq!(value("4222/c"), Ok(Token::Str("4222/c".into())));
        assert_eq!(
            value("127.0.0.1:4222"),
            Ok(Token::Str("127.0.0.1:4222".into()))
        );
        assert_eq!(value("2s"), Ok(Token::Str("2s".into())));
        assert_eq!(value("1.5s"), Ok(Token::Str("1.5s".into())));
        assert_eq!(value("1."), Ok(Token::Str("1.".into())));
        assert_eq!(value("1kbb"), Ok(Token::Str("1kbb".into())));
        assert_eq!(value("-x"), Ok(Token::Str("-x".into())));
        assert_eq!(value("./a.pem"), Ok(Token::Str("./a.pem".into())));
        assert_eq!(value("9223372036854775807"), Ok(Token::Int(i64::MAX)));
        assert_eq!(value("-9223372036854775808"), Ok(Token::Int(i64::MIN)));
    }

    #[test]
    fn number_then_position_moves_past_it() {
        let mut lx = lexer("12k ;");
        assert_eq!(lx.value().map(|(t, _)| t), Ok(Token::Int(12_000)));
        assert_eq!(lx.pos().col, 4);
        assert_eq!(lx.peek(), Some(' '));
    }

    #[test]
    fn unquoted_values_end_where_gnatsd_ends_them() {
        for (src, want) in [
            ("abc def", "abc"),
            ("abc,def", "abc"),
            ("abc;def", "abc"),
            ("abc]", "abc"),
            ("abc}", "abc"),
            ("abc\ndef", "abc"),
            ("abc\r\n", "abc"),
            ("a#b", "a#b"),
            ("a:b=c", "a:b=c"),
            ("abc'def", "abc"),
            ("tru'", "tru"),
            ("true'", "true"),
            ("$A'", "$A"),
            ("", ""),
        ] {
            if src.is_empty() {
                continue;
            }
            assert_eq!(value(src), Ok(Token::Str(want.into())), "{src:?}");
        }
        assert_eq!(value(";"), Ok(Token::Str(String::new())));
    }

    #[test]
    fn keys() {
        let mut lx = lexer("port=1");
        let k = lx.key().unwrap();
        assert_eq!((k.text.as_str(), k.include), ("port", false));
        assert_eq!(lx.peek(), Some('='));

        let mut lx = lexer("cluster{");
        assert_eq!(lx.key().unwrap().text, "cluster");

        let mut lx = lexer("INCLUDE ./a.conf");
        assert!(lx.key().unwrap().include);
        let mut lx = lexer("include: 1");
        assert!(!lx.key().unwrap().include);
        let mut lx = lexer("'include' a");
        assert!(!lx.key().unwrap().include);
    }
}
