//! The parser: builds the tree from the lexer's tokens, resolves `$VAR`s and `include`s.
//!
//! Recursive descent, one function per construct (document, entry, map, array, value). The
//! recursion is bounded by [`MAX_DEPTH`]; the maps being built are kept on an explicit stack
//! (`scopes`) because variables are looked up in every enclosing map, innermost first.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::{Error, ErrorKind};
use super::lexer::{Lexer, Token};
use super::source::Resolver;
use super::{
    Entry, Map, Pos, Value, ValueKind, MAX_DEPTH, MAX_ENV_DEPTH, MAX_INCLUDES, MAX_INCLUDE_DEPTH,
    MAX_VALUES,
};

/// State shared by the parse of the main file, its includes and environment values.
struct Shared<'r> {
    resolver: &'r dyn Resolver,
    values_left: usize,
    includes_left: usize,
    /// Files being parsed, the main file first: for cycle detection and the depth bound.
    include_stack: Vec<String>,
    /// Environment variables being parsed (one refers to the next).
    env_stack: Vec<String>,
    /// Environment variables already parsed, by name.
    env_cache: HashMap<String, Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Map,
}

struct Parser<'a, 's, 'r> {
    lx: Lexer<'a>,
    shared: &'s mut Shared<'r>,
    /// The maps being built, outermost (the document) first. Never empty.
    scopes: Vec<Map>,
}

pub(crate) fn parse_root(text: &str, file: &str, resolver: &dyn Resolver) -> Result<Map, Error> {
    let mut shared = Shared {
        resolver,
        values_left: MAX_VALUES,
        includes_left: MAX_INCLUDES,
        include_stack: vec![file.to_owned()],
        env_stack: Vec::new(),
        env_cache: HashMap::new(),
    };
    parse_document(text, Arc::from(file), 0, &mut shared)
}

/// Parses a whole file whose top-level map sits at nesting `level` (0 for the main file, the
/// including map's level for an included one).
fn parse_document(
    text: &str,
    file: Arc<str>,
    level: u32,
    shared: &mut Shared<'_>,
) -> Result<Map, Error> {
    let mut p = Parser {
        lx: Lexer::new(text, file),
        shared,
        scopes: vec![Map::new()],
    };
    p.document(level)?;
    Ok(p.scopes.pop().unwrap_or_default())
}

/// Parses the value of an environment variable as gnatsd does: as the file `pk=<text>`.
fn parse_env_value(text: &str, file: Arc<str>, shared: &mut Shared<'_>) -> Result<Value, Error> {
    let mut p = Parser {
        lx: Lexer::new(text, file),
        shared,
        scopes: vec![Map::new()],
    };
    p.lx.skip_blanks();
    let value = p.value(1)?;
    p.top_value_end()?;
    // Whatever follows the value is parsed (so that it must be valid) and dropped.
    p.document(0)?;
    Ok(value)
}

