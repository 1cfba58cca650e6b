//! Results: figures of contenders x metrics, goals, and their markdown and JSON forms.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Per second.
    Rate,
    /// Microseconds (shown as µs, ms or s).
    Micros,
    Bytes,
    /// A plain number (commands per handoff, clients, ...).
    Count,
}

impl Unit {
    fn json(self) -> &'static str {
        match self {
            Unit::Rate => "per_second",
            Unit::Micros => "microseconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Metric {
    pub title: String,
    pub unit: Unit,
    pub higher_better: bool,
    /// Whether the table shows fencelock's advantage for this metric.
    pub compare: bool,
}

pub fn metric(title: &str, unit: Unit, higher_better: bool) -> Metric {
    Metric { title: title.to_string(), unit, higher_better, compare: true }
}

pub fn info_metric(title: &str, unit: Unit) -> Metric {
    Metric { title: title.to_string(), unit, higher_better: true, compare: false }
}

#[derive(Clone, Debug)]
pub struct Cell {
    /// The median over rounds (or, for latency percentiles, over all samples).
    pub value: f64,
    /// One value per round, in round order.
    pub rounds: Vec<f64>,
    /// Number of samples behind the value, where that is not the rounds.
    pub samples: Option<usize>,
}

impl Cell {
    pub fn median_of(rounds: Vec<f64>) -> Cell {
        Cell { value: crate::util::median(&rounds), rounds, samples: None }
    }
    pub fn single(value: f64) -> Cell {
        Cell { value, rounds: vec![value], samples: None }
    }
    pub fn pooled(value: f64, samples: usize) -> Cell {
        Cell { value, rounds: vec![], samples: Some(samples) }
    }
}

#[derive(Clone, Debug)]
pub struct Figure {
    pub id: String,
    pub title: String,
    pub notes: Vec<String>,
    pub metrics: Vec<Metric>,
    /// (contender, one cell per metric); the first row is fencelock (or, with
    /// `ratio_to_first`, the baseline).
    pub rows: Vec<(String, Vec<Option<Cell>>)>,
    /// The first row is a baseline, not fencelock: the (N×) after a value is that value ÷
    /// the first row's, on every compared metric, instead of fencelock's advantage.
    pub ratio_to_first: bool,
    /// No row leads (none is bold): rows that each say what they are.
    pub plain_rows: bool,
}

impl Figure {
    pub fn new(id: &str, title: &str, metrics: Vec<Metric>) -> Figure {
        Figure {
            id: id.into(),
            title: title.into(),
            notes: vec![],
            metrics,
            rows: vec![],
            ratio_to_first: false,
            plain_rows: false,
        }
    }

    /// A figure whose first row is a baseline: its (N×) are row ÷ first row.
    pub fn versus_baseline(id: &str, title: &str, metrics: Vec<Metric>) -> Figure {
        Figure { ratio_to_first: true, ..Figure::new(id, title, metrics) }
    }

    pub fn row(&mut self, contender: &str, cells: Vec<Option<Cell>>) {
        assert_eq!(cells.len(), self.metrics.len(), "figure {}: row {contender} has the wrong width", self.id);
        self.rows.push((contender.to_string(), cells));
    }

    pub fn value(&self, contender_prefix: &str, metric: usize) -> f64 {
        self.rows
            .iter()
            .find(|(c, _)| c.starts_with(contender_prefix))
            .and_then(|(_, cells)| cells[metric].as_ref())
            .map(|c| c.value)
            .unwrap_or(f64::NAN)
    }

    /// Row `r` ÷ the first row on metric `m`, for a `ratio_to_first` figure.
    pub fn ratio(&self, r: usize, m: usize) -> Option<f64> {
        if !self.ratio_to_first || !self.metrics[m].compare || r == 0 {
            return None;
        }
        let base = self.rows[0].1[m].as_ref()?.value;
        let this = self.rows[r].1[m].as_ref()?.value;
        Some(this / base)
    }

