//! Every workspace crate keeps a one-way module graph: no cycle among its
//! top-level modules through `crate::` paths.
//!
//! The graph is read from the source, cheaply: for each crate root (`lib.rs`,
//! `main.rs`, `src/bin/*.rs`) the `mod x;` declarations are followed to their
//! files; comments, string and char literals and `#[cfg(test)]` items are
//! dropped; then every `crate::a…` (in `use` trees too) and every `super::`
//! that climbs out of a top-level module is an edge to top-level module `a`.
//! A file belongs to its top-level module (`store/redis/tail.rs` is `store`),
//! so a parent and its children may refer to each other freely. A name the
//! crate root re-exports (`crate::Config`) counts as the module it comes from;
//! items the root defines itself are not a module and add no edge.
//!
//! A cycle fails the test, printed with the file and line of each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Cycles that exist today and are being removed, as (package, the modules of
/// the cycle). Delete an entry in the change that breaks its cycle; an entry
/// whose cycle is gone fails the test, so the list only shrinks.
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

#[test]
fn no_crate_has_a_module_cycle() {
    let root = stile_tests::repo_root();
    let mut report = String::new();
    let mut seen_known = BTreeSet::new();
    let mut crates = 0;
    for (package, crate_root) in crate_roots(&root) {
        crates += 1;
        let graph = Graph::read(&crate_root);
        for cycle in graph.cycles() {
            let names: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
            let known = KNOWN_CYCLES
                .iter()
                .position(|(p, modules)| *p == package && modules.iter().copied().collect::<BTreeSet<_>>() == names);
            match known {
                Some(i) => {
                    seen_known.insert(i);
                }
                None => {
                    let _ = writeln!(report, "{package} ({}): cycle among {cycle:?}", rel(&root, &crate_root));
                    report.push_str(&graph.explain(&cycle, &root));
                }
            }
        }
    }
    assert!(crates >= 7, "found only {crates} crate roots; is the workspace list read right?");
    for (i, (package, modules)) in KNOWN_CYCLES.iter().enumerate() {
        if !seen_known.contains(&i) {
            let _ = writeln!(
                report,
                "{package}: the allowed cycle {modules:?} is gone; delete its entry from KNOWN_CYCLES"
            );
        }
    }
    assert!(report.is_empty(), "module cycles (each edge: file:line of its first `crate::` path):\n{report}");
}

/// The parser on small inputs, so the guard itself can fail.
#[test]
fn references_are_read_from_code_only() {
    let text = r##"
        use crate::{auth::Role, config::{self, Config}, error};
        use std::fmt; // crate::comment::ignored
        /* crate::block /* nested crate::x */ still comment */
        fn f() -> u32 { let s = "crate::string"; let c = 'c'; let r = r#"crate::raw"#; crate::clock::now(); super::fleet::x(); 1 }
        macro_rules! m { () => { $crate::macro_path } }
        #[cfg(test)]
        mod tests { use crate::testonly::X; }
        #[cfg(test)]
        use crate::alsotest;
        pub(crate) fn g<'a>(x: &'a str) -> crate::model::Thing { todo() }
    "##;
    let stripped = strip_tests(&strip_comments_and_literals(text)).0;
    let mut found: Vec<String> = references(&stripped, &["sync".to_owned()]).into_iter().map(|(m, _)| m).collect();
    found.sort();
    found.dedup();
    assert_eq!(found, ["auth", "clock", "config", "error", "fleet", "model"]);
}

#[test]
fn a_cycle_is_found_and_explained() {
    let mut graph = Graph::default();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")] {
        graph.edges.entry(from.into()).or_default().insert(to.into(), (PathBuf::from(format!("{from}.rs")), 1));
        graph.modules.insert(from.into());
        graph.modules.insert(to.into());
    }
    let cycles = graph.cycles();
    assert_eq!(cycles, [vec!["a".to_owned(), "b".into(), "c".into()]]);
    assert_eq!(graph.explain(&cycles[0], Path::new("")), "  a -> b (a.rs:1)\n  b -> c (b.rs:1)\n  c -> a (c.rs:1)\n");
}

