//! Shell completions (clap_complete) and man pages (clap_mangen), generated from the clap
//! definitions in [`crate::cli`] at run time, so they always match the binary.

use crate::cli::Cli;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write man pages to {path} (check that the folder is writable; system man folders need sudo)")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// `portok completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    // Into a buffer first: clap_complete panics on a write error, and `| head` closing
    // the pipe early is not an error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "portok", &mut buf);
    print_all(&buf)
}

/// Write to stdout; a reader that went away (EPIPE) is fine.
fn print_all(bytes: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

/// `portok man [--dir DIR]`: portok.1 on stdout, or portok.1 and one portok-COMMAND.1 per
/// command (portok-proxy-start.1 for nested ones) written into DIR.
pub fn man(dir: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return print_all(&buf);
    };
    std::fs::create_dir_all(dir).map_err(|source| GenerateError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    // clap names nested pages by their path: portok-proxy-start.1.
    clap_mangen::generate_to(cmd, dir).map_err(|source| GenerateError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let pages = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("portok") && n.ends_with(".1")
                })
                .count()
        })
        .unwrap_or(0);
    crate::ui::say(&format!(
        "wrote {pages} man pages to {} (`man portok` once it is on MANPATH)",
        dir.display()
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command (nested ones too) shows an example in its --help, and every command
    /// word is a reserved app name, so `portok NAME CMD` can never shadow one.
    #[test]
    fn every_command_has_an_example_and_a_reserved_word() {
        fn walk(cmd: &clap::Command, path: &str, top: bool) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("{path} {}", sub.get_name());
                if top {
                    assert!(
                        crate::names::RESERVED.contains(&sub.get_name()),
                        "`{name}` is not in names::RESERVED"
                    );
                }
                if sub.has_subcommands() {
                    walk(sub, &name, false);
                } else {
                    let help = sub
                        .get_after_help()
                        .map(|h| h.to_string())
                        .unwrap_or_default();
                    assert!(help.contains("Example"), "`{name} --help` has no example");
                }
            }
        }
        walk(&Cli::command(), "portok", true);
    }
}
