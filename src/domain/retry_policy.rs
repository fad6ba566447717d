//! Zaqar's `_retry_policy`: its keys, defaults and validation, and the retry schedule it
//! describes. Pure arithmetic; the delivery engine turns each delay into a JetStream NAK delay.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Invalid;

/// Step between two values of a backoff list, in seconds (Zaqar's `t`).
const BACKOFF_STEP_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffFunction {
    Linear,
    Arithmetic,
    Geometric,
    Exponential,
}

/// A validated retry policy. Delays are in whole seconds, as in Zaqar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    pub retries_with_no_delay: u64,
    pub minimum_delay_retries: u64,
    pub minimum_delay: u64,
    pub maximum_delay: u64,
    pub maximum_delay_retries: u64,
    pub retry_backoff_function: BackoffFunction,
    pub ignore_subscription_override: bool,
    /// *Herald*: each delay is spread uniformly over ±`jitter` of itself.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries_with_no_delay: 3,
            minimum_delay_retries: 3,
            minimum_delay: 5,
            maximum_delay: 30,
            maximum_delay_retries: 3,
            retry_backoff_function: BackoffFunction::Linear,
            ignore_subscription_override: false,
            jitter: 0.0,
        }
    }
}

/// Upper bound of any single count or delay, to keep `max_deliver` and NAK delays sane.
const MAX_COUNT: u64 = 1000;
const MAX_DELAY_SECS: u64 = 86_400;

impl RetryPolicy {
    /// Parses a `_retry_policy` JSON value; absent keys take Zaqar's defaults.
    pub fn parse(value: &Value) -> Result<Self, Invalid> {
        let obj = value
            .as_object()
            .ok_or_else(|| Invalid::new("_retry_policy must be a JSON object."))?;
        let mut p = RetryPolicy::default();
        let count = |key: &str, limit: u64, slot: &mut u64| -> Result<(), Invalid> {
            if let Some(v) = obj.get(key) {
                match v.as_u64() {
                    Some(n) if n <= limit => *slot = n,
                    _ => {
                        return Err(Invalid(format!(
                            "_retry_policy.{key} must be an integer between 0 and {limit}."
                        )))
                    }
                }
            }
            Ok(())
        };
        count(
            "retries_with_no_delay",
            MAX_COUNT,
            &mut p.retries_with_no_delay,
        )?;
        count(
            "minimum_delay_retries",
            MAX_COUNT,
            &mut p.minimum_delay_retries,
        )?;
        count(
            "maximum_delay_retries",
            MAX_COUNT,
            &mut p.maximum_delay_retries,
        )?;
        count("minimum_delay", MAX_DELAY_SECS, &mut p.minimum_delay)?;
        count("maximum_delay", MAX_DELAY_SECS, &mut p.maximum_delay)?;
        if p.maximum_delay < p.minimum_delay {
            return Err(Invalid::new(
                "_retry_policy.maximum_delay must not be less than minimum_delay.",
            ));
        }
        if let Some(v) = obj.get("retry_backoff_function") {
            p.retry_backoff_function = match v.as_str() {
                Some("linear") => BackoffFunction::Linear,
                Some("arithmetic") => BackoffFunction::Arithmetic,
                Some("geometric") => BackoffFunction::Geometric,
                Some("exponential") => BackoffFunction::Exponential,
                _ => {
                    return Err(Invalid::new(
                        "_retry_policy.retry_backoff_function must be one of linear, arithmetic, geometric, exponential.",
                    ))
                }
            };
        }
        if let Some(v) = obj.get("ignore_subscription_override") {
            p.ignore_subscription_override = v.as_bool().ok_or_else(|| {
                Invalid::new("_retry_policy.ignore_subscription_override must be a boolean.")
            })?;
        }
        if let Some(v) = obj.get("jitter") {
            p.jitter = v
                .as_f64()
                .filter(|j| (0.0..=1.0).contains(j))
                .ok_or_else(|| {
                    Invalid::new("_retry_policy.jitter must be a number between 0 and 1.")
                })?;
        }
        Ok(p)
    }

