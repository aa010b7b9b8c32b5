//! Cost accounting and the budget guard, end to end: the `openai` plugin against the mock
//! provider (which reports token usage), run by the `waio` binary so that exit codes, stderr
//! and `--summary-json` are what a user sees. The guard's time logic (rolling hour, pause
//! until) is unit-tested with a fake clock in `host/src/cost/budget.rs`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use waio_tests::*;

/// Every record has the same text, so every request uses the same tokens and costs the same.
const TEXT: &str = "refund my invoice";
const RECORDS: usize = 40;

/// One `openai` operator per `(name, model)` (chat, capacity 1 so that one request at a time
/// is in flight), with `extra` (pricing, budget, checkpoint) at the end.
fn manifest(mock: &MockServer, operators: &[(&str, &str)], extra: &str) -> String {
    let mut toml = String::from(
        "name = \"budget\"\n[source]\nkind = \"file\"\npath = \"input.jsonl\"\n\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n\n[dead_letter]\npath = \"dead.jsonl\"\n\n[secrets.openai]\nvalue = \"sk-mock-0001\"\nhosts = [\"127.0.0.1\"]\n",
    );
    for (name, model) in operators {
        toml.push_str(&format!(
            "\n[[operator]]\nname = \"{name}\"\nplugin = \"{plugin}\"\ncapacity = 1\nallowed_hosts = [\"127.0.0.1\"]\nsecrets = [\"openai\"]\n[operator.config]\nbase_url = \"{url}/v1\"\nmode = \"chat\"\nmodel = \"{model}\"\napi_key_secret = \"openai\"\nsystem_prompt = \"Labels: billing, bug\"\n",
            plugin = plugin("openai").display(),
            url = mock.url(),
        ));
    }
    toml.push('\n');
    toml.push_str(extra);
    toml
}

fn pipeline(records: usize) -> Pipeline {
    let p = Pipeline::new();
    let lines: Vec<String> = (1..=records)
        .map(|id| json!({"id": id, "text": TEXT}).to_string())
        .collect();
    p.input(&lines);
    p
}

/// `waio run` on the manifest in `dir` (off the async runtime, which serves the mock): exit
/// code, stderr and the summary JSON.
async fn run(dir: &Path, extra_args: &[&str]) -> (i32, String, Value) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["run", "pipeline.toml", "--summary-json", "summary.json"];
        all.extend(args.iter().map(String::as_str));
        let (code, _, stderr) = run_waio(&dir, &all);
        let summary = std::fs::read_to_string(dir.join("summary.json"))
            .map(|text| serde_json::from_str(&text).expect("summary JSON"))
            .unwrap_or(Value::Null);
        (code, stderr, summary)
    })
    .await
    .expect("waio ran")
}

const PRICES: &str =
    "[pricing.\"mock-small\"]\ninput_per_million = 1000\noutput_per_million = 2000\n";

/// What `tokens` cost at `PRICES`, computed by hand: $0.001 an input token, $0.002 an output one.
fn hand_cost(input_tokens: u64, output_tokens: u64) -> f64 {
    input_tokens as f64 * 0.001 + output_tokens as f64 * 0.002
}

