//! `portok docker env`: what makes a container trust portok's CA, so it can call other apps
//! at https://NAME.localhost. The CA file is mounted read-only into the image's CA folder
//! (where `update-ca-certificates` looks on Debian, Ubuntu and Alpine), and the variables
//! point Node.js and OpenSSL-based clients (Python, Ruby, curl) at it.

use super::*;

/// Where the CA lands in the container.
pub const CA_IN_CONTAINER: &str = "/usr/local/share/ca-certificates/portok-ca.crt";

pub(super) fn env(compose: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let ca = crate::ca::ca_pem_path(state.root());
    if !ca.exists() {
        bail!(UsageError(format!(
            "portok has no CA yet ({} is missing): start the proxy once (`portok proxy start`), then run this again",
            ca.display()
        )));
    }
    let vars = [
        ("NODE_EXTRA_CA_CERTS", CA_IN_CONTAINER),
        ("SSL_CERT_FILE", CA_IN_CONTAINER),
    ];
    if compose {
        println!("    volumes:");
        println!("      - {}:{CA_IN_CONTAINER}:ro", ca.display());
        println!("    environment:");
        for (k, v) in vars {
            println!("      {k}: {v}");
        }
    } else {
        let mut words = vec![format!("-v {}:{CA_IN_CONTAINER}:ro", ca.display())];
        words.extend(vars.iter().map(|(k, v)| format!("-e {k}={v}")));
        println!("{}", words.join(" "));
    }
    Ok(0)
}
