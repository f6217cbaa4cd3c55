//! The project around a folder, as far as naming goes: its package (Cargo.toml or
//! package.json), the Cargo or npm/pnpm workspace it belongs to, and the git worktree it
//! sits in. `portok run` and `portok get` name an app from these:
//!
//! - a workspace member `api` of workspace `shop` is `api.shop`;
//! - in a linked git worktree (not the main checkout) on branch `fix/login`, every name
//!   gets the branch's last segment in front: `login.api.shop`. main, master and a detached
//!   HEAD add nothing, as in portless.
//!
//! Only files are read; git itself is not run.

pub mod detect;
pub mod scripts;

use crate::names::{self, NameError};
use std::path::{Path, PathBuf};

/// Branches that stand for the project itself, so their worktrees get no prefix.
const DEFAULT_BRANCHES: &[&str] = &["main", "master"];

/// The app name for `cwd`: `explicit` (a NAME argument), else `configured` (portok.toml),
/// else inferred; then the worktree prefix unless `worktree` is false. Returns the name as
/// given to the user and its host name under `tld` (`localhost`, or a checked custom TLD).
pub fn app_name(
    cwd: &Path,
    explicit: Option<&str>,
    configured: Option<&str>,
    worktree: bool,
    tld: &str,
) -> Result<(String, String), NameError> {
    let base = match explicit.or(configured) {
        Some(n) => names::short_name(&names::hostname_for(n)?).to_string(),
        None => infer_name(cwd),
    };
    let name = match worktree.then(|| worktree_prefix(cwd)).flatten() {
        Some(prefix) => format!("{prefix}.{base}"),
        None => base,
    };
    let host = names::hostname_in(&name, tld)?;
    Ok((name, host))
}

/// Name for an app when none is given: the package name (Cargo.toml, else package.json
/// with its scope dropped) with `.WORKSPACE` when the folder is a workspace member; else
/// the git repository's folder (the main checkout's, from a linked worktree); else the
/// folder itself. Every label is made valid.
pub fn infer_name(cwd: &Path) -> String {
    let package = cargo_package(cwd)
        .map(|name| (name, cargo_workspace(cwd)))
        .or_else(|| npm_package(cwd).map(|name| (name, npm_workspace(cwd))));
    if let Some((name, workspace)) = package {
        let pkg = label(&name).unwrap_or_else(|| "app".into());
        return match workspace.and_then(|w| label(&w)) {
            Some(ws) if ws != pkg => finish(format!("{pkg}.{ws}")),
            _ => finish(pkg),
        };
    }
    let folder = repo_root(cwd)
        .map(|r| r.main_root)
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| cwd.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".into());
    finish(label(&folder).unwrap_or_else(|| "app".into()))
}

/// A name made of valid labels that is not reserved; a reserved or odd one gets `app-`.
fn finish(name: String) -> String {
    if names::hostname_for(&name).is_ok() {
        return name;
    }
    let prefixed: String = format!("app-{name}").chars().take(63).collect();
    let prefixed = prefixed.trim_end_matches(['-', '.']).to_string();
    if names::hostname_for(&prefixed).is_ok() {
        prefixed
    } else {
        "app".into()
    }
}

/// One DNS label from any string: lowercase, a-z0-9 and '-', at most 63 characters.
pub fn label(raw: &str) -> Option<String> {
    let mut s = String::with_capacity(raw.len());
    for c in raw.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && s.ends_with('-')) {
            s.push(c);
        }
    }
    let s: String = s.trim_matches('-').chars().take(63).collect();
    let s = s.trim_end_matches('-');
    (!s.is_empty()).then(|| s.to_string())
}

