//! Plugin projects and the compile cache: `waio plugin new` scaffolds a project that builds,
//! `waio plugin build` and `waio run --build` build it, and a compiled component is loaded from the
//! cache on the next start.

use waio_tests::*;

#[test]
fn the_compile_cache_is_used_on_the_next_start_and_survives_a_corrupt_entry() {
    let p = Pipeline::new();
    p.input(&["{\"id\":1}".to_string()]);
    p.manifest(&one_operator(&plugin("behave"), "", "", ""));
    let cache = p.path("cache");
    let env = [("WAIO_CACHE_DIR", cache.to_str().unwrap())];
    let check = || run_waio_env(p.dir.path(), &["check", "pipeline.toml"], &env);

    let (code, stdout, stderr) = check();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("compiled and cached"), "{stdout}");
    let (_, stdout, _) = check();
    assert!(stdout.contains("loaded from the compile cache"), "{stdout}");

    // A damaged entry is compiled again and replaced, with a warning, not an error.
    let entries: Vec<_> = std::fs::read_dir(cache.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::write(&entries[0], b"not a compiled component").unwrap();
    let (code, stdout, stderr) = check();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bad cache entry replaced"), "{stdout}");
    let (_, stdout, _) = check();
    assert!(stdout.contains("loaded from the compile cache"), "{stdout}");

    // And the run itself works from the cached code.
    let (code, _, stderr) = run_waio_env(p.dir.path(), &["run", "pipeline.toml"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_jsonl(&p.path("out.jsonl")).len(), 1);
}

/// Scaffolds a project in `lang`, builds it with `waio run --build`, and checks the output.
fn scaffold_build_and_run(lang: &str) {
    let p = Pipeline::new();
    let name = format!("hello-{lang}");
    let (code, stdout, stderr) = run_waio(p.dir.path(), &["plugin", "new", &name, "--lang", lang]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let project = p.path(&name);
    assert!(project.join("waio-plugin.toml").exists());
    // Tests run in parallel: give this project's mock provider a free port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pipeline = std::fs::read_to_string(project.join("pipeline.toml")).unwrap();
    std::fs::write(
        project.join("pipeline.toml"),
        pipeline.replace("18090", &port.to_string()),
    )
    .unwrap();

    let (code, stdout, stderr) = run_waio(&project, &["run", "--build", "pipeline.toml"]);
    assert_eq!(code, 0, "{lang}: {stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lang}: {stdout}");
    assert_eq!(
        lines[0]["lookup"]["value"], "value-of-a1",
        "{lang}: {stdout}"
    );

    // `waio plugin build` alone builds it again.
    let (code, stdout, stderr) = run_waio(&project, &["plugin", "build"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("built"), "{stdout}");
}

#[test]
fn plugin_new_rust_builds_and_runs() {
    scaffold_build_and_run("rust");
}

#[test]
fn plugin_new_rejects_bad_names_and_languages() {
    let p = Pipeline::new();
    let (code, _, stderr) = run_waio(p.dir.path(), &["plugin", "new", "Bad_Name"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid plugin name"), "{stderr}");
    let (code, _, stderr) = run_waio(p.dir.path(), &["plugin", "new", "ok", "--lang", "cobol"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown language"), "{stderr}");
}

#[test]
fn a_broken_plugin_project_file_names_the_line() {
    let p = Pipeline::new();
    std::fs::write(
        p.path("waio-plugin.toml"),
        "name = \"x\"\nlanguage = \"rust\"\nbuild = 3\noutput = \"x.wasm\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_waio(p.dir.path(), &["plugin", "build"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("waio-plugin.toml:3:"), "{stderr}");
    std::fs::write(
        p.path("waio-plugin.toml"),
        "name = \"x\"\nlanguage = \"rust\"\nbuild = \"exit 3\"\noutput = \"x.wasm\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run_waio(p.dir.path(), &["plugin", "build"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("build of x failed"), "{stderr}");
}

#[test]
fn plugin_new_js_builds_and_runs() {
    scaffold_build_and_run("js");
}

#[test]
fn plugin_new_c_builds_and_runs() {
    scaffold_build_and_run("c");
}

#[test]
fn plugin_new_python_builds_and_runs() {
    scaffold_build_and_run("python");
}