fn f64_of(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Two operators, one on a priced model and one on a model with no price: tokens and cost per
/// model in the summary and its JSON, matching a hand computation; the unpriced model is
/// warned about once (not once per request) and its cost is unknown (null), never 0, and so is
/// every total that includes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_prices_tokens_per_model_and_an_unpriced_model_is_unknown() {
    let mock = mock().await;
    let p = pipeline(20);
    p.manifest(&manifest(
        &mock,
        &[("triage", "mock-small"), ("answer", "mock-unpriced")],
        PRICES,
    ));
    let (code, stderr, summary) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_jsonl(&p.path("out.jsonl")).len(), 20);

    let priced = &summary["operators"][0];
    let (input, output) = (
        priced["input_tokens"].as_u64().unwrap(),
        priced["output_tokens"].as_u64().unwrap(),
    );
    assert!(input >= 20 && output >= 20, "{priced}");
    let model = &priced["models"][0];
    assert_eq!(model["model"], "mock-small");
    assert_eq!(
        (
            model["input_tokens"].as_u64(),
            model["output_tokens"].as_u64()
        ),
        (Some(input), Some(output))
    );
    let expected = hand_cost(input, output);
    assert!(
        close(f64_of(&model["cost_usd"]), expected),
        "{model} vs {expected}"
    );
    assert!(close(f64_of(&priced["cost_usd"]), expected), "{priced}");
    assert_eq!(priced["unpriced_tokens"], 0);

    let unpriced = &summary["operators"][1];
    let model = &unpriced["models"][0];
    assert_eq!(model["model"], "mock-unpriced");
    assert!(model["input_tokens"].as_u64().unwrap() > 0, "{model}");
    assert_eq!(model["cost_usd"], Value::Null, "never costed at 0");
    assert_eq!(unpriced["cost_usd"], Value::Null);
    let unpriced_tokens =
        model["input_tokens"].as_u64().unwrap() + model["output_tokens"].as_u64().unwrap();
    assert_eq!(unpriced["unpriced_tokens"].as_u64(), Some(unpriced_tokens));

    // The run: its total is unknown, the spend the budget would count is the priced part.
    assert_eq!(summary["cost_usd"], Value::Null);
    assert_eq!(summary["unpriced_tokens"].as_u64(), Some(unpriced_tokens));
    assert!(
        close(f64_of(&summary["budget_spent_usd"]), expected),
        "{summary}"
    );

    let warnings = stderr.matches("has no price in [pricing]").count();
    assert_eq!(warnings, 1, "warned once for 20 requests:\n{stderr}");
    assert!(
        stderr.contains("model \"mock-unpriced\" has no price in [pricing]"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "    model mock-small: tokens {input} in / {output} out, cost ${expected:.6}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("    model mock-unpriced: tokens")
            && stderr.contains("cost unknown (no price in [pricing])"),
        "{stderr}"
    );
}

/// The cost of one request of this file's records, from a run without a budget.
async fn one_request_cost(mock: &MockServer) -> f64 {
    let p = pipeline(1);
    p.manifest(&manifest(mock, &[("triage", "mock-small")], PRICES));
    let (code, stderr, summary) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    f64_of(&summary["cost_usd"])
}

/// `max_cost_total` with `action = "stop"`: the run stops at the request that reaches the
/// limit (capacity 1: nothing else in flight), exits 3 naming the limit, the spend and the
/// time; the output is committed and the rest of the input is in the checkpoint. Resumed with
/// the same limit it stops at once, its spend the same total; resumed with a higher limit it
/// finishes, every record once, and its total is the cost of every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_total_stops_with_exit_3_and_a_resume_continues_the_same_total() {
    let mock = mock().await;
    let cost = one_request_cost(&mock).await;
    assert!(cost > 0.0);
    // The limit is reached by the 8th request.
    let limit = cost * 7.5;
    let p = pipeline(RECORDS);
    let budget = |limit: f64| {
        format!("{PRICES}\n[budget]\nmax_cost_total = {limit}\naction = \"stop\"\n\n[checkpoint]\ndir = \"state\"\n")
    };
    p.manifest(&manifest(
        &mock,
        &[("triage", "mock-small")],
        &budget(limit),
    ));
    let calls_before = mock.stats().chat;
    let (code, stderr, summary) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 3, "{stderr}");
    let spent = f64_of(&summary["budget_spent_usd"]);
    assert!(
        spent >= limit && spent < limit + cost,
        "spent {spent}, limit {limit}, one request {cost}"
    );
    assert!(close(spent, 8.0 * cost), "{spent}");
    assert_eq!(
        mock.stats().chat - calls_before,
        8,
        "the provider saw 8 requests"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("budget: max_cost_total ${limit} reached at 20")),
        "{stderr}"
    );
    assert!(last.contains(&format!("(${spent:.6} spent)")), "{last}");
    assert!(
        last.contains("the next run resumes from the final checkpoint"),
        "{last}"
    );
    let output = read_jsonl(&p.path("out.jsonl"));
    assert_eq!(
        ids(&output),
        (1..=8).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert!(read_jsonl(&p.path("dead.jsonl")).is_empty());
    assert_eq!(summary["stopped"], true);

    // Resumed with the same limit: already reached, nothing is invoked.
    let calls_before = mock.stats().chat;
    let (code, stderr, again) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("was already reached when the run started"),
        "{stderr}"
    );
    assert_eq!(mock.stats().chat, calls_before, "no request");
    assert!(close(f64_of(&again["budget_spent_usd"]), spent), "{again}");
    assert_eq!(read_jsonl(&p.path("out.jsonl")).len(), 8);

    // Resumed with room for everything: every record once, in order; the total goes on.
    p.manifest(&manifest(
        &mock,
        &[("triage", "mock-small")],
        &budget(100.0),
    ));
    let (code, stderr, last_run) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let output = read_jsonl(&p.path("out.jsonl"));
    assert_eq!(
        ids(&output),
        (1..=RECORDS).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert!(
        close(f64_of(&last_run["cost_usd"]), (RECORDS - 8) as f64 * cost),
        "{last_run}"
    );
    assert!(
        close(f64_of(&last_run["budget_spent_usd"]), RECORDS as f64 * cost),
        "{last_run}"
    );
}