/// `$2a$...`: a bcrypt hash, not a variable.
fn is_bcrypt(name: &str) -> bool {
    ["2a$", "2b$", "2x$", "2y$"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Number of values in `v` and its height (0 for a scalar, 1 for a map or array of scalars).
/// Bounded by the tree's own depth bound.
fn measure(v: &Value) -> (usize, u32) {
    match &v.kind {
        ValueKind::Map(m) => m.iter().fold((1, 1), |(n, h), e| {
            let (en, eh) = measure(&e.value);
            (n + en, h.max(eh + 1))
        }),
        ValueKind::Array(a) => a.iter().fold((1, 1), |(n, h), e| {
            let (en, eh) = measure(e);
            (n + en, h.max(eh + 1))
        }),
        _ => (1, 0),
    }
}

/// A copy of `v` placed at nesting `level`, positioned at `pos` (the variable reference).
fn copy_value(v: &Value, pos: Pos, level: u32, values_left: &mut usize) -> Result<Value, Error> {
    let (nodes, height) = measure(v);
    if height > 0 && level + height - 1 > MAX_DEPTH {
        return Err(Error::new(pos, ErrorKind::TooDeep { max: MAX_DEPTH }));
    }
    if nodes > *values_left {
        return Err(Error::new(
            pos,
            ErrorKind::TooManyValues { max: MAX_VALUES },
        ));
    }
    *values_left -= nodes;
    let mut out = v.clone();
    out.pos = pos;
    Ok(out)
}

impl Parser<'_, '_, '_> {
    fn scope(&mut self) -> &mut Map {
        // `scopes` starts with the document's map and every push is paired with a pop.
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn take_values(&mut self, n: usize, pos: &Pos) -> Result<(), Error> {
        if self.shared.values_left < n {
            return Err(Error::new(
                pos.clone(),
                ErrorKind::TooManyValues { max: MAX_VALUES },
            ));
        }
        self.shared.values_left -= n;
        Ok(())
    }

    /// The entries of a file, until its end. `level` is the nesting of the file's map.
    fn document(&mut self, level: u32) -> Result<(), Error> {
        loop {
            self.lx.skip_space();
            match self.lx.peek() {
                None => return Ok(()),
                // A JSON-like file wraps everything in braces; gnatsd skips them.
                Some('{' | '}') => {
                    self.lx.bump();
                    continue;
                }
                _ if self.lx.at_comment() => {
                    self.lx.skip_comment();
                    continue;
                }
                _ => {}
            }
            self.entry(level + 1, Ctx::Top)?;
            self.top_value_end()?;
        }
    }

    /// After a top-level value: blanks, then a new line, `;`, `,`, `}`, a comment or the end.
    fn top_value_end(&mut self) -> Result<(), Error> {
        loop {
            self.lx.skip_blanks();
            if self.lx.at_comment() {
                self.lx.skip_comment();
                return Ok(());
            }
            match self.lx.peek() {
                None => return Ok(()),
                Some('\n' | '\r' | ';' | ',' | '}') => {
                    self.lx.bump();
                    return Ok(());
                }
                // gnatsd skips a lone '/' here.
                Some('/') => {
                    self.lx.bump();
                }
                Some(_) => {
                    return Err(self
                        .lx
                        .syntax("a new line, ';', ',' or a comment after the value"))
                }
            }
        }
    }

    /// One `key = value` or `include path`; `level` is the nesting of the value.
    fn entry(&mut self, level: u32, ctx: Ctx) -> Result<(), Error> {
        let key = self.lx.key()?;
        if key.include {
            let (path, pos) = self.lx.include_path()?;
            return self.include(&path, pos, level - 1);
        }
        // Errors in this file name the innermost key they occurred under.
        let file = Arc::clone(self.lx.file());
        let keyed = |e: Error| {
            if e.pos.file == file {
                e.with_key(&key.text)
            } else {
                e
            }
        };
        self.separator(ctx).map_err(keyed)?;
        let value = self.value(level).map_err(keyed)?;
        self.scope().insert(Entry {
            key: key.text,
            key_pos: key.pos,
            value,
            used_as_variable: false,
        });
        Ok(())
    }

    /// Between a key and its value: whitespace (new lines too), at most one `=` or `:`, then
    /// blanks (top level) or any whitespace (in a map).
    fn separator(&mut self, ctx: Ctx) -> Result<(), Error> {
        self.lx.skip_space();
        if matches!(self.lx.peek(), Some('=' | ':')) {
            self.lx.bump();
        }
        match ctx {
            Ctx::Top => {
                self.lx.skip_blanks();
                match self.lx.peek() {
                    None | Some('\n' | '\r') => Err(self.lx.syntax("a value")),
                    _ => Ok(()),
                }
            }
            Ctx::Map => {
                self.lx.skip_space();
                match self.lx.peek() {
                    None | Some(',' | '}') => Err(self.lx.syntax("a value")),
                    _ => Ok(()),
                }
            }
        }
    }

    /// A value at nesting `level` (a map or array here would be at that level).
    fn value(&mut self, level: u32) -> Result<Value, Error> {
        let (token, pos) = self.lx.value()?;
        let kind = match token {
            Token::MapOpen => return self.map(level, pos),
            Token::ArrayOpen => return self.array(level, pos),
            Token::Var(name) => return self.variable(&name, pos, level),
            Token::Str(s) => ValueKind::String(s),
            Token::Int(n) => ValueKind::Int(n),
            Token::Float(f) => ValueKind::Float(f),
            Token::Bool(b) => ValueKind::Bool(b),
        };
        self.take_values(1, &pos)?;
        Ok(Value { kind, pos })
    }

    /// Skips whitespace and comments before a map key or an array value.
    fn skip_space_and_comments(&mut self) {
        loop {
            self.lx.skip_space();
            if !self.lx.at_comment() {
                return;
            }
            self.lx.skip_comment();
        }
    }

    /// The rest of a map whose `{` (at `open`) was read.
    fn map(&mut self, level: u32, open: Pos) -> Result<Value, Error> {
        if level > MAX_DEPTH {
            return Err(Error::new(open, ErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        self.take_values(1, &open)?;
        self.scopes.push(Map::new());
        let body = self.map_body(level, &open);
        let map = self.scopes.pop().unwrap_or_default();
        body?;
        Ok(Value {
            kind: ValueKind::Map(map),
            pos: open,
        })
    }

    fn map_body(&mut self, level: u32, open: &Pos) -> Result<(), Error> {
        let unclosed = || {
            Error::new(
                open.clone(),
                ErrorKind::Unclosed {
                    what: "map",
                    close: '}',
                },
            )
        };
        loop {
            self.skip_space_and_comments();
            match self.lx.peek() {
                None => return Err(unclosed()),
                Some('}') => {
                    self.lx.bump();
                    return Ok(());
                }
                Some(']') => return Err(self.lx.syntax("a key or '}'")),
                _ => {}
            }
            self.entry(level + 1, Ctx::Map)?;
            loop {
                self.lx.skip_blanks();
                if self.lx.at_comment() {
                    self.lx.skip_comment();
                    continue;
                }
                match self.lx.peek() {
                    // gnatsd takes a lone '/' as a separator here.
                    Some(',' | ';' | '\n' | '\r' | '/') => {
                        self.lx.bump();
                        break;
                    }
                    Some('}') => break,
                    None => return Err(unclosed()),
                    Some(_) => {
                        return Err(self
                            .lx
                            .syntax("',', ';', a new line or '}' after a map value"))
                    }
                }
            }
        }
    }

    /// The rest of an array whose `[` (at `open`) was read.
    fn array(&mut self, level: u32, open: Pos) -> Result<Value, Error> {
        if level > MAX_DEPTH {
            return Err(Error::new(open, ErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        self.take_values(1, &open)?;
        let unclosed = || {
            Error::new(
                open.clone(),
                ErrorKind::Unclosed {
                    what: "array",
                    close: ']',
                },
            )
        };
        let mut items = Vec::new();
        loop {
            self.skip_space_and_comments();
            match self.lx.peek() {
                None => return Err(unclosed()),
                Some(']') => {
                    self.lx.bump();
                    break;
                }
                Some(',' | '/') => return Err(self.lx.syntax("a value or ']'")),
                _ => {}
            }
            items.push(self.value(level + 1)?);
            loop {
                self.lx.skip_blanks();
                if self.lx.at_comment() {
                    self.lx.skip_comment();
                    continue;
                }
                match self.lx.peek() {
                    // gnatsd takes a lone '/' as a separator here.
                    Some(',' | '\n' | '\r' | '/') => {
                        self.lx.bump();
                        break;
                    }
                    Some(']') => break,
                    None => return Err(unclosed()),
                    Some(_) => {
                        return Err(self
                            .lx
                            .syntax("',', a new line or ']' after an array value"))
                    }
                }
            }
        }
        Ok(Value {
            kind: ValueKind::Array(items),
            pos: open,
        })
    }

    /// `$name` at `pos`: a bcrypt hash, the value of an earlier key in an enclosing map, or an
    /// environment variable.
    fn variable(&mut self, name: &str, pos: Pos, level: u32) -> Result<Value, Error> {
        if is_bcrypt(name) {
            self.take_values(1, &pos)?;
            return Ok(Value {
                kind: ValueKind::String(format!("${name}")),
                pos,
            });
        }
        let found = self
            .scopes
            .iter_mut()
            .rev()
            .find_map(|m| m.get_exact_mut(name));
        if let Some(entry) = found {
            entry.used_as_variable = true;
            return copy_value(&entry.value, pos, level, &mut self.shared.values_left);
        }
        if let Some(v) = self.shared.env_cache.get(name) {
            return copy_value(v, pos, level, &mut self.shared.values_left);
        }
        let Some(text) = self.shared.resolver.env(name) else {
            return Err(Error::new(
                pos,
                ErrorKind::UndefinedVariable {
                    name: name.to_owned(),
                },
            ));
        };
        if self.shared.env_stack.iter().any(|n| n == name) {
            return Err(Error::new(
                pos,
                ErrorKind::EnvCycle {
                    name: name.to_owned(),
                },
            ));
        }
        if self.shared.env_stack.len() >= MAX_ENV_DEPTH {
            return Err(Error::new(
                pos,
                ErrorKind::EnvTooDeep { max: MAX_ENV_DEPTH },
            ));
        }
        self.shared.env_stack.push(name.to_owned());
        let parsed = parse_env_value(&text, Arc::from(format!("${name}")), self.shared);
        self.shared.env_stack.pop();
        let v = parsed.map_err(|source| {
            Error::new(
                pos.clone(),
                ErrorKind::EnvVariable {
                    name: name.to_owned(),
                    source: Box::new(source),
                },
            )
        })?;
        let out = copy_value(&v, pos, level, &mut self.shared.values_left)?;
        self.shared.env_cache.insert(name.to_owned(), v);
        Ok(out)
    }

    /// `include path` (read at `pos`) in a map at nesting `level`: the file's entries are
    /// merged into that map.
    fn include(&mut self, path: &str, pos: Pos, level: u32) -> Result<(), Error> {
        let sh = &mut *self.shared;
        if sh.includes_left == 0 {
            return Err(Error::new(
                pos,
                ErrorKind::TooManyIncludes { max: MAX_INCLUDES },
            ));
        }
        sh.includes_left -= 1;
        let name = sh.resolver.include_name(self.lx.file(), path);
        if sh.include_stack.contains(&name) {
            return Err(Error::new(
                pos,
                ErrorKind::IncludeCycle {
                    path: path.to_owned(),
                },
            ));
        }
        // The stack holds the main file and each include above this one.
        if sh.include_stack.len() > MAX_INCLUDE_DEPTH {
            return Err(Error::new(
                pos,
                ErrorKind::IncludeTooDeep {
                    max: MAX_INCLUDE_DEPTH,
                },
            ));
        }
        let text = sh.resolver.read(&name).map_err(|reason| {
            Error::new(
                pos.clone(),
                ErrorKind::Include {
                    path: path.to_owned(),
                    reason,
                },
            )
        })?;
        sh.include_stack.push(name.clone());
        let parsed = parse_document(&text, Arc::from(name), level, sh);
        sh.include_stack.pop();
        for entry in parsed?.into_entries() {
            self.scope().insert(entry);
        }
        Ok(())
    }
}
