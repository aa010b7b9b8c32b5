//! `cache.*` (the result cache: a record's input to its outputs, in front of the plugin) and
//! `request_cache.*` (identical HTTP requests answered once) in an `[[operator]]`.
//!
//! A table present is on unless `enabled = false`. Defaults: heap storage with TinyLFU, a day
//! of life for answers, ten minutes for failures (`negative_ttl = 0` turns failures off),
//! 100000 entries; RocksDB storage in `cache/OPERATOR` (`cache/OPERATOR-requests` for the
//! request cache) next to the manifest unless `path` says where. The request cache may also be
//! kept in Redis (`storage = "redis"`, `redis_url`, `redis_prefix`), shared between processes;
//! the result cache may not (it is looked up on the operator thread, synchronously).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use super::values::{Count, DurationValue, SizeValue};
use crate::cache::{CacheOptions, Eviction, Storage};

const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(600);
const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// Which part of a record's input identifies its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultKey {
    /// The whole payload, byte for byte (`"hash(input)"`, the default).
    Payload,
    /// The values at these JSON pointers (RFC 6901), e.g. `["/text", "/lang"]`; a pointer that
    /// finds nothing counts as null.
    Pointers(Vec<String>),
}

/// `cache.*`: the result cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultCacheConfig {
    pub options: CacheOptions,
    pub key: ResultKey,
    /// Entries made by another build of the plugin are served too (its config still counts).
    pub share_across_versions: bool,
}

/// `request_cache.*`: the request cache and coalescing of the outbound stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCacheConfig {
    pub options: CacheOptions,
    /// Header names (lowercase) left out of the key, besides the ones that never matter.
    pub ignore_headers: Vec<String>,
}

/// Either table, as written. Not `Spanned` itself: toml 0.8 cannot read a `Spanned` table
/// written with dotted keys (`cache.ttl = "1d"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    enabled: Option<Spanned<bool>>,
    ttl: Option<Spanned<DurationValue>>,
    negative_ttl: Option<Spanned<DurationValue>>,
    max_entries: Option<Spanned<Count>>,
    max_bytes: Option<Spanned<SizeValue>>,
    storage: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    eviction: Option<Spanned<String>>,
    key: Option<Spanned<KeyValue>>,
    share_across_versions: Option<Spanned<bool>>,
    ignore_headers: Option<Vec<Spanned<String>>>,
    redis_url: Option<Spanned<String>>,
    redis_prefix: Option<Spanned<String>>,
}

/// Which table is read: only the request cache may be kept in Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Result,
    Request,
}

/// Keys under `redis_prefix` unless it says otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "waio:request-cache:";

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyValue {
    One(String),
    Pointers(Vec<String>),
}

/// `cache.*` of operator `name`; `None` without the table or with `enabled = false`.
pub(super) fn result_cache(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    name: &str,
    raw: Option<RawCache>,
) -> Result<Option<ResultCacheConfig>, ManifestError> {
    let Some(raw) = raw else { return Ok(None) };
    let key = |k: &str| field(&format!("cache.{k}"));
    if let Some(first) = raw.ignore_headers.as_ref().and_then(|h| h.first()) {
        return Err(ctx.invalid(
            first.span(),
            key("ignore_headers"),
            "applies only to request_cache (the result cache's key is the record's input)",
        ));
    }
    let Some(options) = options(ctx, &key, &raw, Table::Result, format!("cache/{name}"))? else {
        return Ok(None);
    };
    let result_key = match &raw.key {
        None => ResultKey::Payload,
        Some(k) => ctx.check(k, &key("key"), |k| match k {
            KeyValue::One(text) if text == "hash(input)" => Ok(ResultKey::Payload),
            KeyValue::One(text) if text.starts_with('/') => {
                Ok(ResultKey::Pointers(vec![text.clone()]))
            }
            KeyValue::One(text) => Err(format!(
                "unknown key {text:?}; expected \"hash(input)\" (the whole payload) or a list of JSON pointers such as [\"/text\", \"/lang\"]"
            )),
            KeyValue::Pointers(list) if list.is_empty() => {
                Err("the list of JSON pointers must not be empty".into())
            }
            KeyValue::Pointers(list) => match list.iter().find(|p| !p.is_empty() && !p.starts_with('/')) {
                Some(bad) => Err(format!(
                    "{bad:?} is not a JSON pointer: each starts with '/', e.g. \"/text\""
                )),
                None => Ok(ResultKey::Pointers(list.clone())),
            },
        })?,
    };
    Ok(Some(ResultCacheConfig {
        options,
        key: result_key,
        share_across_versions: raw
            .share_across_versions
            .as_ref()
            .is_some_and(|s| *s.get_ref()),
    }))
}

