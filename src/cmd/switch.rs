//! `portok switch NAME PORT`: a health-gated switch of an alias route.

use super::*;

pub(super) fn switch(
    name: &str,
    request: crate::daemon::switch::SwitchRequest,
) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let hostname = names::hostname_for(name)?;
    if request.port == 0 {
        bail!(UsageError(
            "port 0 is not a port an app can listen on".into()
        ));
    }
    let wait = std::time::Duration::from_secs_f64(request.drain_secs.max(0.0) + 30.0);
    daemon::ensure_and_reload(&state, state::proxy_port(None)?)?;
    match control::call(
        &state,
        &control::Request::Switch { hostname, request },
        wait,
    ) {
        Ok(reply) => {
            eprintln!("portok: {}", reply.message.unwrap_or_default());
            Ok(0)
        }
        Err(control::ControlError::Refused { message }) => {
            eprintln!("portok: switch refused: {message}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
