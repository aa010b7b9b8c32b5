//! Live token and cost counters per model, one set per operator: the operator adds to them
//! when its plugin reports usage; the run summary (and later a metrics endpoint) reads them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// What one model has used so far in one operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelUsage {
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars; `None` (`null` in JSON): the model has no price, its cost is unknown.
    pub cost_usd: Option<f64>,
}

impl ModelUsage {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// The usage of each model an operator's plugin reported. A lock, not atomics: reports come
/// once per model call, not per record byte, and a model's figures change together.
#[derive(Debug, Default)]
pub struct UsageByModel(Mutex<BTreeMap<String, ModelUsage>>);

impl UsageByModel {
    /// Adds one report; `cost` is `None` for a model without a price.
    pub fn add(&self, model: &str, input_tokens: u64, output_tokens: u64, cost: Option<f64>) {
        let mut models = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = models
            .entry(model.to_string())
            .or_insert_with(|| ModelUsage {
                model: model.to_string(),
                cost_usd: Some(0.0),
                ..ModelUsage::default()
            });
        entry.input_tokens = entry.input_tokens.saturating_add(input_tokens);
        entry.output_tokens = entry.output_tokens.saturating_add(output_tokens);
        entry.cost_usd = entry.cost_usd.zip(cost).map(|(sum, c)| sum + c);
    }

    /// Every model's usage so far, in name order.
    pub fn read(&self) -> Vec<ModelUsage> {
        let models = self.0.lock().unwrap_or_else(|p| p.into_inner());
        models.values().cloned().collect()
    }
}

/// The cost of several models' usage: `None` when any of them has no price (the total is
/// unknown, not the sum of the priced part).
pub fn total_cost<'a>(usage: impl IntoIterator<Item = &'a ModelUsage>) -> Option<f64> {
    usage
        .into_iter()
        .try_fold(0.0, |sum, m| m.cost_usd.map(|c| sum + c))
}

/// Tokens of the models without a price.
pub fn unpriced_tokens<'a>(usage: impl IntoIterator<Item = &'a ModelUsage>) -> u64 {
    usage
        .into_iter()
        .filter(|m| m.cost_usd.is_none())
        .map(ModelUsage::tokens)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_per_model_and_an_unpriced_model_stays_unknown() {
        let usage = UsageByModel::default();
        usage.add("small", 100, 10, Some(0.5));
        usage.add("small", 50, 5, Some(0.25));
        usage.add("mystery", 7, 3, None);
        let read = usage.read();
        assert_eq!(
            read,
            [
                ModelUsage {
                    model: "mystery".into(),
                    input_tokens: 7,
                    output_tokens: 3,
                    cost_usd: None
                },
                ModelUsage {
                    model: "small".into(),
                    input_tokens: 150,
                    output_tokens: 15,
                    cost_usd: Some(0.75)
                },
            ]
        );
        assert_eq!(total_cost(&read), None, "never the priced part alone");
        assert_eq!(total_cost(&read[1..]), Some(0.75));
        assert_eq!(total_cost(&[]), Some(0.0));
        assert_eq!(unpriced_tokens(&read), 10);
    }
}
