//! Verdicts: one row per scenario, and the reproduction command.

use std::fmt::Write as _;

use crate::scenario::Expect;

/// How a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// A negative control, and a check caught the violation.
    ExpectedViolationCaught,
    /// A negative control, and no check noticed: the harness is blind.
    ViolationNotCaught,
    /// The scenario cannot run on this build (reason).
    Unavailable(String),
    /// The harness itself failed (setup, I/O).
    Error(String),
}

impl Verdict {
    /// Whether the run counts as good.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Pass | Self::ExpectedViolationCaught)
    }

    /// Short text for the table.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::ExpectedViolationCaught => "PASS (expected violation caught)",
            Self::ViolationNotCaught => "FAIL (violation NOT caught)",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Error(_) => "ERROR",
        }
    }

    /// The verdict from what the checks found.
    #[must_use]
    pub fn from_checks(expect: Expect, violations: usize) -> Self {
        match (expect, violations) {
            (Expect::Pass, 0) => Self::Pass,
            (Expect::Pass, _) => Self::Fail,
            (Expect::Violation, 0) => Self::ViolationNotCaught,
            (Expect::Violation, _) => Self::ExpectedViolationCaught,
        }
    }
}

/// What one scenario run produced.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    /// The scenario.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Operations acknowledged.
    pub ok: u64,
    /// Operations that definitely failed.
    pub failed: u64,
    /// Operations with an unknown outcome.
    pub unknown: u64,
    /// Highest view any replica reached (views start at 0).
    pub views: u64,
    /// Seconds from the end of the faults to the first acknowledged
    /// operation invoked after it.
    pub progress_s: Option<f64>,
    /// Highest resident memory of any replica, MiB.
    pub peak_rss_mib: u64,
    /// Final stable checkpoint.
    pub stable_seq: u64,
    /// What the checks found.
    pub violations: Vec<String>,
    /// Things worth knowing that are not violations.
    pub notes: Vec<String>,
    /// What the checks covered (operations checked, writes verified...).
    pub checked: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// The logs (kept when the verdict is not ok).
    pub logs: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The steps, in the scenario language (for `custom` reproductions).
    pub steps: String,
}

impl ScenarioReport {
    /// An empty report for `name`.
    #[must_use]
    pub fn new(name: &str, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            seed,
            ok: 0,
            failed: 0,
            unknown: 0,
            views: 0,
            progress_s: None,
            peak_rss_mib: 0,
            stable_seq: 0,
            violations: Vec::new(),
            notes: Vec::new(),
            checked: Vec::new(),
            verdict: Verdict::Pass,
            logs: String::new(),
            seconds: 0.0,
            steps: String::new(),
        }
    }
}

/// The table header.
#[must_use]
pub fn header() -> String {
    format!(
        "{:<30} {:>12} {:>7} {:>5} {:>5} {:>5} {:>8} {:>7} {:>6} {:>6}  verdict",
        "scenario", "seed", "ok", "fail", "unkn", "views", "progress", "rss MiB", "stable", "secs"
    )
}

/// One verdict row.
#[must_use]
pub fn row(r: &ScenarioReport) -> String {
    let progress = r
        .progress_s
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
    format!(
        "{:<30} {:>12} {:>7} {:>5} {:>5} {:>5} {:>8} {:>7} {:>6} {:>6.0}  {}",
        r.name,
        r.seed,
        r.ok,
        r.failed,
        r.unknown,
        r.views,
        progress,
        r.peak_rss_mib,
        r.stable_seq,
        r.seconds,
        r.verdict.label()
    )
}

/// The command that reproduces a run.
#[must_use]
pub fn reproduce(name: &str, seed: u64, replicas: usize, duration_s: u64) -> String {
    format!(
        "cargo xtask cluster-test --scenario {name} --seed {seed} --replicas {replicas} --duration {duration_s}"
    )
}