// ------------------------------------------------------------------ crates

/// Every crate root of every workspace member: `(package name, root file)`.
fn crate_roots(root: &Path) -> Vec<(String, PathBuf)> {
    let workspace: toml::Table = toml::from_str(&read(&root.join("Cargo.toml"))).expect("root Cargo.toml");
    let members = workspace["workspace"]["members"].as_array().expect("workspace.members");
    let mut out = Vec::new();
    for member in members {
        let dir = root.join(member.as_str().expect("member path"));
        let manifest: toml::Table = toml::from_str(&read(&dir.join("Cargo.toml"))).expect("member Cargo.toml");
        let package = manifest["package"]["name"].as_str().expect("package.name").to_owned();
        let mut files = BTreeSet::new();
        let lib = manifest.get("lib").and_then(|l| l.get("path")).and_then(|p| p.as_str()).unwrap_or("src/lib.rs");
        files.insert(dir.join(lib));
        files.insert(dir.join("src/main.rs"));
        for bin in manifest.get("bin").and_then(|b| b.as_array()).into_iter().flatten() {
            if let Some(path) = bin.get("path").and_then(|p| p.as_str()) {
                files.insert(dir.join(path));
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for e in entries.flatten() {
                let p = e.path();
                files.insert(if p.is_dir() { p.join("main.rs") } else { p });
            }
        }
        out.extend(files.into_iter().filter(|f| f.is_file()).map(|f| (package.clone(), f)));
    }
    out
}

// ------------------------------------------------------------------ graph

/// Top-level modules and the `crate::` edges between them, each with where it
/// was first seen.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<String, BTreeMap<String, (PathBuf, usize)>>,
}

impl Graph {
    fn read(crate_root: &Path) -> Graph {
        let root_text = strip_tests(&strip_comments_and_literals(&read(crate_root))).0;
        let top: Vec<String> = declared_modules(&root_text);
        let mut graph = Graph { modules: top.iter().cloned().collect(), ..Graph::default() };
        let reexports = root_reexports(&root_text, &graph.modules);
        let dir = crate_root.parent().expect("crate root has a directory");
        for name in &top {
            // (module path within the crate, file, directory of its children)
            let mut stack = vec![(vec![name.clone()], module_file(dir, name))];
            while let Some((path, file)) = stack.pop() {
                let Some(file) = file else {
                    panic!("{}: module {} has no file", crate_root.display(), path.join("::"));
                };
                let (text, _) = strip_tests(&strip_comments_and_literals(&read(&file)));
                for (target, line) in references(&text, &path) {
                    let target = reexports.get(&target).cloned().unwrap_or(target);
                    if target != *name && graph.modules.contains(&target) {
                        graph.edges.entry(name.clone()).or_default().entry(target).or_insert((file.clone(), line));
                    }
                }
                let children_dir = if file.file_name().is_some_and(|f| f == "mod.rs") {
                    file.parent().map(Path::to_path_buf)
                } else {
                    Some(file.with_extension(""))
                };
                for child in declared_modules(&text) {
                    let mut p = path.clone();
                    p.push(child.clone());
                    stack.push((p, children_dir.as_deref().and_then(|d| module_file(d, &child))));
                }
            }
        }
        graph
    }

