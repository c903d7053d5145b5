//! A tiny parser for the Prometheus text exposition format (0.0.4).

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Named `name`, with every pair of `labels` among its labels.
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Sum of the samples called `name` whose labels include `labels`; `None` if there are none.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

/// The distinct values of label `key` over the samples called `name`, in order of appearance.
pub fn label_values(samples: &[Sample], name: &str, key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some(v) = s.label(key) {
            if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Self> {
        let mut s = Scrape {
            text: text.to_string(),
            ..Default::default()
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                let mut f = c.split_whitespace();
                if f.next() == Some("TYPE") {
                    let (Some(name), Some(ty)) = (f.next(), f.next()) else {
                        bail!("line {}: bad TYPE line {line:?}", i + 1);
                    };
                    s.types.insert(name.to_string(), ty.to_string());
                }
                continue;
            }
            s.samples
                .push(parse_sample(line).with_context(|| format!("line {}: {line:?}", i + 1))?);
        }
        Ok(s)
    }

    /// Samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.matches(name, labels))
    }

    /// The value of the one sample named `name` whose labels include `labels`;
    /// `None` if there is none, an error if several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        let m: Vec<&Sample> = self.matching(name, labels).collect();
        ensure!(
            m.len() <= 1,
            "{} samples match {}: {:?}",
            m.len(),
            selector(name, labels),
            m
        );
        Ok(m.first().map(|s| s.value))
    }

    /// Like [`Scrape::get`] but an absent series counts as 0 (client libraries only
    /// expose a labelled series once it was touched).
    pub fn get_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        Ok(self.get(name, labels)?.unwrap_or(0.0))
    }

    /// Like [`Scrape::get`] but the series must exist.
    pub fn require(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.get(name, labels)?.with_context(|| {
            format!(
                "no sample {} in scrape:\n{}",
                selector(name, labels),
                self.text
            )
        })
    }
}

/// `name{k="v",...}` for messages.
pub fn selector(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("sample without value")?;
    let name = &line[..name_end];
    ensure!(valid_name(name), "bad metric name {name:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let close;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                bail!("unterminated label set");
            };
            if c == '}' {
                close = start;
                break;
            }
            let mut key_end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    key_end = i;
                    break;
                }
                chars.next();
            }
            let key = r[start..key_end].to_string();
            ensure!(valid_name(&key), "bad label name {key:?}");
            while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                chars.next();
            }
            ensure!(
                chars.next().map(|x| x.1) == Some('='),
                "expected '=' after {key}"
            );
            while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                chars.next();
            }
            ensure!(
                chars.next().map(|x| x.1) == Some('"'),
                "expected '\"' after {key}="
            );
            let mut val = String::new();
            loop {
                match chars.next() {
                    None => bail!("unterminated label value for {key}"),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, '\\')) => val.push('\\'),
                        Some((_, '"')) => val.push('"'),
                        other => bail!("bad escape {other:?} in label {key}"),
                    },
                    Some((_, c)) => val.push(c),
                }
            }
            ensure!(
                labels.insert(key.clone(), val).is_none(),
                "duplicate label {key}"
            );
        }
        rest = &r[close + 1..];
    }
    let mut f = rest.split_whitespace();
    let v = f.next().context("sample without value")?;
    let value = match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = f.next() {
        ts.parse::<i64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(f.next().is_none(), "trailing garbage");
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP gatescope_downstream_bytes_total Bytes.
# TYPE gatescope_downstream_bytes_total counter
gatescope_downstream_bytes_total{listener="127.0.0.1:8080",direction="ingress"} 1234
gatescope_downstream_bytes_total{direction="egress",listener="127.0.0.1:8080"} 5.678e3
# TYPE gatescope_target_processes gauge
gatescope_target_processes 3
weird{a="x\"y\\z\nw", b = "",} NaN 1700000000000
inf_metric +Inf
"#;

    #[test]
    fn parses_samples_labels_and_types() {
        let s = Scrape::parse(TEXT).unwrap();
        assert_eq!(s.samples.len(), 5);
        assert_eq!(
            s.types
                .get("gatescope_downstream_bytes_total")
                .map(String::as_str),
            Some("counter")
        );
        let l = "127.0.0.1:8080";
        let ing = [("listener", l), ("direction", "ingress")];
        let eg = [("direction", "egress"), ("listener", l)];
        assert_eq!(
            s.get("gatescope_downstream_bytes_total", &ing).unwrap(),
            Some(1234.0)
        );
        assert_eq!(
            s.get("gatescope_downstream_bytes_total", &eg).unwrap(),
            Some(5678.0)
        );
        assert_eq!(s.get("gatescope_target_processes", &[]).unwrap(), Some(3.0));
        assert_eq!(
            s.get("gatescope_target_processes", &[("x", "y")]).unwrap(),
            None
        );
        assert_eq!(s.get_or_zero("absent_total", &[]).unwrap(), 0.0);
        // A label subset that matches two series is ambiguous.
        assert!(s
            .get("gatescope_downstream_bytes_total", &[("listener", l)])
            .is_err());
        let w = s.matching("weird", &[]).next().unwrap();
        assert_eq!(w.labels["a"], "x\"y\\z\nw");
        assert_eq!(w.labels["b"], "");
        assert!(w.value.is_nan());
        assert_eq!(s.require("inf_metric", &[]).unwrap(), f64::INFINITY);
        assert!(s.require("nope", &[]).is_err());
    }

    #[test]
    fn sums_and_lists_label_values() {
        let text = "b{peer=\"127.0.0.1:9\",direction=\"in\\\"x\"} 1.5e3 1700000000\nb{peer=\"127.0.0.1:9\",direction=\"out\",} 2\nc{} +Inf\n";
        let s = Scrape::parse(text).unwrap().samples;
        assert_eq!(sum(&s, "b", &[("direction", "in\"x")]), Some(1500.0));
        assert_eq!(sum(&s, "b", &[("peer", "127.0.0.1:9")]), Some(1502.0));
        assert_eq!(sum(&s, "b", &[("peer", "other")]), None);
        assert_eq!(label_values(&s, "b", "peer"), vec!["127.0.0.1:9"]);
        assert!(sum(&s, "c", &[]).unwrap().is_infinite());
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "m{a=\"1\" 2",
            "m{a=1} 2",
            "m{a=\"1\"}",
            "m 1 2 3",
            "m x",
            "1m 2",
            "m{a=\"1\",a=\"2\"} 3",
        ] {
            assert!(Scrape::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