fn read_toml(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

pub(crate) fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn cargo_package(dir: &Path) -> Option<String> {
    let t = read_toml(&dir.join("Cargo.toml"))?;
    t.get("package")?.get("name")?.as_str().map(String::from)
}

fn npm_package(dir: &Path) -> Option<String> {
    let v = read_json(&dir.join("package.json"))?;
    let name = v.get("name")?.as_str()?;
    Some(name.rsplit('/').next().unwrap_or(name).to_string())
}

/// The workspace's name when `dir` is a member of a Cargo workspace (not its root):
/// `[workspace.metadata.portok] name`, else the root package's name, else the root folder.
fn cargo_workspace(dir: &Path) -> Option<String> {
    let own = read_toml(&dir.join("Cargo.toml"))?;
    if own.contains_key("workspace") {
        // The workspace root itself: its package is the project, no suffix.
        return None;
    }
    // `package.workspace = "../.."` names the root explicitly; otherwise cargo takes the
    // nearest ancestor with a [workspace] table.
    let explicit = own
        .get("package")
        .and_then(|p| p.get("workspace"))
        .and_then(|w| w.as_str())
        .map(|w| {
            let root = dir.join(w);
            root.canonicalize().unwrap_or(root)
        });
    let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let points_at_root = explicit.is_some();
    let (root, table) = match explicit {
        Some(root) => {
            let t = read_toml(&root.join("Cargo.toml"))?;
            t.get("workspace")?;
            (root, t)
        }
        None => dir.ancestors().skip(1).find_map(|a| {
            let t = read_toml(&a.join("Cargo.toml"))?;
            t.get("workspace")?;
            Some((a.to_path_buf(), t))
        })?,
    };
    let ws = table.get("workspace")?;
    let rel = relative(dir, &root)?;
    let list = |key: &str| -> Vec<String> {
        ws.get(key)
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let member = list("members").iter().any(|g| glob_match(g, &rel))
        && !list("exclude").iter().any(|g| glob_match(g, &rel));
    // A package that names its workspace with `package.workspace` is a member even when
    // the root's `members` globs do not list it.
    if !member && !points_at_root {
        return None;
    }
    let configured = ws
        .get("metadata")
        .and_then(|m| m.get("portok"))
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    let root_package = table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    Some(
        configured
            .or(root_package)
            .map(String::from)
            .unwrap_or_else(|| folder_name(&root)),
    )
}

/// The workspace's name when `dir` is a package of an npm/yarn (`workspaces` in the root
/// package.json) or pnpm (pnpm-workspace.yaml) workspace: the root package's name (scope
/// dropped), else the root folder.
fn npm_workspace(dir: &Path) -> Option<String> {
    let own = read_json(&dir.join("package.json"));
    if dir.join("pnpm-workspace.yaml").exists()
        || own.as_ref().is_some_and(|p| p.get("workspaces").is_some())
    {
        // The workspace root itself: its package is the project, no suffix.
        return None;
    }
    for root in dir.ancestors().skip(1) {
        let pkg = read_json(&root.join("package.json"));
        let Some(globs) = workspace_globs(root) else {
            continue;
        };
        let rel = relative(dir, root)?;
        if !is_member(&globs, &rel) {
            return None;
        }
        let name = pkg
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(|n| n.rsplit('/').next().unwrap_or(n).to_string());
        return Some(name.unwrap_or_else(|| folder_name(root)));
    }
    None
}

/// The member globs of the npm/yarn/pnpm workspace rooted at `root` (pnpm-workspace.yaml's
/// `packages`, else package.json's `workspaces`); None when `root` is no workspace root.
pub(crate) fn workspace_globs(root: &Path) -> Option<Vec<String>> {
    if let Ok(yaml) = std::fs::read_to_string(root.join("pnpm-workspace.yaml")) {
        return Some(pnpm_packages(&yaml));
    }
    let w = read_json(&root.join("package.json"))?
        .get("workspaces")?
        .clone();
    Some(
        w.as_array()
            .or_else(|| w.get("packages").and_then(|p| p.as_array()))
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Whether the folder at `rel` (relative to the workspace root) is one of `globs`.
pub(crate) fn is_member(globs: &[String], rel: &str) -> bool {
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        globs.iter().partition(|g| g.starts_with('!'));
    include.iter().any(|g| glob_match(g, rel)) && !exclude.iter().any(|g| glob_match(&g[1..], rel))
}

/// The `packages:` list of a pnpm-workspace.yaml. A tiny reader for this one shape
/// (a top-level key with a list of plain or quoted strings), not a YAML parser.
fn pnpm_packages(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in yaml.lines() {
        let content = line.split(" #").next().unwrap_or("").trim_end();
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t', '-']) {
            inside = content.trim() == "packages:";
            continue;
        }
        if let Some(item) = inside.then(|| content.trim().strip_prefix('-')).flatten() {
            out.push(item.trim().trim_matches(['\'', '"']).to_string());
        }
    }
    out
}

/// `dir` relative to `root` with '/' separators, or None when it is not under it.
fn relative(dir: &Path, root: &Path) -> Option<String> {
    let rel = dir.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The folder name that stands for a repository or workspace root: in a linked worktree,
/// the main checkout's (a worktree's own folder is often `shop-fix-login`).
fn folder_name(root: &Path) -> String {
    let root = match repo_root(root) {
        Some(r) if r.root == root => r.main_root,
        _ => root.to_path_buf(),
    };
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into())
}

/// Workspace globs as cargo and npm write them: `crates/*`, `packages/**`, `apps/web`.
/// `*` and `?` stay within one path segment, `**` spans any number of them.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
    let pat: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&pat, &path)
}

fn match_segments(pat: &[&str], path: &[&str]) -> bool {
    match (pat.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            match_segments(&pat[1..], path) || (!path.is_empty() && match_segments(pat, &path[1..]))
        }
        (Some(p), Some(s)) => {
            match_one(p.as_bytes(), s.as_bytes()) && match_segments(&pat[1..], &path[1..])
        }
        _ => false,
    }
}