/// The whole table with details under failing rows.
#[must_use]
pub fn table(reports: &[ScenarioReport], replicas: usize, duration_s: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header());
    for r in reports {
        let _ = writeln!(out, "{}", row(r));
    }
    for r in reports {
        let show_details = !r.verdict.is_ok() || r.verdict == Verdict::ExpectedViolationCaught;
        if !show_details && r.notes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{} ({}):", r.name, r.verdict.label());
        match &r.verdict {
            Verdict::Unavailable(why) | Verdict::Error(why) => {
                let _ = writeln!(out, "  {why}");
            }
            _ => {}
        }
        let caught = if r.verdict == Verdict::ExpectedViolationCaught {
            "caught"
        } else {
            "violation"
        };
        for (category, items) in by_category(&r.violations) {
            let _ = writeln!(out, "  {caught} by {category} ({} found):", items.len());
            for v in items.iter().take(2) {
                let _ = writeln!(out, "    {}", clip(v, 900).replace('\n', "\n      "));
            }
        }
        for n in &r.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        if !r.verdict.is_ok() {
            if !matches!(r.verdict, Verdict::Unavailable(_)) {
                let mut command = reproduce(&r.name, r.seed, replicas, duration_s);
                if r.name == "custom" {
                    command =
                        command.replace("--scenario custom", &format!("--steps '{}'", r.steps));
                }
                let _ = writeln!(out, "  reproduce: {command}");
            }
            if !r.logs.is_empty() {
                let _ = writeln!(out, "  logs kept in {}", r.logs);
            }
        }
    }
    out
}

/// Violations grouped by their category (the text before the first
/// `": "`), in order of first appearance.
#[must_use]
pub fn by_category(violations: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for v in violations {
        let (category, text) = v.split_once(": ").unwrap_or(("check", v));
        match out.iter_mut().find(|(c, _)| c == category) {
            Some((_, items)) => items.push(text.to_owned()),
            None => out.push((category.to_owned(), vec![text.to_owned()])),
        }
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [...]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_expectations() {
        assert_eq!(Verdict::from_checks(Expect::Pass, 0), Verdict::Pass);
        assert_eq!(Verdict::from_checks(Expect::Pass, 2), Verdict::Fail);
        assert_eq!(
            Verdict::from_checks(Expect::Violation, 1),
            Verdict::ExpectedViolationCaught
        );
        assert_eq!(
            Verdict::from_checks(Expect::Violation, 0),
            Verdict::ViolationNotCaught
        );
        assert!(Verdict::ExpectedViolationCaught.is_ok());
        assert!(!Verdict::ViolationNotCaught.is_ok());
        assert!(!Verdict::Unavailable("x".into()).is_ok());
    }

    #[test]
    fn rows_and_table() {
        let mut r = ScenarioReport::new("kill-primary", 42);
        r.ok = 1234;
        r.unknown = 3;
        r.views = 1;
        r.progress_s = Some(2.54);
        r.peak_rss_mib = 80;
        let line = row(&r);
        assert!(line.starts_with("kill-primary"), "{line}");
        assert!(line.contains(" 1234 "), "{line}");
        assert!(line.contains("2.5s"), "{line}");
        assert!(line.ends_with("PASS"), "{line}");
        assert_eq!(header().len(), line.len() - "PASS".len() + "verdict".len());

        let mut bad = ScenarioReport::new("garbage", 7);
        bad.verdict = Verdict::Fail;
        bad.violations.push("linearizability: key k/1".into());
        bad.violations.push("lost write: k/2".into());
        bad.violations.push("lost write: k/3".into());
        bad.logs = "/tmp/x".into();
        let t = table(&[r, bad], 4, 5);
        assert!(
            t.contains("violation by linearizability (1 found):\n    key k/1"),
            "{t}"
        );
        assert!(t.contains("violation by lost write (2 found):"), "{t}");
        assert!(t.contains(
            "reproduce: cargo xtask cluster-test --scenario garbage --seed 7 --replicas 4 --duration 5"
        ));
        assert!(t.contains("logs kept in /tmp/x"));
        assert!(!t.contains("kill-primary (PASS)"));
    }
}
