//! One row per figure: the figure, the ceiling it is compared with, the
//! ratio, the target, what webhookd cost, and what the whole stack spent
//! per delivery (`µs/dlv`: webhookd + Redis + RabbitMQ CPU ÷ deliveries). Printed as a table or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::webhookd::Usage;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub name: String,
    pub value: f64,
}

impl Ceiling {
    pub fn new(name: &str, value: f64) -> Ceiling {
        Ceiling {
            name: name.to_owned(),
            value,
        }
    }
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The ratio to the ceiling is at least this.
    RatioAtLeast(f64),
    /// The figure itself is at most this.
    AtMost(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub figure: f64,
    pub unit: String,
    pub ceiling: Option<Ceiling>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
    pub peak_rss_mb: Option<f64>,
    pub cpu_seconds: Option<f64>,
    /// CPU of the whole stack (webhookd, Redis, RabbitMQ) per delivery, µs.
    pub stack_cpu_us: Option<f64>,
    pub note: Option<String>,
}

impl Row {
    pub fn rate(scenario: &str, figure: f64, unit: &str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            figure,
            unit: unit.to_owned(),
            ceiling: None,
            ratio: None,
            target: None,
            met: None,
            peak_rss_mb: None,
            cpu_seconds: None,
            stack_cpu_us: None,
            note: None,
        }
    }

    #[must_use]
    pub fn with_ceiling(mut self, ceiling: Ceiling) -> Row {
        self.ratio = Some(self.figure / ceiling.value.max(f64::MIN_POSITIVE));
        self.ceiling = Some(ceiling);
        self.judge()
    }

    #[must_use]
    pub fn with_target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self.judge()
    }

    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Row {
        self.peak_rss_mb = Some(usage.peak_rss_mb);
        self.cpu_seconds = Some(usage.cpu_seconds);
        self
    }

    /// The whole stack's CPU seconds spread over `deliveries`.
    #[must_use]
    pub fn with_stack_cpu(mut self, seconds: f64, deliveries: usize) -> Row {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let per = seconds * 1e6 / deliveries.max(1) as f64;
        self.stack_cpu_us = Some(per);
        self
    }

    #[must_use]
    pub fn with_note(mut self, note: String) -> Row {
        self.note = Some(note);
        self
    }

    fn judge(mut self) -> Row {
        self.met = match self.target {
            Some(Target::RatioAtLeast(least)) => self.ratio.map(|ratio| ratio >= least),
            Some(Target::AtMost(most)) => Some(self.figure <= most),
            None => None,
        };
        self
    }
}

/// The rows as a fixed-width table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<52} {:>14} {:<13} {:>28} {:>6} {:>9} {:>4} {:>8} {:>7} {:>9}\n",
        "scenario",
        "figure",
        "unit",
        "ceiling",
        "ratio",
        "target",
        "met",
        "RSS MB",
        "CPU s",
        "µs/dlv"
    );
    for row in rows {
        let ceiling = row
            .ceiling
            .as_ref()
            .map_or_else(|| "-".to_owned(), |c| format!("{} {:.0}", c.name, c.value));
        let target = match row.target {
            Some(Target::RatioAtLeast(least)) => format!(">= {least}x"),
            Some(Target::AtMost(most)) => format!("<= {most}"),
            None => "-".to_owned(),
        };
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<52} {:>14.1} {:<13} {:>28} {:>6} {:>9} {:>4} {:>8} {:>7} {:>9}",
            row.scenario,
            row.figure,
            row.unit,
            ceiling,
            row.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            target,
            met,
            row.peak_rss_mb
                .map_or_else(|| "-".to_owned(), |m| format!("{m:.0}")),
            row.cpu_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            row.stack_cpu_us
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}")),
        );
        if let Some(note) = &row.note {
            let _ = writeln!(out, "    {note}");
        }
    }
    out
}
