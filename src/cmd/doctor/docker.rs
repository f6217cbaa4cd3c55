//! Doctor's line on containers: whether the daemon follows a Docker engine, and any
//! container it refuses a name (a clash with an app or an alias). No engine is one plain
//! line, not a warning: most machines have none.

use super::{ok, warn, Finding};
use crate::control::DaemonStatus;
use crate::routes::Route;
use crate::state::StateDir;

pub(super) fn check(state: &StateDir, daemon: Option<&DaemonStatus>, routes: &[Route]) -> Finding {
    const C: &str = "docker";
    if daemon.is_none() {
        return ok(C, "the proxy is not running, so no containers are followed");
    }
    let Some(report) = crate::daemon::containers::report(state) else {
        return ok(
            C,
            "off (the proxy runs with --no-docker or PORTOK_DOCKER=0)",
        );
    };
    let served = routes.iter().filter(|r| r.container.is_some()).count();
    if report.engine != "connected" {
        return ok(
            C,
            format!(
                "no engine at {} (from {}): {}; containers are not routed",
                report.endpoint, report.from, report.engine
            ),
        );
    }
    let following = format!(
        "following the engine at {} (from {}): {served} container{} served",
        report.endpoint,
        report.from,
        if served == 1 { "" } else { "s" }
    );
    if report.refused.is_empty() {
        return ok(C, following);
    }
    warn(
        C,
        format!("{following}; not served: {}", report.refused.join("; ")),
        "give the container another name with the label portok.name=NAME, or stop what holds the name",
    )
}
