//! `portok restart` and `portok logs`: asking an app's `portok run` over its run socket.

use super::*;

pub(super) fn restart(name: &str) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(name)?;
    let reply = control::ask_app(
        &state,
        &host,
        &AppRequest::Restart,
        std::time::Duration::from_secs(3600),
    )?;
    match reply {
        AppReply::Redeployed { message } => {
            eprintln!("portok: {host} redeployed: {message}");
            Ok(0)
        }
        AppReply::Failed { message } => {
            eprintln!("portok: redeploy of {host} failed: {message}");
            Ok(1)
        }
        other => Err(anyhow::anyhow!(
            "{host}'s portok run answered a restart with {other:?}; is it a different portok version?"
        )),
    }
}

pub(super) fn logs(name: &str, lines: usize, follow: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(name)?;
    let timeout = std::time::Duration::from_secs(10);
    let ask =
        |lines: usize| match control::ask_app(&state, &host, &AppRequest::Logs { lines }, timeout)?
        {
            AppReply::Logs { lines } => Ok(lines),
            other => Err(anyhow::anyhow!(
                "{host}'s portok run did not give its logs: {other:?}"
            )),
        };
    let mut last: Vec<String> = ask(lines)?;
    for l in &last {
        println!("{l}");
    }
    if !follow {
        return Ok(0);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now: Vec<String> = match ask(control::LOG_LINES) {
            Ok(lines) => lines,
            Err(_) => return Ok(0),
        };
        // Print what follows the last line we printed (the buffer slides).
        let start = match last.last() {
            Some(tail) => now
                .iter()
                .rposition(|l| l == tail)
                .map(|i| i + 1)
                .unwrap_or(0),
            None => 0,
        };
        for l in &now[start..] {
            println!("{l}");
        }
        last = now;
    }
}
