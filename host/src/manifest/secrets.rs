//! `[secrets.NAME]`: named secrets, read from the environment or given inline, each bound to the
//! hosts it may be sent to.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::syntax::key_segment;
use super::values::{host_rules, HostRule};

/// Shortest secret value accepted: the host blanks every occurrence of a secret out of answers,
/// and a short value would blank ordinary text (`ok` in `book`) and so tell a plugin what it is.
pub const MIN_SECRET_BYTES: usize = 8;

/// A named secret, its resolved value and the hosts it may be sent to. `Debug` never shows the
/// value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub value: String,
    /// Requests that carry this secret may go only to these hosts (checked before sending).
    pub hosts: Vec<HostRule>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    env: Option<Spanned<String>>,
    value: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Reads an environment variable; passed in so that tests need not mutate the process
/// environment.
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    env: EnvLookup<'_>,
) -> Result<HashMap<String, Secret>, ManifestError> {
    let mut secrets = HashMap::new();
    for (name, secret) in raw {
        let field = format!("secrets.{}", key_segment(name.get_ref()));
        let span = secret.span();
        let secret = secret.into_inner();
        let given = value(ctx, &field, name.get_ref(), span.clone(), &secret, env)?;
        check_length(ctx, name.get_ref(), &given)?;
        let hosts = hosts(ctx, &field, name.get_ref(), span, secret.hosts)?;
        let name = name.into_inner();
        let value = given.value;
        secrets.insert(name.clone(), Secret { name, value, hosts });
    }
    Ok(secrets)
}

/// A secret's value, where it was given (for errors about it) and what to call it there.
struct GivenValue {
    value: String,
    span: Range<usize>,
    field: String,
    origin: String,
}

fn value(
    ctx: &Ctx<'_>,
    field: &str,
    name: &str,
    span: Range<usize>,
    secret: &RawSecret,
    env: EnvLookup<'_>,
) -> Result<GivenValue, ManifestError> {
    match (&secret.env, &secret.value) {
        (Some(var), None) => from_env(ctx, field, name, var, env),
        (None, Some(value)) => Ok(GivenValue {
            value: value.get_ref().clone(),
            span: value.span(),
            field: format!("{field}.value"),
            origin: "its value".to_owned(),
        }),
        (Some(_), Some(value)) => Err(ctx.invalid(
            value.span(),
            field,
            "give either `env` or `value`, not both",
        )),
        (None, None) => Err(ctx.invalid(
            span,
            field,
            "needs `env = \"VARIABLE\"` or `value = \"...\"`",
        )),
    }
}

fn from_env(
    ctx: &Ctx<'_>,
    field: &str,
    name: &str,
    var: &Spanned<String>,
    env: EnvLookup<'_>,
) -> Result<GivenValue, ManifestError> {
    let var_name = var.get_ref();
    if var_name.is_empty() {
        return Err(ctx.invalid(var.span(), format!("{field}.env"), "must not be empty"));
    }
    let value = match env(var_name) {
        Ok(v) if !v.is_empty() => v,
        failed => {
            let problem = match failed {
                Ok(_) => "is set but empty",
                Err(std::env::VarError::NotPresent) => "is not set",
                Err(std::env::VarError::NotUnicode(_)) => "is not valid UTF-8",
            };
            return Err(ctx.invalid(
                var.span(),
                format!("{field}.env"),
                format!("secret {name:?} reads environment variable {var_name}, which {problem}"),
            ));
        }
    };
    Ok(GivenValue {
        value,
        span: var.span(),
        field: format!("{field}.env"),
        origin: format!("environment variable {var_name}"),
    })
}

fn check_length(ctx: &Ctx<'_>, name: &str, given: &GivenValue) -> Result<(), ManifestError> {
    if given.value.len() >= MIN_SECRET_BYTES {
        return Ok(());
    }
    // The length only: the value itself never goes into a message.
    Err(ctx.invalid(
        given.span.clone(),
        given.field.clone(),
        format!(
            "secret {name:?}: {} is {} bytes long; a secret must be at least \
             {MIN_SECRET_BYTES} bytes, because the host blanks it out of every answer and \
             a short one would blank ordinary text (and show a plugin where it occurs)",
            given.origin,
            given.value.len()
        ),
    ))
}

fn hosts(
    ctx: &Ctx<'_>,
    field: &str,
    name: &str,
    span: Range<usize>,
    raw_hosts: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<HostRule>, ManifestError> {
    let hosts_field = format!("{field}.hosts");
    let Some(raw_hosts) = raw_hosts else {
        return Err(ctx.invalid(
            span,
            hosts_field,
            format!(
                "is required: list the hosts secret {name:?} may be sent to, as in \
                 allowed_hosts, e.g. hosts = [\"api.openai.com\"]; a request that carries it \
                 to any other host is refused"
            ),
        ));
    };
    if raw_hosts.get_ref().is_empty() {
        return Err(ctx.invalid(
            raw_hosts.span(),
            hosts_field,
            "must list at least one host, e.g. hosts = [\"api.openai.com\"]",
        ));
    }
    host_rules(ctx, raw_hosts.get_ref(), &hosts_field)
}
