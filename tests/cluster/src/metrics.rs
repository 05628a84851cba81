//! Scraping a node's Prometheus endpoint, and reading its memory from /proc.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{err, Result};

/// One scrape: every sample by its full name (labels included, as
/// exposed), and summed by metric name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// `name{labels}` -> value.
    pub samples: BTreeMap<String, f64>,
    /// `name` -> sum over its label sets.
    pub by_name: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parses the Prometheus text format.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut m = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The value follows the last space outside the label braces.
            let (series, value) = match line.rfind('}') {
                Some(close) => (&line[..=close], line[close + 1..].trim()),
                None => match line.split_once(' ') {
                    Some((s, v)) => (s, v.trim()),
                    None => continue,
                },
            };
            let value = value.split_whitespace().next().unwrap_or("");
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series).to_owned();
            m.samples.insert(series.to_owned(), value);
            *m.by_name.entry(name).or_insert(0.0) += value;
        }
        m
    }

    /// A metric summed over its labels, if exposed.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<f64> {
        self.by_name.get(name).copied()
    }

    /// A metric as an integer (0 when absent).
    #[must_use]
    pub fn int(&self, name: &str) -> u64 {
        self.get(name).map_or(0, |v| v.max(0.0) as u64)
    }
}

/// Fetches `http://addr/metrics`, within `timeout`.
///
/// # Errors
/// When the endpoint does not answer with a 200 in time.
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> Result<Metrics> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| err(format!("metrics at {addr}: timed out")))?
        .map_err(|e| err(format!("metrics at {addr}: {e}")))?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err(format!("metrics at {addr}: not HTTP")))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(err(format!(
            "metrics at {addr}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(Metrics::parse(body))
}

/// A process's memory from `/proc/PID/status`: (resident now, peak
/// resident), in KiB.
#[must_use]
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// CPU time (user + system) of a process, in clock ticks, from
/// `/proc/PID/stat`; `None` when the process is gone.
#[must_use]
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second for [`cpu_ticks`] (`getconf CLK_TCK`; 100 on
/// Linux almost everywhere).
#[must_use]
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP pbft_view the view\n# TYPE pbft_view gauge\npbft_view 3\n\
                    pbft_messages_rejected_total{reason=\"bad_signature\"} 2\n\
                    pbft_messages_rejected_total{reason=\"stale, old\"} 5\n\
                    pbft_commit_latency_seconds{quantile=\"0.5\"} 0.0012\n";
        let m = Metrics::parse(text);
        assert_eq!(m.get("pbft_view"), Some(3.0));
        assert_eq!(m.int("pbft_view"), 3);
        assert_eq!(m.get("pbft_messages_rejected_total"), Some(7.0));
        assert_eq!(
            m.samples
                .get("pbft_messages_rejected_total{reason=\"stale, old\"}")
                .copied(),
            Some(5.0)
        );
        assert_eq!(m.get("absent"), None);
        assert_eq!(m.int("absent"), 0);
    }

    #[test]
    fn reads_own_memory_and_cpu() {
        let (rss, peak) = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(rss_kib(u32::MAX).is_none());
    }
}
