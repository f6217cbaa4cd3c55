//! `portok hosts sync|clean`: portok's block in /etc/hosts, by hand.

use crate::cli::HostsCmd;
use crate::hosts;
use crate::routes::store;

/// `portok hosts sync|clean`.
pub fn main(cmd: HostsCmd) -> anyhow::Result<i32> {
    let path = hosts::hosts_path();
    let shown = path.display();
    match cmd {
        HostsCmd::Sync => {
            let state = hosts::state_dir()?;
            let names: Vec<String> = store::load(&state)?
                .into_iter()
                .map(|r| r.hostname)
                .collect();
            let changed = hosts::sync_routes(&path, &names)?;
            let say = crate::ui::say;
            match (names.is_empty(), changed) {
                (true, true) => say(&format!(
                    "no routes, so portok's block is gone from {shown}"
                )),
                (true, false) => say(&format!("no routes, so nothing to write to {shown}")),
                (false, true) => say(&format!(
                    "{shown}: portok's block maps {} to 127.0.0.1 and ::1",
                    names.join(", ")
                )),
                (false, false) => say(&format!(
                    "{shown} is already up to date ({} name{})",
                    names.len(),
                    if names.len() == 1 { "" } else { "s" }
                )),
            }
            if !names.is_empty() {
                say("routes added later need another `portok hosts sync`, or run the daemon with `--sync-hosts` to keep the block in step");
            }
        }
        HostsCmd::Clean => {
            if hosts::remove_block(&path)? {
                crate::ui::say(&format!("removed portok's block from {shown}"));
            } else {
                crate::ui::say(&format!("{shown} has no portok block; nothing to do"));
            }
        }
    }
    Ok(0)
}