    /// Strongly connected components with more than one module (Tarjan),
    /// each sorted, in a stable order.
    fn cycles(&self) -> Vec<Vec<String>> {
        struct Tarjan<'g> {
            graph: &'g Graph,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            on_stack: BTreeSet<&'g str>,
            out: Vec<Vec<String>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, v: &'g str) {
                let i = self.index.len();
                self.index.insert(v, i);
                self.low.insert(v, i);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.graph.edges.get(v).into_iter().flat_map(|e| e.keys()) {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low.get_mut(v).expect("visited");
                        *lv = (*lv).min(lw);
                    } else if self.on_stack.contains(w) {
                        let iw = self.index[w];
                        let lv = self.low.get_mut(v).expect("visited");
                        *lv = (*lv).min(iw);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        component.push(w.to_owned());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.out.push(component);
                    }
                }
            }
        }
        let mut t = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for m in &self.modules {
            if !t.index.contains_key(m.as_str()) {
                t.visit(m);
            }
        }
        t.out.sort();
        t.out
    }

    /// One closed walk through the component, from its first module, each
    /// edge with the place it was found.
    fn explain(&self, component: &[String], root: &Path) -> String {
        let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
        let start = component[0].as_str();
        // Breadth-first from each successor of `start` back to `start`, within the component.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut seen = BTreeSet::from([start]);
        let mut last = None;
        'search: while let Some(v) = queue.pop_front() {
            for w in self.edges.get(v).into_iter().flat_map(|e| e.keys()).map(String::as_str) {
                if !inside.contains(w) {
                    continue;
                }
                if w == start {
                    last = Some(v);
                    break 'search;
                }
                if seen.insert(w) {
                    parent.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let mut walk = vec![start];
        let mut v = last.expect("a component of two or more modules has a cycle through each module");
        while v != start {
            walk.push(v);
            v = parent[v];
        }
        walk[1..].reverse();
        walk.push(start);
        let mut out = String::new();
        for pair in walk.windows(2) {
            let (file, line) = &self.edges[pair[0]][pair[1]];
            let _ = writeln!(out, "  {} -> {} ({}:{line})", pair[0], pair[1], rel(root, file));
        }
        out
    }
}

/// `dir/name.rs` or `dir/name/mod.rs`.
fn module_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.rs")), dir.join(name).join("mod.rs")].into_iter().find(|p| p.is_file())
}

// ------------------------------------------------------------------ source text

/// The names of `mod x;` declarations (module files, not inline modules).
fn declared_modules(text: &str) -> Vec<String> {
    let tokens = words(text);
    let mut out = Vec::new();
    for (i, (w, _)) in tokens.iter().enumerate() {
        if w == "mod"
            && let Some((name, end)) = tokens.get(i + 1)
            && text[*end..].trim_start().starts_with(';')
        {
            out.push(name.clone());
        }
    }
    out
}

/// Names the crate root brings in with `use a::…` (`pub use server::{ControlPlane, run}`), mapped to `a`.
fn root_reexports(text: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = find_word(rest, "use") {
        let body = &rest[at + 3..];
        let end = body.find(';').unwrap_or(body.len());
        let tree = body[..end].trim();
        let tree = tree.strip_prefix("self::").or_else(|| tree.strip_prefix("crate::")).unwrap_or(tree);
        let first = tree.split("::").next().unwrap_or_default().trim();
        if modules.contains(first) {
            for leaf in tree.split([',', '{', '}']) {
                let name = leaf.rsplit("::").next().unwrap_or_default();
                let name = name.rsplit(" as ").next().unwrap_or_default().trim();
                if !name.is_empty() {
                    out.entry(name.to_owned()).or_insert_with(|| first.to_owned());
                }
            }
        }
        rest = &body[end..];
    }
    out
}

/// Every top-level module a file (module path `at`) refers to through
/// `crate::` or through `super::` climbing to the crate root, with its line.
fn references(text: &str, at: &[String]) -> Vec<(String, usize)> {
    let bytes = text.as_bytes();
    let line_of = |i: usize| text[..i].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut out = Vec::new();
    for (word, end) in words(text) {
        let start = end - word.len();
        if start > 0 && bytes[start - 1] == b'$' {
            continue; // `$crate::` in a macro
        }
        if start >= 2 && &bytes[start - 2..start] == b"::" {
            continue; // a later segment of some path
        }
        let mut depth = match word.as_str() {
            "crate" => at.len(),
            "super" => 1,
            _ => continue,
        };
        let mut rest = &text[end..];
        while let Some(r) = rest.trim_start().strip_prefix("::") {
            let r = r.trim_start();
            if depth < at.len() {
                // Still inside a top-level module: `super::super::x`.
                match r.strip_prefix("super") {
                    Some(more) if !more.starts_with(|c: char| c == '_' || c.is_alphanumeric()) => {
                        depth += 1;
                        rest = more;
                        continue;
                    }
                    _ => break,
                }
            }
            // At the crate root: the next segment is a top-level module, or a `{…}` group of them.
            if let Some(group) = r.strip_prefix('{') {
                for item in top_level_items(group) {
                    if let Some(name) = first_word(item).filter(|n| n != "self") {
                        out.push((name, line_of(start)));
                    }
                }
            } else if let Some(name) = first_word(r) {
                out.push((name, line_of(start)));
            }
            break;
        }
    }
    out
}

