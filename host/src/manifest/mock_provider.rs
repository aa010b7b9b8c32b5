//! `[mock_provider]`: a mock LLM provider started beside the pipeline, for demos and tests.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue, Fraction};

/// The mock provider's own default seed, so a manifest and its CLI behave alike.
const DEFAULT_MOCK_SEED: u64 = 42;

#[derive(Clone, Debug, PartialEq)]
pub struct MockProviderConfig {
    pub listen: SocketAddr,
    pub latency: Duration,
    pub error_rate: f64,
    pub rate_limit_rate: f64,
    pub hang_rate: f64,
    pub drop_rate: f64,
    pub seed: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMockProvider {
    listen: Option<Spanned<String>>,
    latency: Option<Spanned<DurationValue>>,
    error_rate: Option<Spanned<Fraction>>,
    rate_limit_rate: Option<Spanned<Fraction>>,
    hang_rate: Option<Spanned<Fraction>>,
    drop_rate: Option<Spanned<Fraction>>,
    seed: Option<Spanned<Count>>,
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    mock: Spanned<RawMockProvider>,
) -> Result<MockProviderConfig, ManifestError> {
    let span = mock.span();
    let raw = mock.into_inner();
    let Some(listen) = raw.listen else {
        return Err(ctx.invalid(
            span,
            "mock_provider.listen",
            "missing; give an address such as \"127.0.0.1:18080\"",
        ));
    };
    let listen = ctx.check(&listen, "mock_provider.listen", |l| {
        l.parse::<SocketAddr>().map_err(|_| {
            format!("{l:?} is not an IP address with port, such as \"127.0.0.1:18080\"")
        })
    })?;
    let latency = ctx.setting(
        &raw.latency,
        "mock_provider.latency",
        Duration::ZERO,
        DurationValue::duration,
    )?;
    let rate = |value: Option<Spanned<Fraction>>, name: &str| match value {
        None => Ok(0.0),
        Some(v) => ctx.check(&v, &format!("mock_provider.{name}"), |r| r.get()),
    };
    let seed = ctx.setting(&raw.seed, "mock_provider.seed", DEFAULT_MOCK_SEED, |s| {
        s.non_negative()
    })?;
    let config = MockProviderConfig {
        listen,
        latency,
        error_rate: rate(raw.error_rate, "error_rate")?,
        rate_limit_rate: rate(raw.rate_limit_rate, "rate_limit_rate")?,
        hang_rate: rate(raw.hang_rate, "hang_rate")?,
        drop_rate: rate(raw.drop_rate, "drop_rate")?,
        seed,
    };
    // Each request gets at most one fault, so the rates are shares of the same whole.
    let total = config.error_rate + config.rate_limit_rate + config.hang_rate + config.drop_rate;
    if total > 1.0 + 1e-9 {
        return Err(ctx.invalid(
            span,
            "mock_provider",
            format!(
                "error_rate + rate_limit_rate + hang_rate + drop_rate must be at most 1.0, got {total}"
            ),
        ));
    }
    Ok(config)
}