    /// fencelock's advantage over row `r` on metric `m`: > 1 means fencelock is better.
    pub fn advantage(&self, r: usize, m: usize) -> Option<f64> {
        let metric = &self.metrics[m];
        if self.ratio_to_first || !metric.compare || r == 0 {
            return None;
        }
        let fence = self.rows[0].1[m].as_ref()?.value;
        let other = self.rows[r].1[m].as_ref()?.value;
        Some(advantage(metric.higher_better, fence, other))
    }
}

/// fencelock's advantage: fence/other for higher-is-better metrics, other/fence else.
pub fn advantage(higher_better: bool, fence: f64, other: f64) -> f64 {
    let (num, den) = if higher_better { (fence, other) } else { (other, fence) };
    if den == 0.0 {
        if num == 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        num / den
    }
}

#[derive(Clone, Debug)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

pub struct Report {
    pub cores: usize,
    pub redis_version: String,
    pub quick: bool,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub figures: Vec<Figure>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
}

fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() { "n/a".into() } else { "∞".into() };
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn fmt_value(unit: Unit, x: f64) -> String {
    if !x.is_finite() {
        return sig3(x);
    }
    match unit {
        Unit::Rate => {
            if x >= 1e6 {
                format!("{}M/s", sig3(x / 1e6))
            } else if x >= 1e3 {
                format!("{}k/s", sig3(x / 1e3))
            } else {
                format!("{}/s", sig3(x))
            }
        }
        Unit::Micros => {
            if x >= 1e6 {
                format!("{} s", sig3(x / 1e6))
            } else if x >= 1e3 {
                format!("{} ms", sig3(x / 1e3))
            } else {
                format!("{} µs", sig3(x))
            }
        }
        Unit::Bytes => format!("{x:.0} B"),
        Unit::Count if x.fract() == 0.0 && x.abs() < 1e9 => format!("{x:.0}"),
        Unit::Count => sig3(x),
    }
}

pub fn fmt_ratio(x: f64) -> String {
    if x.is_infinite() {
        "∞×".into()
    } else if x.is_nan() {
        "n/a".into()
    } else {
        format!("{}×", sig3(x))
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# fencelock benchmark{}\n", if self.quick { " (BENCH_QUICK=1: tiny sizes, numbers mean nothing)" } else { "" });
        let _ = writeln!(s, "- cores: **{}** (`std::thread::available_parallelism`)", self.cores);
        let _ = writeln!(s, "- redis_version: **{}** (`INFO server`)", self.redis_version);
        let _ = writeln!(s, "- run: {} s in all, started at unix time {}", sig3(self.elapsed_s), self.started_unix);
        let _ = writeln!(
            s,
            "- every contender runs against the same redis-server (module loaded, no persistence) in \
             alternating short rounds (A B C D, B C D A, ...); a cell is the median over rounds unless it says otherwise"
        );
        let _ = writeln!(
            s,
            "- **(N×) = fencelock's advantage over that contender on that column: higher is better for fencelock, \
             1× is a tie, below 1× fencelock loses.** For rates it is fencelock ÷ contender; for latencies, \
             costs and sizes it is contender ÷ fencelock."
        );
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s, "\n## Goals\n");
        let _ = writeln!(s, "| goal | measured | result |");
        let _ = writeln!(s, "|---|---|---|");
        for g in &self.goals {
            let _ = writeln!(s, "| {} | {} | {} |", g.goal, g.measured, if g.met { "met" } else { "**not met**" });
        }
        for f in &self.figures {
            let _ = writeln!(s, "\n## {}. {}\n", f.id, f.title);
            if f.ratio_to_first {
                let _ = writeln!(
                    s,
                    "_(N×) in this figure = that value ÷ the first row's (the baseline), not fencelock's advantage._\n"
                );
            }
            let _ = write!(s, "| contender |");
            for m in &f.metrics {
                let arrow = if !m.compare { "" } else if m.higher_better { " ↑" } else { " ↓" };
                let _ = write!(s, " {}{} |", m.title, arrow);
            }
            let _ = write!(s, "\n|---|");
            for _ in &f.metrics {
                let _ = write!(s, "---:|");
            }
            s.push('\n');
            for (r, (name, cells)) in f.rows.iter().enumerate() {
                if r == 0 && !f.plain_rows {
                    let _ = write!(s, "| **{name}** |");
                } else {
                    let _ = write!(s, "| {name} |");
                }
                for (m, cell) in cells.iter().enumerate() {
                    match cell {
                        None => {
                            let _ = write!(s, " – |");
                        }
                        Some(c) => {
                            let mut text = fmt_value(f.metrics[m].unit, c.value);
                            if r == 0 && f.metrics[m].compare && !f.plain_rows {
                                text = format!("**{text}**");
                            }
                            if let Some(a) = f.advantage(r, m).or_else(|| f.ratio(r, m)) {
                                text = format!("{text} ({})", fmt_ratio(a));
                            }
                            let _ = write!(s, " {text} |");
                        }
                    }
                }
                s.push('\n');
            }
            if !f.notes.is_empty() {
                s.push('\n');
                for n in &f.notes {
                    let _ = writeln!(s, "- {n}");
                }
            }
        }
        s
    }

