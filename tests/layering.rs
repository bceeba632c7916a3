//! The layering rules of `ARCHITECTURE.md`, checked on the source itself,
//! so that a change that breaks one fails here instead of in a review:
//! - no file imports a file that imports it back (directly or around a
//!   longer circle), apart from a module's tie to its own ancestors;
//! - only `src/store/sled/` names sled, and only `src/store/postgres/`
//!   the PostgreSQL client crates;
//! - only `src/http/` (and the server that runs it) names HTTP crates.
//!
//! Imports are the `crate::`, `super::` and `self::` paths in a file's code
//! before its `#[cfg(test)]` part, in `use` lines or inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `src/store/sled/read.rs` is
/// `["store", "sled", "read"]`; `src/store/mod.rs` is `["store"]`.
type ModulePath = Vec<String>;

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn module_path(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).expect("under src");
    let mut segments: ModulePath =
        relative.iter().map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        segments.pop();
    }
    segments
}

/// A file's code: everything before its unit tests, without comments.
fn code(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| line.split(" // ").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else { return vec![path.to_owned()] };
    let prefix = &path[..open];
    let (mut depth, mut start, mut parts) = (0, open + 1, Vec::new());
    let mut close = path.len();
    for (index, character) in path.char_indices().skip(open) {
        match character {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(&path[start..index]);
                    close = index;
                    break;
                }
            }
            ',' if depth == 1 => {
                parts.push(&path[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    let _ = close;
    parts
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .flat_map(|part| expand(&format!("{prefix}{part}")))
        .collect()
}

/// The module paths a file's code refers to, resolved from `module`.
fn referenced(module: &ModulePath, is_mod_file: bool, code: &str) -> Vec<ModulePath> {
    let mut paths = Vec::new();
    // `use` items, which may span lines and group with braces.
    for item in code.split("use ").skip(1) {
        let Some(end) = item.find(';') else { continue };
        let item: String = item[..end].split_whitespace().collect();
        if item.starts_with("crate::") || item.starts_with("super::") || item.starts_with("self::") {
            paths.extend(expand(&item));
        }
    }
    // Inline paths.
    for start in ["crate::", "super::"] {
        for (index, _) in code.match_indices(start) {
            let before = code[..index].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '{') {
                continue;
            }
            let path: String =
                code[index..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(path);
        }
    }
    paths
        .into_iter()
        .filter_map(|path| {
            let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            // `self` in a `mod.rs` is the folder's module; in `x.rs` it is x.
            let mut base: ModulePath = match segments.first().copied() {
                Some("crate") => Vec::new(),
                Some("self") => module.clone(),
                Some("super") => {
                    let mut base = module.clone();
                    let _ = is_mod_file;
                    base.pop();
                    base
                }
                _ => return None,
            };
            segments.remove(0);
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
            base.extend(segments.into_iter().filter(|s| *s != "self").map(str::to_owned));
            Some(base)
        })
        .collect()
}

struct Crate {
    /// Each module's file, by module path.
    files: BTreeMap<ModulePath, PathBuf>,
    code: BTreeMap<ModulePath, String>,
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    source_files(&src, &mut found);
    let mut files = BTreeMap::new();
    let mut code_of = BTreeMap::new();
    for file in found {
        let module = module_path(&src, &file);
        let text = std::fs::read_to_string(&file).expect("source is readable");
        // `main.rs` is a crate of its own; its `crate::` is not the library.
        if file.ends_with("main.rs") {
            continue;
        }
        code_of.insert(module.clone(), code(&text));
        files.insert(module, file);
    }
    Crate { files, code: code_of }
}

/// The deepest module that `path` names or names an item of.
fn owner(files: &BTreeMap<ModulePath, PathBuf>, path: &[String]) -> Option<ModulePath> {
    (0..=path.len())
        .rev()
        .map(|length| path[..length].to_vec())
        .find(|candidate| files.contains_key(candidate))
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let krate = read_crate();
    let mut edges: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
    for (module, code) in &krate.code {
        let is_mod_file = krate.files[module].ends_with("mod.rs");
        for path in referenced(module, is_mod_file, code) {
            let Some(target) = owner(&krate.files, &path) else { continue };
            // A module's tie to its ancestors (a child uses what its parent
            // declares, the parent declares the child) is not a circle.
            if target == *module || module.starts_with(&target) {
                continue;
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }

    // Depth-first search for a back edge, reporting the circle it closes.
    fn visit(
        module: &ModulePath,
        edges: &BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        done: &mut BTreeSet<ModulePath>,
        stack: &mut Vec<ModulePath>,
    ) -> Option<Vec<ModulePath>> {
        if let Some(start) = stack.iter().position(|on| on == module) {
            let mut circle = stack[start..].to_vec();
            circle.push(module.clone());
            return Some(circle);
        }
        if !done.insert(module.clone()) {
            return None;
        }
        stack.push(module.clone());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, done, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in krate.files.keys() {
        let circle = visit(module, &edges, &mut done, &mut Vec::new());
        let names: Option<Vec<String>> = circle.map(|c| c.iter().map(|m| m.join("::")).collect());
        assert_eq!(names, None, "an import circle");
    }
    // The check sees the imports it should: the writer uses staging.
    let writer = vec!["store".to_owned(), "sled".to_owned(), "writer".to_owned()];
    let staging = vec!["store".to_owned(), "sled".to_owned(), "staging".to_owned()];
    assert!(edges.get(&writer).is_some_and(|targets| targets.contains(&staging)), "{edges:?}");
}

/// Files outside `allowed` whose code names one of `crates` as a path.
fn naming(krate: &Crate, crates: &[&str], allowed: impl Fn(&ModulePath) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (module, code) in &krate.code {
        if allowed(module) {
            continue;
        }
        for name in crates {
            let needle = format!("{name}::");
            let named = code.match_indices(&needle).any(|(index, _)| {
                let before = code[..index].chars().last();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.')
            });
            if named {
                found.push(format!("{} names {name}", krate.files[module].display()));
            }
        }
    }
    found
}

#[test]
fn only_the_sled_backend_names_sled() {
    let krate = read_crate();
    let in_sled = |module: &ModulePath| module.starts_with(&["store".to_owned(), "sled".to_owned()]);
    assert_eq!(naming(&krate, &["sled"], in_sled), Vec::<String>::new());
    // The check can fail: the sled backend itself does name it.
    assert!(!naming(&krate, &["sled"], |module| !in_sled(module)).is_empty());
}

#[test]
fn only_the_postgres_backend_names_the_postgres_client() {
    let krate = read_crate();
    let in_postgres = |module: &ModulePath| module.starts_with(&["store".to_owned(), "postgres".to_owned()]);
    let clients = ["tokio_postgres", "deadpool_postgres"];
    assert_eq!(naming(&krate, &clients, in_postgres), Vec::<String>::new());
    assert!(!naming(&krate, &clients, |module| !in_postgres(module)).is_empty());
}

#[test]
fn only_http_names_http_types() {
    let krate = read_crate();
    // The server binds and serves the router; everything else is below it.
    let allowed = |module: &ModulePath| {
        module.first().is_some_and(|first| first == "http" || first == "server") || module.is_empty()
    };
    assert_eq!(naming(&krate, &["axum", "hyper", "http", "tower_http"], allowed), Vec::<String>::new());
}
