//! The gnatsd configuration file format: text in, a positioned tree of values out.
//!
//! This module owns the *syntax* of gnatsd 1.0 config files (`conf/lex.go`, `conf/parse.go`)
//! and, in `server_opts.rs` alone, what the keys mean: [`server_options`] turns the tree into
//! server options (`port`, `cluster {}`, ...) with the typed accessors of [`Map`] and [`Value`]
//! (`get_int`, `get_str`, `get_duration`, `get_size`, ...). Those return a positioned [`Error`]
//! on a wrong type instead of crashing, as 1.0 did. The lexer and parser know no key names.
//!
//! ```text
//!  &str ──► Lexer (lexer.rs) ──► Parser (parser.rs) ──► Map { Entry { key, key_pos, Value } }
//!                                   │    ▲
//!                   include / $VAR  ▼    │ text
//!                               Resolver (source.rs): FsResolver (disk + process env)
//!                                                     MemResolver (tests, fuzzing)
//! ```
//!
//! The lexer and parser do no I/O: included files and environment variables come through a
//! [`Resolver`]. [`parse_file`] with [`FsResolver`] is the only path that touches the disk.
//!
//! # Syntax (see the tests for one example of each)
//! - Comments: `#` and `//` to the end of the line.
//! - `key = value`, `key: value`, `key value`. Keys may be quoted (`"k"`, `'k'`, no escapes).
//!   Duplicate keys: the last one wins. Keys keep their spelling; [`Map::get`] matches them
//!   case-insensitively, as the gnatsd option reader does.
//! - Top-level values end at a new line, `;`, `,`, a comment or the end of the file. In maps
//!   entries are separated by new lines, `,` or `;`; in arrays by new lines or `,`.
//! - Maps `{ }`, arrays `[ ]`, nested and mixed freely up to [`MAX_DEPTH`] levels.
//! - Strings: unquoted (ends at blanks, new line, `;`, `,`, `]`, `}`), `"double"` (escapes
//!   `\t \n \r \" \\ \xHH`, the same escapes work in unquoted strings), `'single'` (raw), and
//!   block strings: `(` up to a `)` that stands alone at the start of a line.
//! - Unquoted `true/false/yes/no/on/off` in any case are booleans.
//! - Integers (optionally negative) with an optional size suffix, and floats (`1.5`, a digit
//!   is needed before the dot). See [`size_multiplier`] for the suffixes.
//! - `include path` (quoted or not) merges another file's keys into the current map; the path
//!   is relative to the including file's directory.
//! - `$NAME` as a value: the value of the key `NAME` defined earlier in an enclosing map
//!   (innermost first, exact spelling), else the environment variable `NAME` parsed as a value.
//!   `$2a$...` (bcrypt hashes; also `$2b$`, `$2x$`, `$2y$`) stays a literal string.
//!
//! # Where this is more lenient than gnatsd 1.0
//! Every file 1.0 accepts gives the same tree here; some files 1.0 rejects (or hangs or panics on)
//! are accepted or rejected with a clear error instead:
//! - A value that starts like a number but is not exactly one (`2s`, `500ms`, `10.0.0.1`,
//!   `127.0.0.1:4222`, `2017-07-12T10:00:00Z`, `1x`) is an unquoted string, as in 2.x. 1.0 keeps
//!   ISO-8601 datetimes as a separate type; here they are strings.
//! - Size suffixes of 2.x (`ki`, `kib`, `t`, `tb`, `p`, `e`, ...) are accepted.
//! - A value starting with `.` or `-` that is not a number (`./certs/a.pem`) is a string.
//! - An unquoted key also ends at `{` or `[` (so `cluster{` works); stray `{`/`}` at the top
//!   level are skipped (JSON-like files).
//! - Include paths may be absolute and may start with a digit.
//! - An unterminated string, block or include path, a key without a value and an unclosed map
//!   are errors (1.0 loops forever, panics or drops the key).
//! - A UTF-8 byte order mark at the start of a file is skipped.
//!
//! # Limits
//! Everything is bounded so that any input ends quickly with a value or an error:
//! [`MAX_DEPTH`] nested maps/arrays, [`MAX_INCLUDE_DEPTH`] nested includes and
//! [`MAX_INCLUDES`] includes in all, [`MAX_ENV_DEPTH`] environment variables referring to each
//! other, and [`MAX_VALUES`] values in the whole tree (variables copy values, so a few lines
//! could otherwise build an exponentially large tree).