/// `max_cost_per_hour` with `action = "pause"`: once the hour's spend reaches it, no new
/// record is admitted (the run stays up, the output stops growing); a stop then ends it
/// cleanly, and a resume with room for the rest finishes every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_per_hour_with_pause_holds_new_records_back() {
    let mock = mock().await;
    let cost = one_request_cost(&mock).await;
    let p = pipeline(RECORDS);
    let budget = |per_hour: f64| {
        format!("{PRICES}\n[budget]\nmax_cost_per_hour = {per_hour}\naction = \"pause\"\n\n[checkpoint]\ndir = \"state\"\ninterval = \"100ms\"\n")
    };
    // Reached by the 4th request.
    p.manifest(&manifest(
        &mock,
        &[("triage", "mock-small")],
        &budget(cost * 3.5),
    ));
    let dir = p.path("");
    let mut child = spawn_waio(
        &dir,
        &["run", "pipeline.toml", "--summary-json", "summary.json"],
    );
    let dir_for_wait = dir.clone();
    let (child, stderr_text) = tokio::task::spawn_blocking(move || {
        let stderr =
            || std::fs::read_to_string(dir_for_wait.join("stderr.log")).unwrap_or_default();
        wait_until("the budget pause", Duration::from_secs(30), || {
            stderr().contains("no new record is admitted until")
        });
        wait_until("the output committed", Duration::from_secs(30), || {
            read_jsonl(&dir_for_wait.join("out.jsonl")).len() == 4
        });
        // Paused: the run is up, and nothing more comes out.
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run went on or ended"
        );
        assert_eq!(read_jsonl(&dir_for_wait.join("out.jsonl")).len(), 4);
        signal(&child, "TERM");
        let code = wait_exit(&mut child, Duration::from_secs(30));
        assert_eq!(code, 0, "{}", stderr());
        (child, stderr())
    })
    .await
    .expect("the paused run");
    drop(child);
    assert!(
        stderr_text.contains(&format!("budget: max_cost_per_hour ${}", cost * 3.5)),
        "{stderr_text}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["budget_pauses"], 1, "{summary}");
    assert_eq!(mock.stats().chat, 1 + 4, "one request to price, then four");

    // Resumed with room: every record once, in order.
    p.manifest(&manifest(
        &mock,
        &[("triage", "mock-small")],
        &budget(100.0),
    ));
    let (code, stderr, _) = run(dir.as_path(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let output = read_jsonl(&p.path("out.jsonl"));
    assert_eq!(
        ids(&output),
        (1..=RECORDS).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

/// A budget that cannot work is refused before anything runs, naming the file, line and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pricing_and_budget_keys_name_the_place() {
    let mock = mock().await;
    let p = pipeline(1);
    let toml = manifest(
        &mock,
        &[("triage", "mock-small")],
        "[pricing.\"mock-small\"]\ninput_per_million = -1\noutput_per_million = 2\n",
    );
    let line = toml[..toml.find("input_per_million = -1").unwrap()]
        .lines()
        .count()
        + 1;
    p.manifest(&toml);
    let (code, stderr, _) = run(p.path("").as_path(), &[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("pipeline.toml:{line}:21: pricing.mock-small.input_per_million: must not be negative, got -1")),
        "{stderr}"
    );
}
