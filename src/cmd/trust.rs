//! `portok trust` / `untrust`: portok's CA in the system store and browsers.

use super::*;

pub(super) fn trust(check: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    state.ensure()?;
    let ca = crate::ca::Ca::load_or_create(state.root())?;
    let _ = ca;
    let pem = crate::ca::ca_pem_path(state.root());
    let opts = crate::trust::TrustOptions::for_current_user();
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