    pub fn json(&self) -> String {
        let mut s = String::new();
        s.push_str("{\n");
        let _ = writeln!(s, "  \"cores\": {},", self.cores);
        let _ = writeln!(s, "  \"redis_version\": {},", js(&self.redis_version));
        let _ = writeln!(s, "  \"quick\": {},", self.quick);
        let _ = writeln!(s, "  \"started_unix\": {},", self.started_unix);
        let _ = writeln!(s, "  \"elapsed_seconds\": {},", num(self.elapsed_s));
        let _ = writeln!(
            s,
            "  \"advantage_definition\": {},",
            js("fencelock's advantage over the contender: fencelock/contender for rates, contender/fencelock for latencies, costs and sizes; > 1 means fencelock is better")
        );
        let _ = writeln!(s, "  \"notes\": [{}],", self.notes.iter().map(|n| js(n)).collect::<Vec<_>>().join(", "));
        s.push_str("  \"goals\": [\n");
        for (i, g) in self.goals.iter().enumerate() {
            let _ = write!(s, "    {{\"goal\": {}, \"measured\": {}, \"met\": {}}}", js(&g.goal), js(&g.measured), g.met);
            s.push_str(if i + 1 < self.goals.len() { ",\n" } else { "\n" });
        }
        s.push_str("  ],\n  \"figures\": [\n");
        for (fi, f) in self.figures.iter().enumerate() {
            s.push_str("    {\n");
            let _ = writeln!(s, "      \"id\": {},", js(&f.id));
            let _ = writeln!(s, "      \"title\": {},", js(&f.title));
            let _ = writeln!(s, "      \"notes\": [{}],", f.notes.iter().map(|n| js(n)).collect::<Vec<_>>().join(", "));
            s.push_str("      \"metrics\": [\n");
            for (mi, m) in f.metrics.iter().enumerate() {
                let _ = write!(
                    s,
                    "        {{\"title\": {}, \"unit\": {}, \"higher_is_better\": {}, \"compared\": {}}}",
                    js(&m.title),
                    js(m.unit.json()),
                    m.higher_better,
                    m.compare
                );
                s.push_str(if mi + 1 < f.metrics.len() { ",\n" } else { "\n" });
            }
            s.push_str("      ],\n      \"results\": [\n");
            let mut entries = vec![];
            for (r, (name, cells)) in f.rows.iter().enumerate() {
                for (m, cell) in cells.iter().enumerate() {
                    let Some(c) = cell else { continue };
                    let adv = f.advantage(r, m);
                    let ratio = match f.ratio(r, m) {
                        Some(x) => format!(", \"ratio_to_first\": {}", if x.is_infinite() { "\"inf\"".to_string() } else { num(x) }),
                        None if f.ratio_to_first => ", \"ratio_to_first\": null".to_string(),
                        None => String::new(),
                    };
                    entries.push(format!(
                        "        {{\"contender\": {}, \"metric\": {}, \"value\": {}, \"rounds\": [{}], \"samples\": {}, \"fencelock_advantage\": {}{ratio}}}",
                        js(name),
                        js(&f.metrics[m].title),
                        num(c.value),
                        c.rounds.iter().map(|x| num(*x)).collect::<Vec<_>>().join(", "),
                        c.samples.map_or("null".to_string(), |n| n.to_string()),
                        adv.map_or("null".to_string(), |a| if a.is_infinite() { "\"inf\"".to_string() } else { num(a) }),
                    ));
                }
            }
            s.push_str(&entries.join(",\n"));
            s.push_str("\n      ]\n    }");
            s.push_str(if fi + 1 < self.figures.len() { ",\n" } else { "\n" });
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        let r = (x * 1000.0).round() / 1000.0;
        format!("{r}")
    } else {
        "null".into()
    }
}

fn js(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