    /// The policy as a JSON object with every key, for documents shown to users.
    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The backoff list in seconds (Zaqar's formulas; *Herald* exponential is true doubling).
    pub fn backoff_list(&self) -> Vec<u64> {
        let (m, big_m, t) = (self.minimum_delay, self.maximum_delay, BACKOFF_STEP_SECS);
        let x = (big_m - m) / t;
        match self.retry_backoff_function {
            BackoffFunction::Linear => (m..big_m).step_by(t as usize).collect(),
            BackoffFunction::Geometric => {
                if x <= 1 {
                    return (0..x).map(|_| m).collect();
                }
                let k = 10f64.powf((big_m as f64 / m.max(1) as f64).log10() / (x - 1) as f64);
                (1..=x)
                    .map(|a| (m as f64 * k.powi(a as i32 - 1) + 1e-9) as u64)
                    .collect()
            }
            BackoffFunction::Arithmetic => {
                if x <= 1 {
                    return (0..x).map(|_| m).collect();
                }
                let d = 2.0 * (big_m - m) as f64 / (x * (x - 1)) as f64;
                (1..=x)
                    .map(|a| (m as f64 + ((a - 1) * a) as f64 * d / 2.0 + 1e-9) as u64)
                    .collect()
            }
            BackoffFunction::Exponential => {
                if big_m == 0 {
                    return Vec::new();
                }
                let mut out = Vec::new();
                let mut d = m.max(1);
                loop {
                    if d >= big_m {
                        out.push(big_m);
                        return out;
                    }
                    out.push(d);
                    d = d.saturating_mul(2);
                }
            }
        }
    }

    /// Total number of retries after the first attempt.
    pub fn total_retries(&self) -> u64 {
        self.retries_with_no_delay
            + self.minimum_delay_retries
            + self.backoff_list().len() as u64
            + self.maximum_delay_retries
    }

    /// Total attempts, first included: JetStream's `max_deliver`.
    pub fn max_attempts(&self) -> u64 {
        1 + self.total_retries()
    }

    /// The whole schedule: the delay before retry 1, 2, ... (without jitter).
    pub fn schedule(&self) -> Vec<Duration> {
        let secs = std::iter::repeat_n(0, self.retries_with_no_delay as usize)
            .chain(std::iter::repeat_n(
                self.minimum_delay,
                self.minimum_delay_retries as usize,
            ))
            .chain(self.backoff_list())
            .chain(std::iter::repeat_n(
                self.maximum_delay,
                self.maximum_delay_retries as usize,
            ));
        secs.map(Duration::from_secs).collect()
    }

    /// Delay before retry number `retry` (1-based), or `None` when retries are exhausted.
    /// `unit` is one "second" of the policy (shorter in tests), `rand01` a uniform sample.
    pub fn delay_before_retry(&self, retry: u64, unit: Duration, rand01: f64) -> Option<Duration> {
        self.delay_in(&self.schedule(), retry, unit, rand01)
    }

    /// [`Self::delay_before_retry`] with the schedule computed once by the caller (a long
    /// backoff list is thousands of entries: not something to rebuild per failed attempt).
    pub fn delay_in(
        &self,
        schedule: &[Duration],
        retry: u64,
        unit: Duration,
        rand01: f64,
    ) -> Option<Duration> {
        let base = *schedule.get(retry.checked_sub(1)? as usize)?;
        let base = unit.mul_f64(base.as_secs_f64());
        if self.jitter == 0.0 || base.is_zero() {
            return Some(base);
        }
        let factor = 1.0 + self.jitter * (2.0 * rand01 - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_fn(f: &str) -> RetryPolicy {
        RetryPolicy::parse(&json!({ "retry_backoff_function": f })).unwrap()
    }

    #[test]
    fn backoff_lists_match_the_documented_vectors() {
        assert_eq!(with_fn("linear").backoff_list(), vec![5, 10, 15, 20, 25]);
        assert_eq!(with_fn("geometric").backoff_list(), vec![5, 7, 12, 19, 30]);
        assert_eq!(with_fn("arithmetic").backoff_list(), vec![5, 7, 12, 20, 30]);
        assert_eq!(with_fn("exponential").backoff_list(), vec![5, 10, 20, 30]);
    }

    #[test]
    fn default_policy_retries_fourteen_times_in_four_phases() {
        let p = RetryPolicy::default();
        assert_eq!(p.total_retries(), 14);
        assert_eq!(p.max_attempts(), 15);
        let secs: Vec<u64> = p.schedule().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![0, 0, 0, 5, 5, 5, 5, 10, 15, 20, 25, 30, 30, 30]);
    }

    #[test]
    fn retries_stop_when_the_schedule_runs_out() {
        let p = RetryPolicy::default();
        let unit = Duration::from_secs(1);
        assert_eq!(p.delay_before_retry(0, unit, 0.5), None);
        assert_eq!(p.delay_before_retry(1, unit, 0.5), Some(Duration::ZERO));
        assert_eq!(
            p.delay_before_retry(14, unit, 0.5),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p.delay_before_retry(15, unit, 0.5), None);
    }

    #[test]
    fn jitter_spreads_delays_within_bounds() {
        let p = RetryPolicy::parse(&json!({ "jitter": 0.5 })).unwrap();
        let unit = Duration::from_secs(1);
        assert_eq!(
            p.delay_before_retry(4, unit, 0.0),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            p.delay_before_retry(4, unit, 1.0),
            Some(Duration::from_millis(7500))
        );
        assert_eq!(p.delay_before_retry(1, unit, 1.0), Some(Duration::ZERO));
    }

    #[test]
    fn invalid_policies_are_refused_with_the_field_named() {
        for (bad, field) in [
            (json!({"minimum_delay": -1}), "minimum_delay"),
            (json!({"minimum_delay": 1.5}), "minimum_delay"),
            (
                json!({"retries_with_no_delay": "3"}),
                "retries_with_no_delay",
            ),
            (
                json!({"minimum_delay": 40, "maximum_delay": 30}),
                "maximum_delay",
            ),
            (
                json!({"retry_backoff_function": "cubic"}),
                "retry_backoff_function",
            ),
            (json!({"jitter": 2}), "jitter"),
            (
                json!({"ignore_subscription_override": 1}),
                "ignore_subscription_override",
            ),
            (json!([1]), "_retry_policy"),
        ] {
            let err = RetryPolicy::parse(&bad).unwrap_err();
            assert!(err.0.contains(field), "{err} does not name {field}");
        }
    }

    #[test]
    fn degenerate_ranges_do_not_panic() {
        for f in ["linear", "geometric", "arithmetic", "exponential"] {
            for (m, big) in [(0, 0), (5, 5), (0, 7), (3, 9), (0, 30)] {
                let p = RetryPolicy::parse(
                    &json!({"retry_backoff_function": f, "minimum_delay": m, "maximum_delay": big}),
                )
                .unwrap();
                assert!(p.backoff_list().iter().all(|d| *d <= big));
            }
        }
    }
}
