//! One generation of the app: the child process (in its own process group, with the
//! parent-death signal set), its environment, and its output, forwarded line by line and
//! kept in a ring buffer for the crash page and `portok logs`.

use crate::sync::LockExt;
use crate::sys;
use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Lines kept per generation.
pub const KEEP_LINES: usize = crate::control::LOG_LINES;

/// What every generation is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: Vec<String>,
    /// What the command runs and how its port reaches it.
    pub tool: super::tool::Understood,
    pub name: String,
    pub hostname: String,
    pub proxy_port: u16,
    /// The app's URL through portok (PORTOK_URL).
    pub url: String,
    pub ca_pem: Option<std::path::PathBuf>,
    /// `--env` and the settings' `env`, set after portok's own variables.
    pub env: Vec<(String, String)>,
}

pub type Output = Arc<Mutex<VecDeque<String>>>;

pub struct Generation {
    pub n: u64,
    pub port: u16,
    pub pid: u32,
    pub started: Instant,
    pub output: Output,
    child: Child,
    exit: Option<ExitStatus>,
    /// The stdout/stderr forwarders; they end at EOF, shortly after the process exits.
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

/// The argv to execute: run directly unless the command is one argument with shell syntax
/// (a shell that dies on SIGTERM would hide the real server still draining).
pub fn argv(command: &[String]) -> Vec<String> {
    match command {
        [one] if crate::cmdline::needs_shell(one) => vec!["sh".into(), "-c".into(), one.clone()],
        _ => command.to_vec(),
    }
}

impl Generation {
    /// `instance`: the instance's index in a pool (its output lines are tagged `[i]`);
    /// None for a single instance (PORTOK_INSTANCE=0).
    pub fn spawn(
        launch: &Launch,
        n: u64,
        port: u16,
        instance: Option<usize>,
    ) -> io::Result<Generation> {
        let mut argv = argv(&launch.command);
        super::flags::inject(&mut argv, &launch.tool, port);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("PORTOK_URL", &launch.url)
            .env("PORTOK_NAME", &launch.name)
            .env("PORTOK_GENERATION", n.to_string())
            .env("PORTOK_INSTANCE", instance.unwrap_or(0).to_string())
            .env("__VITE_ADDITIONAL_SERVER_ALLOWED_HOSTS", ".localhost")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(ca) = &launch.ca_pem {
            if std::env::var_os("NODE_EXTRA_CA_CERTS").is_none() {
                cmd.env("NODE_EXTRA_CA_CERTS", ca);
            }
        }
        // If `portok run` dies (even by SIGKILL) the app does not live on unsupervised.
        sys::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", argv[0])))?;
        let pid = child.id().unwrap_or(0);
        let output: Output = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP_LINES)));
        let mut pumps = Vec::new();
        let tag: Arc<str> = instance
            .map(|i| format!("[{i}] "))
            .unwrap_or_default()
            .into();
        if let Some(out) = child.stdout.take() {
            let keep = output.clone();
            pumps.push(tokio::spawn(pump(
                out,
                tokio::io::stdout(),
                keep,
                tag.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            let keep = output.clone();
            pumps.push(tokio::spawn(pump(err, tokio::io::stderr(), keep, tag)));
        }
        Ok(Generation {
            n,
            port,
            pid,
            started: Instant::now(),
            output,
            child,
            exit: None,
            pumps,
        })
    }

    /// Wait for the process to exit (cancel-safe; remembers the status).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let status = match self.child.wait().await {
            Ok(s) => s,
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
        };
        self.exit = Some(status);
        status
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
            }
        }
        self.exit
    }

    /// After the process ended: let the forwarders pass on its last lines (bounded, since a
    /// grandchild may still hold the pipes open), so `tail` sees them.
    pub async fn flush_output(&mut self) {
        for p in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
        }
    }

    pub fn tail(&self, n: usize) -> Vec<String> {
        let out = self.output.locked();
        out.iter()
            .skip(out.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// SIGTERM to the process group, SIGKILL to the group after `kill_timeout`; also
    /// sweeps up grandchildren left in the group after the leader exited.
    pub async fn stop(&mut self, kill_timeout: Duration) -> ExitStatus {
        let pgid = self.pid as i32;
        sys::signal_group(pgid, crate::sys::Signal::Term);
        let status = match tokio::time::timeout(kill_timeout, self.wait()).await {
            Ok(s) => s,
            Err(_) => {
                sys::signal_group(pgid, crate::sys::Signal::Kill);
                self.wait().await
            }
        };
        // Grandchildren that ignored SIGTERM still hold the group: give them the same
        // timeout, then kill them.
        let deadline = Instant::now() + kill_timeout;
        while sys::group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sys::signal_group(pgid, crate::sys::Signal::Kill);
        status
    }
}

/// Forward a child's output line by line as it is written, keeping the last lines.
/// `tag` goes in front of every line (a pool's instance number).
async fn pump<R, W>(from: R, mut to: W, keep: Output, tag: Arc<str>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !tag.is_empty() {
            // One write per line, so instances sharing the terminal do not mix tags.
            line.splice(0..0, tag.bytes());
        }
        let _ = to.write_all(&line).await;
        let _ = to.flush().await;
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        let mut keep = keep.locked();
        if keep.len() == KEEP_LINES {
            keep.pop_front();
        }
        keep.push_back(text);
    }
}

/// A short description of how a process ended: "exited with status 101", "killed by SIGKILL".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn shell_only_for_one_argument_with_shell_syntax() {
        assert_eq!(argv(&v(&["cargo", "run"])), v(&["cargo", "run"]));
        assert_eq!(argv(&v(&["cargo run && x"]))[..2], v(&["sh", "-c"]));
        assert_eq!(argv(&v(&["./server"])), v(&["./server"]));
    }
}