fn match_one(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => match_one(&p[1..], s) || (!s.is_empty() && match_one(p, &s[1..])),
        (Some(b'?'), Some(_)) => match_one(&p[1..], &s[1..]),
        (Some(a), Some(b)) => a == b && match_one(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Where a folder sits in git: its checkout's root and the main checkout's root (the same
/// folder unless this is a linked worktree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRoot {
    pub root: PathBuf,
    pub main_root: PathBuf,
    /// The linked worktree's git dir (`<main>/.git/worktrees/NAME`), None in the main one.
    pub worktree_git_dir: Option<PathBuf>,
}

/// Find the enclosing checkout by its `.git`: a folder in the main checkout, a file
/// `gitdir: <main>/.git/worktrees/NAME` in a linked worktree. A submodule's `.git` file
/// also points elsewhere, but its git dir has no `commondir`, so it counts as a main
/// checkout of its own.
pub fn repo_root(cwd: &Path) -> Option<RepoRoot> {
    let root = cwd.ancestors().find(|d| d.join(".git").exists())?;
    let dot_git = root.join(".git");
    let main = RepoRoot {
        root: root.to_path_buf(),
        main_root: root.to_path_buf(),
        worktree_git_dir: None,
    };
    if dot_git.is_dir() {
        return Some(main);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let git_dir = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    let git_dir = root.join(git_dir);
    let Ok(common) = std::fs::read_to_string(git_dir.join("commondir")) else {
        return Some(main);
    };
    let common = git_dir.join(common.trim());
    let common = common.canonicalize().unwrap_or(common);
    let main_root = common.parent()?.to_path_buf();
    Some(RepoRoot {
        root: root.to_path_buf(),
        main_root,
        worktree_git_dir: Some(git_dir),
    })
}

/// The branch a linked worktree has checked out (`fix/login`), None in the main checkout,
/// outside git, or on a detached HEAD.
pub fn worktree_branch(cwd: &Path) -> Option<String> {
    let git_dir = repo_root(cwd)?.worktree_git_dir?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    head.trim()
        .strip_prefix("ref:")
        .map(|r| r.trim())
        .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r).to_string())
}

/// The label a linked worktree puts in front of every name: the branch's last segment.
pub fn worktree_prefix(cwd: &Path) -> Option<String> {
    let branch = worktree_branch(cwd)?;
    if DEFAULT_BRANCHES.contains(&branch.as_str()) {
        return None;
    }
    label(branch.rsplit('/').next().unwrap_or(&branch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn globs_match_like_workspaces() {
        assert!(glob_match("crates/*", "crates/api"));
        assert!(!glob_match("crates/*", "crates/api/sub"));
        assert!(glob_match("packages/**", "packages/a/b"));
        assert!(glob_match("./apps/web/", "apps/web"));
        assert!(glob_match("**/svc-?", "x/y/svc-1"));
        assert!(!glob_match("apps/web", "apps/webx"));
    }

    #[test]
    fn pnpm_yaml_packages() {
        let yaml = "packages:\n  - 'apps/*'\n  - \"libs/**\" # comment\n  - '!**/test/**'\ncatalog:\n  - nope\n";
        assert_eq!(
            pnpm_packages(yaml),
            vec!["apps/*", "libs/**", "!**/test/**"]
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label("Fix_Login").as_deref(), Some("fix-login"));
        assert_eq!(label("--").as_deref(), None);
        assert_eq!(label("@acme/Web UI").as_deref(), Some("acme-web-ui"));
    }

    #[test]
    fn plain_folders_and_reserved_names() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("Some Folder");
        fs::create_dir(&dir).unwrap();
        assert_eq!(infer_name(&dir), "some-folder");
        let proxy = d.path().join("proxy");
        fs::create_dir(&proxy).unwrap();
        assert_eq!(infer_name(&proxy), "app-proxy");
    }

    #[test]
    fn infers_from_cargo_then_npm_then_folder() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("Some Folder");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(infer_name(&dir), "some-folder");
        std::fs::write(dir.join("package.json"), r#"{"name":"@acme/Web_UI"}"#).unwrap();
        assert_eq!(infer_name(&dir), "web-ui");
        std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"api_server\"\n").unwrap();
        assert_eq!(infer_name(&dir), "api-server");
    }
}
