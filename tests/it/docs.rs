//! The Markdown files hold together: every relative link in every `.md` file of the repository
//! (README.md, CONTRIBUTING.md, ARCHITECTURE.md, docs/, bench/, fuzz/...) names a file that
//! exists, and every `#anchor` names a heading of its target, by GitHub's rule. Links with a
//! scheme (https:, mailto:...) are not followed. No daemon, no network.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.md` file under `root`, sorted, without build output, dependencies, hidden
/// folders and the benchmark's raw run folders (git ignores those).
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skip = name.starts_with('.')
                    || name == "target"
                    || name == "node_modules"
                    || path
                        .strip_prefix(root)
                        .is_ok_and(|p| p == Path::new("bench/results/raw"));
                if !skip {
                    walk(root, &path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The lines of a Markdown file outside fenced code blocks (```` ``` ```` or `~~~`), with
/// their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = t.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = marker {
            let n = t.chars().take_while(|x| *x == c).count();
            if n >= 3 {
                match fence {
                    None => fence = Some((c, n)),
                    Some((fc, fnum)) if fc == c && n >= fnum && t[n..].trim().is_empty() => {
                        fence = None
                    }
                    Some(_) => {}
                }
                continue;
            }
        }
        if fence.is_none() {
            out.push((i + 1, line));
        }
    }
    out
}

/// `line` with the contents of its code spans blanked out (`` `[a](b)` `` is no link).
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        // The closing run of exactly the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let r = chars[j..].iter().take_while(|c| **c == '`').count();
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(std::iter::repeat_n(' ', j + run - i));
                i = j + run;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// The destinations of the inline links and images (`[text](dest "title")`,
/// `![alt](dest)`) and of the reference definitions (`[label]: dest`) on a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        if let Some(end) = trimmed.find("]:") {
            if !trimmed[..end].contains("](") {
                if let Some(dest) = trimmed[end + 2..].split_whitespace().next() {
                    out.push(dest.trim_matches(['<', '>']).to_string());
                }
                return out;
            }
        }
    }
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(at) = line[from..].find("](") {
        let start = from + at + 2;
        // The destination ends at the `)` that balances: URLs may hold parentheses.
        let mut depth = 0usize;
        let mut end = None;
        for (k, b) in bytes.iter().enumerate().skip(start) {
            match b {
                b'(' => depth += 1,
                b')' if depth == 0 => {
                    end = Some(k);
                    break;
                }
                b')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let inner = line[start..end].trim();
        let dest = if let Some(rest) = inner.strip_prefix('<') {
            rest.split('>').next().unwrap_or("")
        } else {
            inner.split_whitespace().next().unwrap_or("")
        };
        if !dest.is_empty() {
            out.push(dest.to_string());
        }
        from = end + 1;
    }
    out
}

/// GitHub's anchor for a heading: lower case, every character that is not a letter, a digit,
/// a space, `-` or `_` dropped (backticks, `.`, `:`, `/`...), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (ATX `# ...` and setext), a repeated heading
/// getting `-1`, `-2`... as on GitHub.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let lines = prose_lines(text);
    let mut add = |title: &str| {
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    };
    for (k, (_, line)) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let t = line.trim_start_matches(' ');
        let hashes = t.chars().take_while(|c| *c == '#').count();
        if indent <= 3 && (1..=6).contains(&hashes) {
            let rest = &t[hashes..];
            if rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t') {
                // A closing run of #s is not part of the title.
                let title = rest.trim().trim_end_matches('#').trim_end();
                add(title);
                continue;
            }
        }
        // Setext: a paragraph line underlined with === or ---.
        let u = line.trim();
        let underline =
            !u.is_empty() && (u.chars().all(|c| c == '=') || u.chars().all(|c| c == '-'));
        if underline && indent <= 3 && k > 0 {
            let (prev_no, prev) = lines[k - 1];
            let (this_no, _) = lines[k];
            let p = prev.trim();
            let paragraph = prev_no + 1 == this_no
                && !p.is_empty()
                && !p.starts_with('#')
                && !p.starts_with('|')
                && !p.starts_with('-')
                && !p.starts_with('*')
                && !p.starts_with('>');
            if paragraph {
                add(p);
            }
        }
    }
    out
}

