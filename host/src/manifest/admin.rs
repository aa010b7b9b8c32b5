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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{parse_with_env, ManifestError};
    use super::*;

    const BASE: &str = "[source]\nkind = \"stdin\"\n[[operator]]\nname = \"a\"\nplugin = \"p.wasm\"\n[sink]\nkind = \"stdout\"\n";

    fn parse(admin: &str) -> Result<Option<AdminConfig>, ManifestError> {
        let text = format!("{BASE}{admin}");
        parse_with_env(&text, Path::new("/p/pipeline.toml"), &|_| {
            Err(std::env::VarError::NotPresent)
        })
        .map(|m| m.admin)
    }

    #[test]
    fn off_without_the_table_and_on_loopback_with_an_empty_one() {
        assert_eq!(parse("").unwrap(), None);
        let admin = parse("[admin]\n").unwrap().expect("on");
        assert_eq!(admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(admin.listen.ip().is_loopback());
        assert_eq!(parse("[admin]\nenabled = false\n").unwrap(), None);
        let admin = parse("[admin]\nlisten = \"0.0.0.0:9100\"\n").unwrap();
        assert_eq!(
            admin.map(|a| a.listen.to_string()),
            Some("0.0.0.0:9100".into())
        );
    }

    #[test]
    fn a_bad_address_or_key_is_refused_with_its_line() {
        match parse("[admin]\nlisten = \"localhost\"\n") {
            Err(ManifestError::Invalid { at, field, message }) => {
                assert_eq!((at.line, field.as_str()), (9, "admin.listen"));
                assert!(
                    message.contains("\"localhost\" is not an IP address with port"),
                    "{message}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let error = parse("[admin]\nport = 9464\n").unwrap_err().to_string();
        assert!(error.contains("port"), "{error}");
    }
}
