//! Figures and the report: a table for people, JSON for machines.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            ..Default::default()
        }
    }

    pub fn vs(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self.ratio = (baseline > 0.0).then(|| self.value / baseline);
        self
    }

    pub fn target(mut self, t: &str) -> Self {
        self.target = Some(t.into());
        self
    }

    pub fn latencies(mut self, l: &Latencies) -> Self {
        self.p50 = Some(l.quantile(0.50));
        self.p99 = Some(l.quantile(0.99));
        self.max = Some(l.max());
        self
    }
}

/// Latency samples in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    pub fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx]
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub date: String,
    pub cores: usize,
    pub herald_version: String,
    pub nats_server_version: String,
    pub sync_interval: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn print_table(&self) {
        println!("# {}", self.command);
        println!(
            "# {} | {} cores | {} | {} | JetStream sync_interval: {}",
            self.date,
            self.cores,
            self.herald_version,
            self.nats_server_version,
            self.sync_interval
        );
        println!(
            "{:<48} {:>12} {:<8} {:>12} {:>7} {:>9} {:>9} {:>9}  target",
            "figure", "value", "unit", "baseline", "ratio", "p50", "p99", "max"
        );
        let opt =
            |v: Option<f64>, prec: usize| v.map_or(String::from("-"), |x| format!("{x:.prec$}"));
        for f in &self.figures {
            println!(
                "{:<48} {:>12.1} {:<8} {:>12} {:>7} {:>9} {:>9} {:>9}  {}",
                f.name,
                f.value,
                f.unit,
                opt(f.baseline, 1),
                opt(f.ratio, 2),
                opt(f.p50, 2),
                opt(f.p99, 2),
                opt(f.max, 2),
                f.target.as_deref().unwrap_or("")
            );
        }
    }
}
