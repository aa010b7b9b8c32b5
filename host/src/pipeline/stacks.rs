//! Each operator's outbound request stack, made from its manifest section: at the start, and
//! again by a hot reload that changes an operator's request-level settings. The factory keeps
//! what stacks share (one HTTP client per HTTP version, the named rate limits) and each
//! operator's own limit and request cache, so that a reload which leaves them as they were
//! keeps their state.

use std::collections::HashMap;
use std::sync::Arc;

use super::PipelineError;
use crate::manifest::{HostRule, HttpVersion, OperatorConfig, RequestCacheConfig};
use crate::manifest::{RateLimitBackend, RateLimitConfig};
use crate::outbound::rate_limit::{Allowance, LocalAllowance, RedisAllowance};
use crate::outbound::{
    HostPattern, Outbound, OutboundStats, Policy, Protocol, RateLimit, RequestCache, Resilience,
    SecretGrant, Transport,
};

/// Makes outbound stacks; lives as long as the run (the reloader keeps it).
pub struct OutboundFactory {
    clients: HashMap<HttpVersion, reqwest::Client>,
    /// The pipeline's name: an operator's own limit is kept (in Redis) as "PIPELINE/OPERATOR",
    /// so that unrelated pipelines with an operator of the same name do not share it.
    pipeline: String,
    /// Named limits (`[rate_limits.NAME]`), shared by every operator that uses one.
    shared: HashMap<String, Arc<RateLimit>>,
    /// Per operator: its own limit and its request cache, with the settings they were made from.
    own_limits: HashMap<String, (RateLimitConfig, Arc<RateLimit>)>,
    request_caches: HashMap<String, (RequestCacheConfig, Arc<RequestCache>)>,
}

impl OutboundFactory {
    pub fn new(pipeline: &str) -> Self {
        OutboundFactory {
            clients: HashMap::new(),
            pipeline: pipeline.to_string(),
            shared: HashMap::new(),
            own_limits: HashMap::new(),
            request_caches: HashMap::new(),
        }
    }

    /// The stack of the operator `config` describes. `stats`: the counters to go on with
    /// (a reload's), else new ones.
    pub fn stack(
        &mut self,
        config: &OperatorConfig,
        stats: Option<Arc<OutboundStats>>,
    ) -> Result<Arc<Outbound>, PipelineError> {
        let client = self.client(config.http_version)?;
        let pattern = |rule: &HostRule| HostPattern::new(rule.host.clone(), rule.port);
        let grants = config
            .secrets
            .iter()
            .map(|s| SecretGrant {
                name: s.name.clone(),
                value: s.value.clone(),
                hosts: s.hosts.iter().map(pattern).collect(),
            })
            .collect();
        let allowed = config.allowed_hosts.iter().map(pattern).collect();
        let policy = Policy::new(allowed, grants, config.http_timeout);
        let request_cache = self.request_cache(config)?;
        let resilience = Resilience {
            retry: config.retry.clone(),
            breaker: config.circuit_breaker.clone(),
            rate_limit: self.rate_limit(config)?,
            // `rate_limit.adaptive`, on unless turned off.
            adaptive: config
                .rate_limit
                .as_ref()
                .is_none_or(|limit| limit.adaptive),
        };
        Ok(Arc::new(Outbound::compose(
            policy,
            resilience,
            request_cache,
            Transport::new(client),
            stats.unwrap_or_default(),
        )))
    }

    fn client(&mut self, version: HttpVersion) -> Result<reqwest::Client, PipelineError> {
        if let Some(client) = self.clients.get(&version) {
            return Ok(client.clone());
        }
        let client = Transport::client(match version {
            HttpVersion::Http1 => Protocol::Http1,
            HttpVersion::Http2 => Protocol::Http2PriorKnowledge,
        })
        .map_err(|e| PipelineError::Http(e.to_string()))?;
        self.clients.insert(version, client.clone());
        Ok(client)
    }

    /// The operator's request cache: the one it has if its settings are unchanged (a RocksDB
    /// cache cannot be opened twice), else a new one.
    fn request_cache(
        &mut self,
        config: &OperatorConfig,
    ) -> Result<Option<Arc<RequestCache>>, PipelineError> {
        let Some(wanted) = &config.request_cache else {
            self.request_caches.remove(&config.name);
            return Ok(None);
        };
        if let Some((made_from, cache)) = self.request_caches.get(&config.name) {
            if made_from == wanted {
                return Ok(Some(Arc::clone(cache)));
            }
        }
        // The old cache is dropped first: a RocksDB one frees its directory once the requests
        // in flight through the old stack are done.
        let stats = self
            .request_caches
            .remove(&config.name)
            .map(|(_, old)| Arc::clone(old.stats()))
            .unwrap_or_default();
        let cache =
            RequestCache::open(wanted.options.clone(), wanted.ignore_headers.clone(), stats)
                .map_err(|cause| PipelineError::Cache(config.name.clone(), cause))?;
        let cache = Arc::new(cache);
        self.request_caches
            .insert(config.name.clone(), (wanted.clone(), Arc::clone(&cache)));
        Ok(Some(cache))
    }

    /// The operator's limit: its own (kept while its settings are unchanged), or the shared
    /// one it uses; `None` if it limits nothing.
    fn rate_limit(
        &mut self,
        config: &OperatorConfig,
    ) -> Result<Option<Arc<RateLimit>>, PipelineError> {
        let Some(limit) = config.rate_limit.as_ref().filter(|l| l.limits()) else {
            self.own_limits.remove(&config.name);
            return Ok(None);
        };
        let Some(name) = &limit.name else {
            if let Some((made_from, own)) = self.own_limits.get(&config.name) {
                if made_from == limit {
                    return Ok(Some(Arc::clone(own)));
                }
            }
            let own = make_limit(limit, &format!("{}/{}", self.pipeline, config.name))?;
            self.own_limits
                .insert(config.name.clone(), (limit.clone(), Arc::clone(&own)));
            return Ok(Some(own));
        };
        if let Some(shared) = self.shared.get(name) {
            return Ok(Some(Arc::clone(shared)));
        }
        let made = make_limit(limit, name)?;
        self.shared.insert(name.clone(), Arc::clone(&made));
        Ok(Some(made))
    }
}

/// A limit kept in this process, or in Redis under `name` (every process sharing it names it
/// the same) with this process's share kept locally while Redis is out of reach.
fn make_limit(config: &RateLimitConfig, name: &str) -> Result<Arc<RateLimit>, PipelineError> {
    let allowance: Arc<dyn Allowance> = match &config.backend {
        RateLimitBackend::Local => Arc::new(LocalAllowance::new(&config.options)),
        RateLimitBackend::Redis {
            url,
            fallback_share,
        } => {
            let fallback = Arc::new(LocalAllowance::new(&config.options.share(*fallback_share)));
            let redis =
                RedisAllowance::new(url, name, config.options.clone(), *fallback_share, fallback)
                    .map_err(|e| PipelineError::RateLimit(name.to_string(), e))?;
            Arc::new(redis)
        }
    };
    let tokens = config.options.tokens_per_minute.is_some();
    Ok(Arc::new(
        RateLimit::new(allowance, name.to_string()).counting_tokens(tokens),
    ))
}
