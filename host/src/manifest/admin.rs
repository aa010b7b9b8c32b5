//! `[admin]`: the admin HTTP server (Prometheus `/metrics`, the status page and `/status.json`).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;

/// Where the admin server listens when `[admin]` gives no address: loopback only, Prometheus'
/// port range for exporters.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<Spanned<String>>,
    enabled: Option<bool>,
}

/// `None` when the table turns the server off (`enabled = false`).
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    admin: Spanned<RawAdmin>,
) -> Result<Option<AdminConfig>, ManifestError> {
    let raw = admin.into_inner();
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let listen = match &raw.listen {
        None => AdminConfig::default().listen,
        Some(listen) => ctx.check(listen, "admin.listen", |l| {
            l.parse::<SocketAddr>().map_err(|_| {
                format!("{l:?} is not an IP address with port, such as \"{DEFAULT_ADMIN_LISTEN}\"")
            })
        })?,
    };
    Ok(Some(AdminConfig { listen }))
}