/// `request_cache.*` of operator `name`.
pub(super) fn request_cache(
    ctx: &Ctx<'_>,
    field: &dyn Fn(&str) -> String,
    name: &str,
    raw: Option<RawCache>,
) -> Result<Option<RequestCacheConfig>, ManifestError> {
    let Some(raw) = raw else { return Ok(None) };
    let key = |k: &str| field(&format!("request_cache.{k}"));
    let only_results = [
        ("key", raw.key.as_ref().map(Spanned::span)),
        (
            "share_across_versions",
            raw.share_across_versions.as_ref().map(Spanned::span),
        ),
    ];
    if let Some((name, Some(span))) = only_results.into_iter().find(|(_, s)| s.is_some()) {
        return Err(ctx.invalid(
            span,
            key(name),
            "applies only to cache (the result cache); a request's key is its method, URL, headers and body",
        ));
    }
    let default_path = format!("cache/{name}-requests");
    let Some(options) = options(ctx, &key, &raw, Table::Request, default_path)? else {
        return Ok(None);
    };
    let mut ignore_headers = Vec::new();
    for (i, header) in raw.ignore_headers.iter().flatten().enumerate() {
        let text = header.get_ref().trim().to_ascii_lowercase();
        if text.is_empty() || reqwest::header::HeaderName::from_bytes(text.as_bytes()).is_err() {
            return Err(ctx.invalid(
                header.span(),
                format!("{}[{i}]", key("ignore_headers")),
                format!("{:?} is not a header name", header.get_ref()),
            ));
        }
        ignore_headers.push(text);
    }
    Ok(Some(RequestCacheConfig {
        options,
        ignore_headers,
    }))
}

/// The storage options both tables share; `None` when `enabled = false`.
fn options(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawCache,
    table: Table,
    default_path: String,
) -> Result<Option<CacheOptions>, ManifestError> {
    if raw.enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
        return Ok(None);
    }
    let ttl = ctx.setting(&raw.ttl, &key("ttl"), DEFAULT_TTL, DurationValue::positive)?;
    let negative_ttl = ctx.setting(
        &raw.negative_ttl,
        &key("negative_ttl"),
        DEFAULT_NEGATIVE_TTL,
        DurationValue::duration,
    )?;
    let max_entries = ctx.setting(
        &raw.max_entries,
        &key("max_entries"),
        DEFAULT_MAX_ENTRIES,
        |n| n.at_least_one(""),
    )?;
    let storage = storage(ctx, key, raw, table, default_path)?;
    let max_bytes = match &raw.max_bytes {
        None => None,
        Some(b) => Some(ctx.check(b, &key("max_bytes"), SizeValue::bytes)?),
    };
    Ok(Some(CacheOptions {
        storage,
        ttl,
        negative_ttl,
        max_entries,
        max_bytes,
    }))
}

#[derive(Clone, Copy)]
enum Kind {
    Heap,
    RocksDb,
    Redis,
}

