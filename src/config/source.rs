//! Where included files and environment variables come from.
//!
//! The parser asks a [`Resolver`]; [`FsResolver`] answers from the disk and the process
//! environment, [`MemResolver`] from maps (tests, fuzzing, configs built in memory).

use std::collections::HashMap;

/// The outside world as the parser sees it.
pub trait Resolver {
    /// The name of the file that `include <path>`, written in file `from`, loads. The name
    /// is used to read the file, in positions, as `from` for its own includes and to detect
    /// include cycles. The default is [`include_name`].
    fn include_name(&self, from: &str, path: &str) -> String {
        include_name(from, path)
    }

    /// The text of file `name`, or why it cannot be had.
    fn read(&self, name: &str) -> Result<String, String>;

    /// The value of environment variable `name`, if set.
    fn env(&self, name: &str) -> Option<String>;
}

/// gnatsd's rule for include paths: relative to the directory of the including file, then
/// cleaned lexically (`.` and `x/..` removed, as Go's `filepath.Join` does). An absolute path
/// is taken as is (gnatsd 1.0 would append it to the directory, which never finds the file).
pub fn include_name(from: &str, path: &str) -> String {
    if path.starts_with('/') {
        return clean(path);
    }
    let dir = match from.rfind('/') {
        Some(0) => "/",
        Some(i) => &from[..i],
        None => ".",
    };
    clean(&format!("{dir}/{path}"))
}

/// Lexical path cleaning as Go's `path.Clean`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Files from the disk, variables from the process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsResolver;

impl Resolver for FsResolver {
    fn read(&self, name: &str) -> Result<String, String> {
        std::fs::read_to_string(name).map_err(|e| e.to_string())
    }

    fn env(&self, name: &str) -> Option<String> {
        // A name with '=' or NUL is not a valid variable name and makes `std::env::var` panic.
        if name.is_empty() || name.contains(['=', '\0']) {
            return None;
        }
        std::env::var(name).ok()
    }
}

/// Files and variables held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemResolver {
    files: HashMap<String, String>,
    env: HashMap<String, String>,
}

impl MemResolver {
    pub fn new() -> MemResolver {
        MemResolver::default()
    }

    /// Adds file `name` (as [`Resolver::include_name`] will name it, e.g. `conf/auth.conf`).
    pub fn file(mut self, name: &str, text: &str) -> MemResolver {
        self.files.insert(name.to_owned(), text.to_owned());
        self
    }

    /// Sets environment variable `name`.
    pub fn env(mut self, name: &str, value: &str) -> MemResolver {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }
}

impl Resolver for MemResolver {
    fn read(&self, name: &str) -> Result<String, String> {
        self.files
            .get(name)
            .cloned()
            .ok_or_else(|| "no such file".to_owned())
    }

    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_names_follow_go_join() {
        assert_eq!(include_name("gnatsd.conf", "auth.conf"), "auth.conf");
        assert_eq!(
            include_name("/etc/nats/gnatsd.conf", "auth.conf"),
            "/etc/nats/auth.conf"
        );
        assert_eq!(
            include_name("/etc/nats/gnatsd.conf", "./a/../b.conf"),
            "/etc/nats/b.conf"
        );
        assert_eq!(include_name("conf/main.conf", "../x.conf"), "x.conf");
        assert_eq!(include_name("main.conf", "../x.conf"), "../x.conf");
        assert_eq!(include_name("/gnatsd.conf", "x.conf"), "/x.conf");
        assert_eq!(
            include_name("/a/gnatsd.conf", "/etc//x.conf"),
            "/etc/x.conf"
        );
        assert_eq!(include_name("/gnatsd.conf", "../../x.conf"), "/x.conf");
        assert_eq!(include_name("a/b.conf", ""), "a");
    }

    #[test]
    fn fs_resolver_rejects_impossible_env_names() {
        assert_eq!(FsResolver.env("A=B"), None);
        assert_eq!(FsResolver.env(""), None);
        assert_eq!(FsResolver.env("A\0"), None);
    }
}
