//! Config errors: where (file, line, column, key) and what ([`ErrorKind`]).

use std::fmt;

use super::Pos;

/// A config error. `Display` gives `file:line:col: key "k": what`, the key part only when
/// known, e.g. `gnatsd.conf:12:5: key "port": expected an integer, got string`.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub pos: Pos,
    /// The key whose value is at fault, when there is one.
    pub key: Option<String>,
    pub kind: ErrorKind,
}

/// What was found where something else was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Char(char),
    NewLine,
    Eof,
}

impl Found {
    pub(crate) fn of(c: Option<char>) -> Found {
        match c {
            None => Found::Eof,
            Some('\n' | '\r') => Found::NewLine,
            Some(c) => Found::Char(c),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) if c.is_control() || c.is_whitespace() && *c != ' ' => {
                write!(f, "'{}'", c.escape_unicode())
            }
            Found::Char(c) => write!(f, "'{c}'"),
            Found::NewLine => f.write_str("new line"),
            Found::Eof => f.write_str("end of file"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    // ---- syntax ----
    /// Something else than what the grammar allows here.
    Syntax {
        expected: &'static str,
        found: Found,
    },
    /// A quoted string, quoted key, block string or include path without its end
    /// (positioned at its start).
    Unterminated {
        what: &'static str,
    },
    /// A map or array without its closing bracket (positioned at the opening one).
    Unclosed {
        what: &'static str,
        close: char,
    },
    /// `\q`: an escape other than `\t \n \r \" \\ \xHH`.
    InvalidEscape {
        ch: Found,
    },
    /// `\x` not followed by two hexadecimal digits.
    InvalidHexEscape {
        found: String,
    },
    /// `\xHH` escapes that do not add up to UTF-8.
    InvalidUtf8,
    /// `.5`: floats need a digit before the dot.
    LeadingDot,
    IntegerOutOfRange {
        text: String,
    },
    FloatOutOfRange {
        text: String,
    },

    // ---- references ----
    /// `$NAME` with no earlier key `NAME` in an enclosing map and no environment variable.
    UndefinedVariable {
        name: String,
    },
    /// The value of environment variable `name` is not a valid config value.
    EnvVariable {
        name: String,
        source: Box<Error>,
    },
    /// An environment variable whose value refers (through others) back to itself.
    EnvCycle {
        name: String,
    },
    /// More than [`super::MAX_ENV_DEPTH`] environment variables referring to each other.
    EnvTooDeep {
        max: usize,
    },
    /// The included file could not be read.
    Include {
        path: String,
        reason: String,
    },
    /// The included file is already being parsed (it includes itself, directly or not).
    IncludeCycle {
        path: String,
    },
    /// More than [`super::MAX_INCLUDE_DEPTH`] nested includes.
    IncludeTooDeep {
        max: usize,
    },
    /// More than [`super::MAX_INCLUDES`] includes in all.
    TooManyIncludes {
        max: usize,
    },
    /// The config file itself could not be read (`pos.line == 0`).
    Read {
        reason: String,
    },

    // ---- size ----
    /// Maps and arrays nested deeper than [`super::MAX_DEPTH`].
    TooDeep {
        max: u32,
    },
    /// More than [`super::MAX_VALUES`] values in the tree.
    TooManyValues {
        max: usize,
    },

    // ---- typed access ----
    /// The value has another type than the consumer needs.
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
    /// The type is right but the value is not acceptable (bad duration, negative size).
    InvalidValue {
        expected: &'static str,
        got: String,
    },
    /// The consumer of the tree rejects a well-typed value or combination of values; `reason`
    /// says why, in gnatsd's words where it has some (`Cluster authorization does not allow
    /// multiple users`).
    Rejected {
        reason: String,
    },
}

impl Error {
    pub fn new(pos: Pos, kind: ErrorKind) -> Error {
        Error {
            pos,
            key: None,
            kind,
        }
    }

    /// Names the key this error is about, unless a (more precise) key is already named.
    pub fn with_key(mut self, key: &str) -> Error {
        if self.key.is_none() {
            self.key = Some(key.to_owned());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.pos)?;
        if let Some(key) = &self.key {
            write!(f, "key {key:?}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Syntax { expected, found } => write!(f, "expected {expected}, found {found}"),
            ErrorKind::Unterminated { what } => write!(f, "unterminated {what}"),
            ErrorKind::Unclosed { what, close } => {
                write!(f, "{what} opened here is never closed (no '{close}')")
            }
            ErrorKind::InvalidEscape { ch } => write!(
                f,
                "invalid escape: '\\' followed by {ch}; only \\xHH, \\t, \\n, \\r, \\\" and \\\\ are allowed"
            ),
            ErrorKind::InvalidHexEscape { found } => {
                write!(f, "expected two hexadecimal digits after '\\x', found {found:?}")
            }
            ErrorKind::InvalidUtf8 => f.write_str("the \\x escapes of this string are not valid UTF-8"),
            ErrorKind::LeadingDot => f.write_str("a float must start with a digit, not '.'"),
            ErrorKind::IntegerOutOfRange { text } => write!(f, "integer {text:?} is out of range"),
            ErrorKind::FloatOutOfRange { text } => write!(f, "float {text:?} is out of range"),
            ErrorKind::UndefinedVariable { name } => write!(
                f,
                "variable reference for {name:?} can not be found (no earlier key in an enclosing map, no environment variable)"
            ),
            ErrorKind::EnvVariable { name, source } => {
                write!(f, "environment variable {name:?} is not a valid value: {source}")
            }
            ErrorKind::EnvCycle { name } => {
                write!(f, "environment variable {name:?} refers to itself")
            }
            ErrorKind::EnvTooDeep { max } => write!(
                f,
                "more than {max} environment variables refer to each other"
            ),
            ErrorKind::Include { path, reason } => write!(f, "can not include {path:?}: {reason}"),
            ErrorKind::IncludeCycle { path } => {
                write!(f, "include {path:?} forms a cycle (the file is already being read)")
            }
            ErrorKind::IncludeTooDeep { max } => write!(f, "includes nest deeper than {max} files"),
            ErrorKind::TooManyIncludes { max } => write!(f, "more than {max} includes"),
            ErrorKind::Read { reason } => write!(f, "can not read config file: {reason}"),
            ErrorKind::TooDeep { max } => write!(f, "maps and arrays nest deeper than {max} levels"),
            ErrorKind::TooManyValues { max } => write!(f, "more than {max} values in the configuration"),
            ErrorKind::WrongType { expected, got } => write!(f, "expected {expected}, got {got}"),
            ErrorKind::InvalidValue { expected, got } => write!(f, "expected {expected}, got {got}"),
            ErrorKind::Rejected { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}
