//! `[pricing."MODEL"]` (what a model's tokens cost) and `[budget]` (how much a run may spend,
//! and what happens then). Prices and limits are US dollars; prices per million tokens, as
//! providers publish them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::context::Ctx;
use super::error::ManifestError;
use crate::cost::{BudgetAction, BudgetOptions, Price, PriceTable};

/// The price table (`[pricing]`); empty when the section is absent.
pub type PricingConfig = PriceTable;

/// The budget guard (`[budget]`).
pub type BudgetConfig = BudgetOptions;

/// A model's entry, `[pricing."gpt-4o-mini"]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    input_per_million: Option<Spanned<Dollars>>,
    output_per_million: Option<Spanned<Dollars>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    max_cost_total: Option<Spanned<Dollars>>,
    max_cost_per_hour: Option<Spanned<Dollars>>,
    action: Option<Spanned<String>>,
}

/// An amount of US dollars as written: a number (integers too). Anything else is a type error
/// that names the key.
#[derive(Clone, Copy)]
pub(super) struct Dollars(f64);

impl Dollars {
    /// Zero or more, and a real number (TOML allows `nan` and `inf`).
    fn non_negative(&self) -> Result<f64, String> {
        match self.0 {
            d if !d.is_finite() => Err(format!("must be a finite amount of US dollars, got {d}")),
            d if d < 0.0 => Err(format!("must not be negative, got {d}")),
            d => Ok(d),
        }
    }

    fn positive(&self) -> Result<f64, String> {
        match self.non_negative()? {
            0.0 => Err("must be more than 0 (leave the key out for no limit)".into()),
            d => Ok(d),
        }
    }
}

