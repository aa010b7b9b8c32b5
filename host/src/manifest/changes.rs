//! What a hot reload would change: the running manifest against the file as it is now.
//!
//! As Vector does with its config, only what can change in place is applied: an operator's
//! plugin and `[operator.config]`, its record-level settings (capacity, timeout, policies, batch,
//! record retries) and its request-level ones (retries, breaker, rate limit, allowed hosts,
//! secrets, request cache). Anything else (operators added, removed, renamed or reordered, a
//! different source, sink, dead-letter output, checkpoint, event time, shared limits, prices,
//! budget or admin server, an operator's ordering or result cache) needs a restart, and the
//! reload is refused saying which. Every field is named below, so a new one cannot be
//! forgotten: the destructuring stops compiling.

use super::{Manifest, OperatorConfig};

/// A change that cannot be applied to a running pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} changed: this cannot change while the pipeline runs, a restart is needed")]
pub struct RestartNeeded {
    pub what: String,
}

/// How one operator's section changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorChange {
    /// `plugin`, `[operator.config]`, `instances`, `memory_limit` or `call_time_limit`: new
    /// instances are needed.
    pub version: bool,
    /// Record-level settings, applied by the operator from the next record on.
    pub settings: bool,
    /// Request-level settings: a new outbound stack.
    pub outbound: bool,
}

impl OperatorChange {
    pub fn any(&self) -> bool {
        self.version || self.settings || self.outbound
    }
}

/// Per operator of `running` (same order), how `next` changes it.
pub fn changes(running: &Manifest, next: &Manifest) -> Result<Vec<OperatorChange>, RestartNeeded> {
    let Manifest {
        path: _,
        name,
        source,
        operators,
        sink,
        dead_letter,
        mock_provider,
        checkpoint,
        event_time,
        rate_limits,
        pricing,
        budget,
        admin,
    } = next;
    let restart = |what: &str| Err(RestartNeeded { what: what.into() });
    if *name != running.name {
        return restart("the pipeline's name");
    }
    if *source != running.source {
        return restart("[source]");
    }
    if *sink != running.sink {
        return restart("[sink]");
    }
    if *dead_letter != running.dead_letter {
        return restart("[dead_letter]");
    }
    if *mock_provider != running.mock_provider {
        return restart("[mock_provider]");
    }
    if *checkpoint != running.checkpoint {
        return restart("[checkpoint]");
    }
    if *event_time != running.event_time {
        return restart("[event_time]");
    }
    if *rate_limits != running.rate_limits {
        return restart("[rate_limits]");
    }
    if *pricing != running.pricing {
        return restart("[pricing]");
    }
    if *budget != running.budget {
        return restart("[budget]");
    }
    if *admin != running.admin {
        return restart("[admin]");
    }
    let names = |m: &[OperatorConfig]| m.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    if names(operators) != names(&running.operators) {
        return Err(RestartNeeded {
            what: format!(
                "the chain of operators (was {:?}, now {:?}): adding, removing, renaming or reordering operators",
                names(&running.operators),
                names(operators)
            ),
        });
    }
    running
        .operators
        .iter()
        .zip(operators)
        .map(|(old, new)| operator_change(old, new))
        .collect()
}