/// `%20` and friends, for file names with spaces.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has_scheme(dest: &str) -> bool {
    let Some(colon) = dest.find(':') else {
        return false;
    };
    let scheme = &dest[..colon];
    !scheme.is_empty()
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every broken relative link or anchor in the Markdown files under `root`, one line each:
/// `FILE:LINE: DEST: why`.
fn broken_links(root: &Path) -> Vec<String> {
    let files = markdown_files(root);
    let mut texts: HashMap<PathBuf, String> = HashMap::new();
    for f in &files {
        texts.insert(f.clone(), std::fs::read_to_string(f).unwrap());
    }
    let mut anchor_cache: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (no, line) in prose_lines(&texts[file]) {
            for dest in link_targets(line) {
                if has_scheme(&dest) || dest.starts_with("//") {
                    continue;
                }
                let (path_part, anchor) = match dest.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (dest.as_str(), None),
                };
                let path_part = path_part.split('?').next().unwrap_or("");
                let target = if path_part.is_empty() {
                    file.clone()
                } else if let Some(abs) = path_part.strip_prefix('/') {
                    normalize(&root.join(percent_decode(abs)))
                } else {
                    normalize(&file.parent().unwrap().join(percent_decode(path_part)))
                };
                if !target.starts_with(root) {
                    problems.push(format!("{rel}:{no}: {dest}: leaves the repository"));
                    continue;
                }
                if !target.exists() {
                    let shown = target
                        .strip_prefix(root)
                        .unwrap_or(&target)
                        .display()
                        .to_string();
                    problems.push(format!("{rel}:{no}: {dest}: no file {shown}"));
                    continue;
                }
                let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
                    continue;
                };
                if target.extension().is_none_or(|e| e != "md") || !target.is_file() {
                    continue;
                }
                let list = anchor_cache.entry(target.clone()).or_insert_with(|| {
                    let text = match texts.get(&target) {
                        Some(t) => t.clone(),
                        None => std::fs::read_to_string(&target).unwrap_or_default(),
                    };
                    anchors(&text)
                });
                let want = percent_decode(anchor).to_lowercase();
                if !list.contains(&want) {
                    problems.push(format!(
                        "{rel}:{no}: {dest}: no heading with anchor #{want} in {}",
                        target.strip_prefix(root).unwrap_or(&target).display()
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_in_the_markdown_files_resolves() {
    let problems = broken_links(&root());
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_check_reads_the_front_page_the_guides_and_the_references() {
    let root = root();
    let files: Vec<PathBuf> = markdown_files(&root)
        .into_iter()
        .map(|f| f.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    for want in [
        "README.md",
        "CONTRIBUTING.md",
        "ARCHITECTURE.md",
        "bench/README.md",
        "docs/running-apps.md",
        "docs/reference/commands.md",
    ] {
        assert!(
            files.contains(&PathBuf::from(want)),
            "{want} not among {files:?}"
        );
    }
    // The front page links to its guides, so the check has links to follow.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let links: Vec<String> = prose_lines(&readme)
        .into_iter()
        .flat_map(|(_, l)| link_targets(l))
        .collect();
    assert!(
        links.iter().any(|l| l.starts_with("docs/")),
        "README.md links to no guide: {links:?}"
    );
}

#[test]
fn readme_is_a_front_page_with_the_test_command_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; keep it at most 300 (guides go to docs/)"
    );
    // .ci/run runs exactly the README's test command.
    assert!(
        readme
            .lines()
            .any(|l| l == "cargo nextest run --no-fail-fast"),
        "README.md lost the line `cargo nextest run --no-fail-fast`"
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(slug("Custom domains: `--tld`"), "custom-domains---tld");
    assert_eq!(
        slug("/etc/hosts, for resolvers without `*.localhost`"),
        "etchosts-for-resolvers-without-localhost"
    );
    assert_eq!(
        slug("Project settings: portok.toml"),
        "project-settings-portoktoml"
    );
    assert_eq!(
        slug("HTTP/2 soak (`bench/soak_h2.sh`)"),
        "http2-soak-benchsoak_h2sh"
    );
    assert_eq!(
        slug("Your project's dev command"),
        "your-projects-dev-command"
    );
    let text = "# A\n\n```sh\n# not a heading\n```\n\n## A\n\nB title\n---\n";
    assert_eq!(anchors(text), ["a", "a-1", "b-title"]);
}

#[test]
fn links_in_code_are_not_links() {
    assert_eq!(
        link_targets("see [x](a.md#b) and `[y](c.md)` and ![p](d.png \"t\")"),
        ["a.md#b", "d.png"]
    );
    assert_eq!(link_targets("[ref]: docs/x.md"), ["docs/x.md"]);
    assert_eq!(
        link_targets("[w](https://example.com/a_(b))"),
        ["https://example.com/a_(b)"]
    );
    assert!(has_scheme("mailto:x@example.com") && !has_scheme("docs/a.md"));
}

#[test]
fn a_missing_file_or_heading_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Top\n\n[ok](docs/a.md#real-heading) [gone](docs/missing.md) [bad](docs/a.md#nope)\n\
         [self](#top) [selfbad](#bottom) [web](https://example.com/x.md)\n\n\
         ```\n[in code](nowhere.md)\n```\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/a.md"),
        "# Real heading\n\n[up](../README.md#top)\n",
    )
    .unwrap();
    let problems = broken_links(root);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains("docs/missing.md: no file"),
        "{problems:#?}"
    );
    assert!(problems[1].contains("#nope"), "{problems:#?}");
    assert!(problems[2].contains("#bottom"), "{problems:#?}");
}

/// ARCHITECTURE.md names files in code spans too (`src/run/tool.rs`): each must exist, it
/// names at least 20, and it marks its invariants in bold.
#[test]
fn architecture_names_real_files_and_bold_invariants() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut named: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("src/") && (s.ends_with(".rs") || s.ends_with('/')))
        .collect();
    named.sort();
    named.dedup();
    let missing: Vec<&&str> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names missing files: {missing:?}"
    );
    assert!(named.len() >= 20, "only {} files named", named.len());
    assert!(text.matches("**Architecture Invariant:").count() >= 5);
    assert!(text.lines().count() >= 100);
}