mod error;
mod lexer;
mod options;
mod parser;
mod server_opts;
mod source;

#[cfg(test)]
mod server_opts_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use error::{Error, ErrorKind, Found};
pub use options::{parse_duration, parse_size, size_multiplier};
pub use server_opts::{server_options, FileCluster, FileOptions, Warning, MIN_MAX_CONTROL_LINE};
pub use source::{include_name, FsResolver, MemResolver, Resolver};

/// Maps and arrays nested deeper than this below the top level are an error
/// ([`ErrorKind::TooDeep`]). Real configs nest four or five levels; the bound keeps the
/// recursive parser (and the recursive drop of the tree) far from the stack limit.
pub const MAX_DEPTH: u32 = 64;
/// Includes nested deeper than this are an error ([`ErrorKind::IncludeTooDeep`]).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// More `include` statements than this in one parse (all files together) are an error.
pub const MAX_INCLUDES: usize = 1024;
/// Environment variables whose values refer to other environment variables: at most this
/// many in a chain.
pub const MAX_ENV_DEPTH: usize = 8;
/// The whole tree (every map, array and scalar, variable copies included) may hold at most
/// this many values.
pub const MAX_VALUES: usize = 1 << 20;

/// Where something was written: file, 1-based line, 1-based column (in characters).
///
/// `line == 0` means "the file as a whole" (for example, when it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn new(file: &Arc<str>, line: u32, col: u32) -> Pos {
        Pos {
            file: Arc::clone(file),
            line,
            col,
        }
    }

    /// The whole file, no line.
    pub fn file(file: &str) -> Pos {
        Pos {
            file: Arc::from(file),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// A value and where it was written. For a value taken from a variable, `pos` is where the
/// variable was referenced (the values inside a copied map or array keep their own positions).
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    Map(Map),
    Array(Vec<Value>),
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// The type as error messages name it: `map`, `array`, `string`, `integer`, `float`, `boolean`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ValueKind::Map(_) => "map",
            ValueKind::Array(_) => "array",
            ValueKind::String(_) => "string",
            ValueKind::Int(_) => "integer",
            ValueKind::Float(_) => "float",
            ValueKind::Bool(_) => "boolean",
        }
    }
}

/// One `key = value` of a map.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written (quotes removed, case kept).
    pub key: String,
    pub key_pos: Pos,
    pub value: Value,
    /// A later `$key` referred to this entry: it defines a variable. The options layer does not
    /// warn about such keys when it does not know them (gnatsd 2.x does the same).
    pub used_as_variable: bool,
}

/// A map in file order. A key written twice keeps only its last value (at the last place).
///
/// Lookups are linear: config maps hold tens of keys, and a linear scan keeps file order
/// and case-insensitive matching simple.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    entries: Vec<Entry>,
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    /// Adds an entry; an entry with exactly the same key is removed first.
    pub fn insert(&mut self, entry: Entry) {
        self.entries.retain(|e| e.key != entry.key);
        self.entries.push(entry);
    }

    /// The entry whose key equals `key` ignoring ASCII case (the last one, if several keys
    /// differ only in case).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }

    /// The value of [`Map::get`].
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.get(key).map(|e| &e.value)
    }

    /// The entry whose key is exactly `key` (how variables are looked up).
    pub fn get_exact(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub(crate) fn get_exact_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// Parses `text` as the config file named `file` (the name appears in positions and is the
/// base for relative includes). Includes and environment variables go through `resolver`.
pub fn parse(text: &str, file: &str, resolver: &dyn Resolver) -> Result<Map, Error> {
    parser::parse_root(text, file, resolver)
}

/// Reads the config file `name` through `resolver` and parses it.
pub fn load(name: &str, resolver: &dyn Resolver) -> Result<Map, Error> {
    let text = resolver
        .read(name)
        .map_err(|reason| Error::new(Pos::file(name), ErrorKind::Read { reason }))?;
    parse(&text, name, resolver)
}

/// Reads and parses a config file from disk; includes are read from disk and `$VAR`s fall
/// back to the process environment. The only function of this module that does I/O.
pub fn parse_file(path: impl AsRef<std::path::Path>) -> Result<Map, Error> {
    let name = path.as_ref().to_string_lossy();
    load(&name, &FsResolver)
}
