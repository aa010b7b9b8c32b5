//! `[secrets]` and an operator's `secrets`: sources, sizes, hosts, refusals.

use super::*;

#[test]
fn unknown_secret_name() {
    let text = format!(
        "{}\n[secrets.known]\nvalue = \"sk-known-1\"\nhosts = [\"a.example\"]\n",
        with_operator("secrets = [\"known\", \"nope\"]")
    );
    let e = parse_err(&text);
    assert_eq!(invalid(&e), (6, 21, "operator[0].secrets[1]"));
    let message = e.to_string();
    assert!(
        message.contains("\"nope\"") && message.contains("known"),
        "{message}"
    );
}

#[test]
fn unset_env_var_for_secret() {
    let text = format!(
        "{}\n[secrets.openai]\nenv = \"WAIO_TEST_SURELY_UNSET_VARIABLE_4711\"\n",
        with_operator("")
    );
    // Through the public API, i.e. the real environment.
    let e = Manifest::parse(&text, Path::new(FILE)).unwrap_err();
    let (line, column) = pos(&text, "env =", "\"WAIO");
    assert_eq!(column, 7);
    assert_eq!(invalid(&e), (line, column, "secrets.openai.env"));
    let message = e.to_string();
    assert!(
        message.contains("\"openai\"") && message.contains("WAIO_TEST_SURELY_UNSET_VARIABLE_4711"),
        "{message}"
    );
}

#[test]
fn secret_needs_exactly_one_of_env_and_value() {
    let both = format!(
        "{}\n[secrets.s]\nenv = \"A\"\nvalue = \"b\"\n",
        with_operator("")
    );
    let e = parse_err(&both);
    assert_eq!(invalid(&e).2, "secrets.s");
    let neither = format!("{}\n[secrets.s]\n", with_operator(""));
    let e = parse_err(&neither);
    assert_eq!(invalid(&e).2, "secrets.s");
}

#[test]
fn a_secret_shorter_than_8_bytes_is_refused_where_it_is_written() {
    let text = format!(
        "{}\n[secrets.s]\nvalue = \"sk-1234\"\nhosts = [\"a.example\"]\n",
        with_operator("secrets = [\"s\"]")
    );
    let e = parse_err(&text);
    let (line, column) = pos(&text, "value =", "\"sk-1234\"");
    assert_eq!(invalid(&e), (line, column, "secrets.s.value"));
    let message = e.to_string();
    assert!(
        message.contains("7 bytes")
            && message.contains("at least 8 bytes")
            && !message.contains("sk-1234"),
        "{message}"
    );
    // Eight bytes are enough.
    assert!(parse(&text.replace("sk-1234", "sk-12345")).is_ok());

    // The same for a value from the environment, located at `env`.
    let text = format!(
        "{}\n[secrets.s]\nenv = \"SHORT_KEY\"\nhosts = [\"a.example\"]\n",
        with_operator("")
    );
    let env = |_: &str| Ok("abc".to_owned());
    let e = parse_with_env(&text, Path::new(FILE), &env).unwrap_err();
    let (line, column) = pos(&text, "env =", "\"SHORT_KEY\"");
    assert_eq!(invalid(&e), (line, column, "secrets.s.env"));
    let message = e.to_string();
    assert!(
        message.contains("SHORT_KEY") && message.contains("3 bytes"),
        "{message}"
    );
}

#[test]
fn a_secret_must_name_the_hosts_it_may_be_sent_to() {
    let text = format!(
        "{}\n[secrets.s]\nvalue = \"sk-12345678\"\n",
        with_operator("secrets = [\"s\"]")
    );
    let e = parse_err(&text);
    let (line, _) = pos(&text, "[secrets.s]", "[");
    let (at_line, _, field) = invalid(&e);
    assert_eq!((at_line, field), (line, "secrets.s.hosts"));
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("{FILE}:{line}:"))
            && message.contains("hosts = [\"api.openai.com\"]"),
        "{message}"
    );

    let empty = text.replace(
        "value = \"sk-12345678\"\n",
        "value = \"sk-12345678\"\nhosts = []\n",
    );
    let e = parse_err(&empty);
    let (line, column) = pos(&empty, "hosts = []", "[]");
    assert_eq!(invalid(&e), (line, column, "secrets.s.hosts"));

    // Entries follow allowed_hosts' rules and are located one by one.
    let url = text.replace(
        "value = \"sk-12345678\"\n",
        "value = \"sk-12345678\"\nhosts = [\"a.example\", \"https://b.example/v1\"]\n",
    );
    let e = parse_err(&url);
    let (line, column) = pos(&url, "hosts =", "\"https");
    assert_eq!(invalid(&e), (line, column, "secrets.s.hosts[1]"));
}