/// The comma-separated items of a `{…}` group (text after its `{`), up to its `}`.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut from) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[from..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn first_word(s: &str) -> Option<String> {
    let s = s.trim_start();
    let w: String = s.chars().take_while(|c| *c == '_' || c.is_alphanumeric()).collect();
    (!w.is_empty()).then_some(w)
}

/// Identifiers with the byte offset just past each.
fn words(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, c) in text.char_indices() {
        if c == '_' || c.is_alphanumeric() {
            current.push(c);
        } else if !current.is_empty() {
            out.push((std::mem::take(&mut current), i));
        }
    }
    if !current.is_empty() {
        out.push((current, text.len()));
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    words(text).into_iter().find(|(w, _)| w == word).map(|(w, end)| end - w.len())
}

/// The text with comments, string literals and char literals blanked (line
/// breaks kept, so line numbers hold). Lifetimes stay.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: ends at a quote followed by as many #.
            let hashes = len - if chars[i] == 'b' { 3 } else { 2 };
            let mut j = i + len;
            while j < chars.len() && !(chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#'))) {
                j += 1;
            }
            let end = (j + 1 + hashes).min(chars.len());
            for &ch in &chars[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            if i < chars.len() {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{7f}'); otherwise a lifetime.
            let mut j = i + 1;
            if next == Some('\\') {
                j += 2;
            } else {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            for &ch in &chars[i..end] {
                blank(&mut out, ch);
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Length of the opening of a raw (byte) string at `i` (`r"`, `r#"`, `br##"`…), if one starts there.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1] == '_' || chars[i - 1].is_alphanumeric()) {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(j + 1 - i)
}

/// The text without `#[cfg(test)]` items (blanked, line breaks kept), and how many were removed.
fn strip_tests(text: &str) -> (String, usize) {
    let mut out: Vec<char> = text.chars().collect();
    let compact: String = text.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
    let mut removed = 0;
    let mut from = 0;
    while let Some(pos) = find_cfg_test(&compact, from) {
        // The item after the attribute (and any further attributes): to its `;` or its matching `}`.
        let chars: Vec<char> = compact.chars().collect();
        let mut i = pos;
        let mut depth = 0usize;
        let mut end = chars.len();
        let mut in_attr = 0usize;
        while i < chars.len() {
            match chars[i] {
                '[' => in_attr += 1,
                ']' => in_attr = in_attr.saturating_sub(1),
                '{' if in_attr == 0 => depth += 1,
                '}' if in_attr == 0 => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if in_attr == 0 && depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for c in &mut out[pos..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        removed += 1;
        from = end;
    }
    (out.into_iter().collect(), removed)
}

/// Char index of the next `#[cfg(test)]` (any spacing) at or after `from`.
fn find_cfg_test(text: &str, from: usize) -> Option<usize> {
    let chars: Vec<char> = text.chars().collect();
    let want: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = from;
    while i < chars.len() {
        if chars[i] == '#' {
            let mut j = i;
            let mut k = 0;
            while j < chars.len() && k < want.len() {
                if chars[j] == ' ' {
                    j += 1;
                } else if chars[j] == want[k] {
                    j += 1;
                    k += 1;
                } else {
                    break;
                }
            }
            if k == want.len() {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

// ------------------------------------------------------------------ helpers

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
