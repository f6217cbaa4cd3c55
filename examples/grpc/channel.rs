//! A tonic channel through portok: shared by examples/grpc.rs and the gRPC tests.

use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A channel to `addr` (http://127.0.0.1:PORT) that names `authority` (NAME.localhost:PORT)
/// in every call, over TLS with `ca` when given, else h2c.
pub async fn channel(
    addr: &str,
    authority: &str,
    ca: Option<&str>,
) -> Result<Channel, Box<dyn std::error::Error>> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let origin = format!("{scheme}://{authority}").parse()?;
    let mut endpoint = Endpoint::from_shared(addr.replace("http://", &format!("{scheme}://")))?
        .origin(origin)
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)?;
        let host = authority.split(':').next().unwrap_or(authority);
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(host),
        )?;
    }
    Ok(endpoint.connect().await?)
}