/// `storage` and the keys that belong to one storage only.
fn storage(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawCache,
    table: Table,
    default_path: String,
) -> Result<Storage, ManifestError> {
    let kind = match &raw.storage {
        None => Kind::Heap,
        Some(s) => ctx.choose(
            s,
            &key("storage"),
            &[
                ("heap", Kind::Heap),
                ("rocksdb", Kind::RocksDb),
                ("redis", Kind::Redis),
            ],
        )?,
    };
    if !matches!(kind, Kind::Redis) {
        let only = "storage = \"redis\" (in request_cache)";
        ctx.reject_for_kind(&raw.redis_url, &key("redis_url"), only)?;
        ctx.reject_for_kind(&raw.redis_prefix, &key("redis_prefix"), only)?;
    }
    match kind {
        Kind::Redis => redis(ctx, key, raw, table),
        Kind::RocksDb => {
            if let Some(e) = &raw.eviction {
                return Err(ctx.invalid(
                    e.span(),
                    key("eviction"),
                    "applies only to storage = \"heap\"; RocksDB storage gives up the entries that expire first",
                ));
            }
            let path = match &raw.path {
                Some(p) => ctx.path_value(p, &key("path"))?,
                None => ctx.base_dir.join(default_path),
            };
            Ok(Storage::RocksDb { path })
        }
        Kind::Heap => {
            if let Some((name, span)) = [
                ("path", span(&raw.path)),
                ("max_bytes", span(&raw.max_bytes)),
            ]
            .into_iter()
            .find_map(|(n, s)| Some((n, s?)))
            {
                return Err(ctx.invalid(
                    span,
                    key(name),
                    "applies only to storage = \"rocksdb\"; heap storage is bounded by max_entries",
                ));
            }
            let eviction = match &raw.eviction {
                None => Eviction::TinyLfu,
                Some(e) => ctx.choose(
                    e,
                    &key("eviction"),
                    &[("tiny_lfu", Eviction::TinyLfu), ("lru", Eviction::Lru)],
                )?,
            };
            Ok(Storage::Heap { eviction })
        }
    }
}

/// `storage = "redis"`: a request cache shared by the processes that use the same server and
/// prefix.
fn redis(
    ctx: &Ctx<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawCache,
    table: Table,
) -> Result<Storage, ManifestError> {
    let storage_span = span(&raw.storage).unwrap_or_default();
    if table == Table::Result {
        return Err(ctx.invalid(
            storage_span,
            key("storage"),
            "\"redis\" is only for request_cache: the result cache is looked up on the operator \
             thread, synchronously, where a network round trip would hold up every record; use \
             \"heap\" or \"rocksdb\" here, or request_cache.storage = \"redis\" to share answers \
             between processes",
        ));
    }
    if let Some((name, span)) = [
        ("path", span(&raw.path)),
        ("max_entries", span(&raw.max_entries)),
        ("max_bytes", span(&raw.max_bytes)),
        ("eviction", span(&raw.eviction)),
    ]
    .into_iter()
    .find_map(|(n, s)| Some((n, s?)))
    {
        return Err(ctx.invalid(
            span,
            key(name),
            "does not apply to storage = \"redis\": Redis keeps each entry for its ttl (bound \
             its memory with Redis's own maxmemory)",
        ));
    }
    let Some(url) = &raw.redis_url else {
        return Err(ctx.invalid(
            storage_span,
            key("redis_url"),
            "missing; storage = \"redis\" needs e.g. redis_url = \"redis://127.0.0.1:6379\"",
        ));
    };
    let url = ctx.check(url, &key("redis_url"), |u| super::rate_limit::redis_url(u))?;
    let prefix = match &raw.redis_prefix {
        None => DEFAULT_REDIS_PREFIX.to_owned(),
        Some(p) => ctx.check(p, &key("redis_prefix"), |p| {
            if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "{p:?} is not a key prefix: give a non-empty text without spaces, e.g. \"{DEFAULT_REDIS_PREFIX}\""
                ))
            } else {
                Ok(p.clone())
            }
        })?,
    };
    Ok(Storage::Redis { url, prefix })
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// Every RocksDB cache directory of the pipeline, with the field that names it: two caches
/// in one directory would lock each other out (and mix their entries).
pub(super) fn rocksdb_paths<'a>(
    caches: impl Iterator<Item = (String, &'a CacheOptions)>,
) -> Vec<(String, PathBuf)> {
    caches
        .filter_map(|(field, options)| match &options.storage {
            Storage::RocksDb { path } => Some((field, path.clone())),
            Storage::Heap { .. } | Storage::Redis { .. } => None,
        })
        .collect()
}
