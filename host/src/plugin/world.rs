//! Which version of the plugin contract (`wit/waio.wit`) this host runs, and how to tell a plugin
//! built against another version before type-checking it: 0.1.0 to 0.4.0 run through
//! [`super::compat`]; for any other the linker's error would only name a missing
//! `waio:enricher/...@0.5.0` import, not the reason.

/// The version of the `waio:enricher` package this host runs.
pub const WIT_VERSION: &str = "0.5.0";

/// The world every plugin must implement, as `waio check` prints it.
pub const WORLD: &str = "waio:enricher/enricher-plugin@0.5.0";

/// The package's interfaces are named `waio:enricher/NAME@VERSION` among a component's imports
/// and exports.
const INTERFACE_PREFIX: &str = "waio:enricher/";

/// How to rebuild a plugin against this host's contract, for error messages.
pub const REBUILD_HINT: &str = "rebuild it with this waio's SDK: `waio plugin build DIR` for a project made by `waio plugin new`, else the SDK's build command (README: \"For plugin authors: waio:enricher 0.5.0\")";

/// The `waio:enricher` version a component was built against, when it is not this host's: the
/// version of the first `waio:enricher/...` interface among `names` (imports and exports) that
/// differs from [`WIT_VERSION`] (`"no version"` for a name without one). `None` when every
/// such interface is this host's version, or the component names none (another world entirely,
/// which type-checking reports).
pub fn other_version<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| name.strip_prefix(INTERFACE_PREFIX))
        .map(|interface| interface.split_once('@').map(|(_, version)| version))
        .find(|version| *version != Some(WIT_VERSION))
        .map(|version| version.unwrap_or("no version").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_that_of_the_wit_package() {
        let wit = include_str!("../../../wit/waio.wit");
        let package = format!("package waio:enricher@{WIT_VERSION};");
        assert!(wit.lines().any(|l| l.trim() == package), "{package}");
        assert_eq!(
            WORLD,
            format!("waio:enricher/enricher-plugin@{WIT_VERSION}")
        );
    }

    #[test]
    fn a_plugin_of_the_previous_version_is_told_apart() {
        let old = [
            "wasi:cli/environment@0.2.0",
            "waio:enricher/types@0.1.0",
            "waio:enricher/http@0.1.0",
            "waio:enricher/enricher@0.1.0",
        ];
        assert_eq!(other_version(old), Some("0.1.0".to_string()));
        assert_eq!(
            other_version(["waio:enricher/http"]),
            Some("no version".to_string())
        );
    }

    #[test]
    fn current_plugins_and_other_worlds_pass_to_type_checking() {
        // WASI's own 0.2.0 must not be mistaken for the contract's version.
        let current = [
            "wasi:io/streams@0.2.0",
            "waio:enricher/http@0.5.0",
            "waio:enricher/enricher@0.5.0",
        ];
        assert_eq!(other_version(current), None);
        assert_eq!(other_version(["run", "wasi:cli/stdout@0.2.6"]), None);
    }
}