impl<'de> Deserialize<'de> for Dollars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dollars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of US dollars such as 0.15")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dollars, E> {
                Ok(Dollars(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dollars, E> {
                Ok(Dollars(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dollars, E> {
                Ok(Dollars(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// The price table, every price checked and located.
pub(super) fn resolve_pricing(
    ctx: &Ctx<'_>,
    raw: BTreeMap<Spanned<String>, Spanned<RawPrice>>,
) -> Result<PricingConfig, ManifestError> {
    let mut prices = BTreeMap::new();
    for (model, entry) in raw {
        let field = |key: &str| {
            format!(
                "pricing.{}.{key}",
                super::syntax::key_segment(model.get_ref())
            )
        };
        if model.get_ref().trim().is_empty() {
            return Err(ctx.invalid(model.span(), "pricing", "a model name must not be empty"));
        }
        let span = entry.span();
        let entry = entry.into_inner();
        // Both prices are required: a price left out is never taken as free.
        let price = |value: Option<Spanned<Dollars>>, key: &str, what: &str| match value {
            Some(v) => ctx.check(&v, &field(key), Dollars::non_negative),
            None => Err(ctx.invalid(
                span.clone(),
                field(key),
                format!("missing: US dollars per million {what} tokens (write 0 if they are free)"),
            )),
        };
        let input_per_million = price(entry.input_per_million, "input_per_million", "input")?;
        let output_per_million = price(entry.output_per_million, "output_per_million", "output")?;
        prices.insert(
            model.into_inner(),
            Price {
                input_per_million,
                output_per_million,
            },
        );
    }
    Ok(PriceTable::new(prices))
}

/// The budget; it needs at least one limit, and prices to count against it.
pub(super) fn resolve_budget(
    ctx: &Ctx<'_>,
    raw: Spanned<RawBudget>,
    pricing: &PricingConfig,
) -> Result<BudgetConfig, ManifestError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let limit = |value: &Option<Spanned<Dollars>>, key: &str| {
        ctx.setting(value, &format!("budget.{key}"), None, |d| {
            d.positive().map(Some)
        })
    };
    let max_cost_total = limit(&raw.max_cost_total, "max_cost_total")?;
    let max_cost_per_hour = limit(&raw.max_cost_per_hour, "max_cost_per_hour")?;
    let action = match &raw.action {
        None => BudgetAction::default(),
        Some(action) => ctx.choose(
            action,
            "budget.action",
            &[("pause", BudgetAction::Pause), ("stop", BudgetAction::Stop)],
        )?,
    };
    if max_cost_total.is_none() && max_cost_per_hour.is_none() {
        return Err(ctx.invalid(
            span,
            "budget",
            "sets no limit; add max_cost_total and/or max_cost_per_hour (US dollars)",
        ));
    }
    if pricing.is_empty() {
        return Err(ctx.invalid(
            span,
            "budget",
            "cannot count any spend without prices; add a [pricing.\"MODEL\"] table with input_per_million and output_per_million for each model the plugins call",
        ));
    }
    Ok(BudgetOptions {
        max_cost_total,
        max_cost_per_hour,
        action,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Manifest, ManifestError};
    use crate::cost::{BudgetAction, Price};

    const FILE: &str = "/pipelines/demo/pipeline.toml";

    fn with(extra: &str) -> String {
        format!("[source]\nkind = \"stdin\"\n\n[[operator]]\nplugin = \"p.wasm\"\n\n[sink]\nkind = \"stdout\"\n\n{extra}")
    }

    fn parse(extra: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(&with(extra), Path::new(FILE))
    }

    /// (line, field, message) of the error, which must name the file.
    fn error(extra: &str) -> (usize, String) {
        let text = with(extra);
        let e = Manifest::parse(&text, Path::new(FILE)).expect_err("an error");
        let printed = e.to_string();
        assert!(printed.starts_with(FILE), "{printed}");
        match e {
            ManifestError::Invalid { at, field, message } => {
                (at.line, format!("{field}: {message}"))
            }
            ManifestError::Syntax { at, message } => (at.line, message),
            other => panic!("{other:?}"),
        }
    }

    /// The line of `needle` in the manifest made with `extra`.
    fn line_of(extra: &str, needle: &str) -> usize {
        let text = with(extra);
        text[..text.find(needle).expect("needle")].lines().count() + 1
    }

    #[test]
    fn prices_and_a_budget_are_read() {
        let m = parse(
            "[pricing.\"gpt-4o-mini\"]\ninput_per_million = 0.15\noutput_per_million = 0.60\n\n[pricing.embed]\ninput_per_million = 1\noutput_per_million = 0\n\n[budget]\nmax_cost_total = 5.00\nmax_cost_per_hour = 1\naction = \"pause\"\n",
        )
        .unwrap();
        assert_eq!(
            m.pricing.price("gpt-4o-mini"),
            Some(Price {
                input_per_million: 0.15,
                output_per_million: 0.60
            })
        );
        assert_eq!(
            m.pricing.price("embed").map(|p| p.input_per_million),
            Some(1.0)
        );
        let budget = m.budget.unwrap();
        assert_eq!(budget.max_cost_total, Some(5.0));
        assert_eq!(budget.max_cost_per_hour, Some(1.0));
        assert_eq!(budget.action, BudgetAction::Pause);
        let m = parse("").unwrap();
        assert!(m.pricing.is_empty() && m.budget.is_none());
    }

    #[test]
    fn the_action_defaults_to_stop() {
        let m = parse("[pricing.m]\ninput_per_million = 1\noutput_per_million = 1\n[budget]\nmax_cost_total = 2\n").unwrap();
        assert_eq!(m.budget.unwrap().action, BudgetAction::Stop);
    }

    #[test]
    fn bad_prices_name_the_line_and_the_key() {
        let extra = "[pricing.\"gpt-4o\"]\ninput_per_million = 2.5\noutput_per_million = -10\n";
        let (line, message) = error(extra);
        assert_eq!(line, line_of(extra, "output_per_million"));
        assert_eq!(
            message,
            "pricing.gpt-4o.output_per_million: must not be negative, got -10"
        );

        let extra =
            "[pricing.\"openai/gpt 4\"]\ninput_per_million = \"0.15\"\noutput_per_million = 1\n";
        let (line, message) = error(extra);
        assert_eq!(line, line_of(extra, "input_per_million"));
        assert!(
            message.starts_with("pricing.\"openai/gpt 4\".input_per_million: "),
            "{message}"
        );
        assert!(message.contains("a number of US dollars"), "{message}");

        let extra = "[pricing.m]\ninput_per_million = 1\noutput_per_milion = 1\n";
        let (line, message) = error(extra);
        assert_eq!(line, line_of(extra, "output_per_milion"));
        assert!(
            message.contains("unknown field `output_per_milion`"),
            "{message}"
        );

        let extra = "[pricing.m]\ninput_per_million = 1\n";
        let (_, message) = error(extra);
        assert!(
            message.starts_with("pricing.m.output_per_million: missing"),
            "{message}"
        );

        let (_, message) = error("[pricing.m]\ninput_per_million = nan\noutput_per_million = 1\n");
        assert!(message.contains("must be a finite amount"), "{message}");
    }

    #[test]
    fn bad_budgets_name_the_line_and_the_key() {
        let prices = "[pricing.m]\ninput_per_million = 1\noutput_per_million = 1\n";
        let extra = format!("{prices}[budget]\nmax_cost_total = -5\n");
        let (line, message) = error(&extra);
        assert_eq!(line, line_of(&extra, "max_cost_total"));
        assert_eq!(
            message,
            "budget.max_cost_total: must not be negative, got -5"
        );

        let extra = format!("{prices}[budget]\nmax_cost_per_hour = \"1 USD\"\n");
        let (line, message) = error(&extra);
        assert_eq!(line, line_of(&extra, "max_cost_per_hour"));
        assert!(
            message.starts_with("budget.max_cost_per_hour: "),
            "{message}"
        );

        let extra = format!("{prices}[budget]\nmax_cost_total = 1\naction = \"wait\"\n");
        let (line, message) = error(&extra);
        assert_eq!(line, line_of(&extra, "action"));
        assert!(
            message.contains("unknown value \"wait\"; expected one of \"pause\", \"stop\""),
            "{message}"
        );

        let extra = format!("{prices}[budget]\nmax_total = 1\n");
        let (_, message) = error(&extra);
        assert!(message.contains("unknown field `max_total`"), "{message}");

        let (_, message) = error(&format!("{prices}[budget]\naction = \"stop\"\n"));
        assert!(message.starts_with("budget: sets no limit"), "{message}");

        let (_, message) = error(&format!("{prices}[budget]\nmax_cost_total = 0\n"));
        assert!(message.contains("must be more than 0"), "{message}");

        let (_, message) = error("[budget]\nmax_cost_total = 1\n");
        assert!(
            message.starts_with("budget: cannot count any spend without prices"),
            "{message}"
        );
    }
}