fn operator_change(
    old: &OperatorConfig,
    new: &OperatorConfig,
) -> Result<OperatorChange, RestartNeeded> {
    let OperatorConfig {
        index: _,
        name,
        plugin,
        plugin_at: _,
        capacity,
        timeout,
        ordered,
        on_failure,
        on_timeout,
        instances,
        allowed_hosts,
        secrets,
        http_timeout,
        http_version,
        memory_limit,
        call_time_limit,
        max_requests_in_flight,
        retry,
        circuit_breaker,
        rate_limit,
        timeout_grace,
        async_retry,
        batch,
        cache,
        request_cache,
        config_json,
        build: _,
    } = new;
    let restart = |what: &str| RestartNeeded {
        what: format!("operator {name:?}: {what}"),
    };
    if *ordered != old.ordered {
        return Err(restart("ordered"));
    }
    if *cache != old.cache {
        return Err(restart("the result cache (cache.*)"));
    }
    Ok(OperatorChange {
        version: *plugin != old.plugin
            || *config_json != old.config_json
            || *instances != old.instances
            || *memory_limit != old.memory_limit
            || *call_time_limit != old.call_time_limit,
        settings: *capacity != old.capacity
            || *timeout != old.timeout
            || *timeout_grace != old.timeout_grace
            || *on_failure != old.on_failure
            || *on_timeout != old.on_timeout
            || *async_retry != old.async_retry
            || *batch != old.batch
            || *max_requests_in_flight != old.max_requests_in_flight,
        outbound: *allowed_hosts != old.allowed_hosts
            || *secrets != old.secrets
            || *http_timeout != old.http_timeout
            || *http_version != old.http_version
            || *retry != old.retry
            || *circuit_breaker != old.circuit_breaker
            || *rate_limit != old.rate_limit
            || *request_cache != old.request_cache,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Manifest {
        Manifest::parse(text, Path::new("pipeline.toml")).expect("valid manifest")
    }

    fn manifest(operator: &str, sink_path: &str) -> Manifest {
        parse(&format!(
            "name = \"p\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\n\n[[operator]]\nname = \"enrich\"\nplugin = \"p.wasm\"\n{operator}\n\n[sink]\nkind = \"file\"\npath = \"{sink_path}\"\n"
        ))
    }

    #[test]
    fn nothing_changed_is_no_change() {
        let m = manifest("capacity = 5", "out.jsonl");
        assert_eq!(changes(&m, &m.clone()), Ok(vec![OperatorChange::default()]));
    }

    #[test]
    fn each_kind_of_operator_setting_is_classified() {
        let old = manifest(
            "capacity = 5\n[operator.config]\nprompt = \"a\"",
            "out.jsonl",
        );
        let cases = [
            ("capacity = 5\n[operator.config]\nprompt = \"b\"", (true, false, false)),
            ("capacity = 7\n[operator.config]\nprompt = \"a\"", (false, true, false)),
            (
                "capacity = 5\ntimeout = \"3s\"\n[operator.config]\nprompt = \"a\"",
                (false, true, false),
            ),
            (
                "capacity = 5\nbatch.max_size = 8\n[operator.config]\nprompt = \"a\"",
                (false, true, false),
            ),
            (
                "capacity = 5\nmax_retries = 2\n[operator.config]\nprompt = \"a\"",
                (false, false, true),
            ),
            (
                "capacity = 5\nallowed_hosts = [\"api.example.com\"]\n[operator.config]\nprompt = \"a\"",
                (false, false, true),
            ),
        ];
        for (operator, (version, settings, outbound)) in cases {
            let new = manifest(operator, "out.jsonl");
            let change = &changes(&old, &new).expect("applies live")[0];
            assert_eq!(
                (change.version, change.settings, change.outbound),
                (version, settings, outbound),
                "{operator}"
            );
        }
    }

    #[test]
    fn structural_changes_are_refused_naming_what_changed() {
        let old = manifest("", "out.jsonl");
        let other_sink = changes(&old, &manifest("", "elsewhere.jsonl")).unwrap_err();
        assert!(
            other_sink.to_string().contains("[sink] changed"),
            "{other_sink}"
        );
        assert!(other_sink.to_string().contains("restart"), "{other_sink}");
        let ordering = changes(&old, &manifest("ordered = false", "out.jsonl")).unwrap_err();
        assert!(ordering
            .to_string()
            .contains("operator \"enrich\": ordered"));
        let mut added = manifest("", "out.jsonl");
        let mut second = added.operators[0].clone();
        second.name = "second".into();
        added.operators.push(second);
        let chain = changes(&old, &added).unwrap_err();
        assert!(chain.to_string().contains("adding, removing"), "{chain}");
    }
}
