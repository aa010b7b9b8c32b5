//! What tokens cost: the price table of the manifest (`[pricing."MODEL"]`), in US dollars per
//! million tokens, as providers publish them.

use std::collections::BTreeMap;

/// One model's prices, US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    /// The cost of one report's tokens, in US dollars.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_million
            + output_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// The prices of the models a pipeline uses, by the model name its plugins report. A model
/// missing from it has no price: its tokens are counted, its cost is unknown (never 0).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    pub fn new(prices: BTreeMap<String, Price>) -> Self {
        PriceTable { prices }
    }

    /// The model's price; `None`: not in the table.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The models priced, in name order.
    pub fn models(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.prices.iter().map(|(m, p)| (m.as_str(), p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cost_is_tokens_times_the_price_per_million() {
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.60,
        };
        // 2000 input tokens at $0.15/M and 500 output tokens at $0.60/M.
        let cost = price.cost(2000, 500);
        assert!((cost - (0.0003 + 0.0003)).abs() < 1e-15, "{cost}");
        assert_eq!(price.cost(0, 0), 0.0);
    }

    #[test]
    fn a_model_not_in_the_table_has_no_price() {
        let table = PriceTable::new(BTreeMap::from([(
            "gpt-4o-mini".to_string(),
            Price::default(),
        )]));
        assert_eq!(table.price("gpt-4o-mini"), Some(Price::default()));
        assert_eq!(table.price("gpt-4o"), None);
        assert!(PriceTable::default().is_empty());
    }
}
