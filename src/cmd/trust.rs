//! `portok trust` / `untrust`: portok's CA in the system store and browsers.

use super::*;

pub(super) fn trust(check: bool, renew: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    state.ensure()?;
    let pem = crate::ca::ca_pem_path(state.root());
    let opts = crate::trust::TrustOptions::for_current_user();
    if renew {
        return renew_ca(&state, &pem, &opts);
    }
    crate::ca::Ca::load_or_create(state.root(), &super::served_tlds(&state)?)?;
    if check {
        let ok = crate::trust::check(&pem, &opts);
        eprintln!(
            "portok: the local CA ({}) is {}trusted by the system store",
            pem.display(),
            if ok { "" } else { "not " }
        );
        return Ok(if ok { 0 } else { 1 });
    }
    let report = crate::trust::trust(&pem, &opts);
    print!("{report}");
    Ok(if report.ok() { 0 } else { 1 })
}

pub(super) fn untrust() -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let pem = crate::ca::ca_pem_path(state.root());
    let report = crate::trust::untrust(&pem, &crate::trust::TrustOptions::for_current_user());
    print!("{report}");
    Ok(if report.ok() { 0 } else { 1 })
}

/// `portok trust --renew`: take the old CA out of the trust stores, make a new one (with
/// the name constraints of a new CA) and trust that.
fn renew_ca(
    state: &StateDir,
    pem: &std::path::Path,
    opts: &crate::trust::TrustOptions,
) -> anyhow::Result<i32> {
    if pem.exists() {
        print!("{}", crate::trust::untrust(pem, opts));
    }
    let (ca, old) = crate::ca::Ca::renew(state.root(), &super::served_tlds(state)?)?;
    if let Some(old) = old {
        crate::ui::say(&format!("the old CA is kept as {}", old.display()));
    }
    let names = ca.permitted().unwrap_or_default().join(", ");
    crate::ui::say(&format!(
        "new local CA {}: it vouches only for {names} (and names under them), 127.0.0.0/8 and ::1",
        pem.display()
    ));
    let report = crate::trust::trust(pem, opts);
    print!("{report}");
    if control::status(state).is_some() {
        crate::ui::say("the daemon still serves certificates from the old CA: restart it with `portok proxy stop && portok proxy start`");
    }
    Ok(if report.ok() { 0 } else { 1 })
}
