//! A valid component of another world (`waio-test:other/other`, exporting `run`), so tests can
//! check that the waio host rejects it with a clear error instead of failing later.

wit_bindgen::generate!({
    inline: r#"
        package waio-test:other;

        world other {
            export run: func() -> u32;
        }
    "#,
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
