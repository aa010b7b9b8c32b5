//! `waio-componentize CORE.wasm -o OUT.wasm`: wraps a core module built for wasm32-wasi
//! (preview 1, `-mexec-model=reactor`) into a component, the way
//! `wasm-tools component new --adapt wasi_snapshot_preview1=...` does.
//!
//! The core module must carry its component type in a custom section (the
//! `*_component_type.o` that `wit-bindgen c` generates, linked in). WASI preview 1 imports are
//! satisfied by the wasmtime 48 *reactor* adapter, which this binary embeds, so no adapter file
//! has to be downloaded or kept next to the build.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

const USAGE: &str = "usage: waio-componentize CORE.wasm -o OUT.wasm";

struct Args {
    input: PathBuf,
    output: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut input = None;
    let mut output = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-o") | Some("--output") => {
                output = Some(PathBuf::from(args.next().context("-o needs a file name")?));
            }
            Some("-h") | Some("--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if input.is_none() => input = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    match (input, output) {
        (Some(input), Some(output)) => Ok(Args { input, output }),
        _ => bail!("{USAGE}"),
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let core = std::fs::read(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&core)
        .with_context(|| {
            format!(
                "{} is not a core module with an embedded component type \
                 (link the *_component_type.o from wit-bindgen)",
                args.input.display()
            )
        })?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("cannot load the wasi_snapshot_preview1 reactor adapter")?
        .encode()
        .with_context(|| format!("cannot make a component of {}", args.input.display()))?;
    std::fs::write(&args.output, component)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("waio-componentize: {err:#}");
            ExitCode::FAILURE
        }
    }
}
